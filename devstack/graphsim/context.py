"""What the endpoint modules share: state, signing key, delivery, addresses, request log.

:class:`GraphSimulator` (``server.py``) builds one :class:`SimContext` and hands it to
every surface (identity, Graph, control, and any further Graph area). The surfaces
import this module, never ``server``, so the package has no import circle: ``server``
depends on the surfaces, the surfaces on the context.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .delivery import Delivery
from .jwt import SigningKey
from .state import SimState, graph_time_precise, utcnow

MAX_REQUEST_LOG = 100_000


class RequestLog:
    """The Graph requests served since the last clear (``GET|DELETE /_sim/requests``).

    One entry per HTTP request: ``method``, ``path`` (percent-decoded, no query), ``url``
    (as sent, with its query), ``status``, ``userId`` (the mailbox addressed; None for
    app-only calls outside a mailbox), ``appId``, ``time``; a ``$batch`` adds
    ``requests``, one such entry per inner request (with its batch ``id``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    @staticmethod
    def entry(method: str, path: str, url: str, status: int, user_id: str | None,
              app_id: str | None) -> dict[str, Any]:
        return {"method": method, "path": path, "url": url, "status": status, "userId": user_id,
                "appId": app_id, "time": graph_time_precise(utcnow())}

    def append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._entries.append(entry)
            if len(self._entries) > MAX_REQUEST_LOG:
                del self._entries[: len(self._entries) - MAX_REQUEST_LOG]

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class SimContext:
    """One simulator's shared parts. ``base_url`` is set when the listener has its port."""

    state: SimState
    key: SigningKey
    delivery: Delivery
    ca_file: str
    base_url: str = ""
    requests: RequestLog = field(default_factory=RequestLog)

    @property
    def graph_url(self) -> str:
        return self.base_url + "/v1.0"
