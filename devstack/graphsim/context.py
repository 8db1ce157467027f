"""What the endpoint modules share: state, signing key, delivery, addresses, request log.

:class:`GraphSimulator` (``server.py``) builds one :class:`SimContext` and hands it to
every surface (identity, Graph, control, and any further Graph area). The surfaces
import this module, never ``server``, so the package has no import circle: ``server``
depends on the surfaces, the surfaces on the context.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .delivery import Delivery
from .jwt import SigningKey
from .state import SimState, graph_time_precise

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
        self._entries: deque[dict[str, Any]] = deque(maxlen=MAX_REQUEST_LOG)  # the oldest go first

    @staticmethod
    def entry(method: str, path: str, url: str, status: int, user_id: str | None,
              app_id: str | None) -> dict[str, Any]:
        # the time is kept as a number and written out when the log is read: serving stays cheap
        return {"method": method, "path": path, "url": url, "status": status, "userId": user_id,
                "appId": app_id, "time": time.time()}

    @staticmethod
    def _public(entry: dict[str, Any]) -> dict[str, Any]:
        out = dict(entry)
        out["time"] = graph_time_precise(dt.datetime.fromtimestamp(entry["time"], dt.UTC))
        if "requests" in entry:
            out["requests"] = [RequestLog._public(inner) for inner in entry["requests"]]
        return out

    def append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self._entries)
        return [self._public(e) for e in entries]

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
