"""Dependency health for GET /api/health and GET /api/health/details.

Each dependency is ``ok`` or the error's text. The anonymous route tells only the overall
status; the details (which dependency, which error) are for operators with a function key.
A report is kept for ``CACHE_SECONDS`` and probes run one at a time per instance: however
often either route is called, an instance probes at most once per period, so the routes
cannot be used to fan out billed Key Vault operations or load the storage account.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class HealthReport:
    dependencies: dict[str, str]

    @property
    def healthy(self) -> bool:
        return all(state == "ok" for state in self.dependencies.values())

    @property
    def status(self) -> str:
        return "ok" if self.healthy else "degraded"

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "dependencies": self.dependencies}


def _probe(name: str, services: Services) -> str:
    try:
        getattr(services, name).check()
    except Exception as exc:  # noqa: BLE001 - a health probe reports any failure as text
        log.warning("health: %s is down: %s", name, type(exc).__name__)
        return f"error: {type(exc).__name__}: {str(exc)[:200]}"
    return "ok"


def check_dependencies(services: Services) -> HealthReport:
    names = {"tables": "accounts", "queues": "queues", "keyvault": "secrets"}
    # Probed in parallel: a dead dependency's timeout must not add to the others'.
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = {label: pool.submit(_probe, attr, services) for label, attr in names.items()}
        return HealthReport({label: future.result() for label, future in futures.items()})


class HealthCache:
    """The last report, reused for ``seconds``; callers during a probe wait for its result."""

    def __init__(self, seconds: float = CACHE_SECONDS) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._report: HealthReport | None = None
        self._taken_at: dt.datetime | None = None
        self._services: Services | None = None

    def report(self, services: Services) -> HealthReport:
        with self._lock:
            now = services.clock.now()
            fresh = (
                self._services is services
                and self._taken_at is not None
                and abs((now - self._taken_at).total_seconds()) < self.seconds
            )
            if self._report is None or not fresh:
                self._report = check_dependencies(services)
                self._taken_at, self._services = services.clock.now(), services
            return self._report


_cache = HealthCache()


def current_health(services: Services) -> HealthReport:
    """The health report of this instance, at most ``CACHE_SECONDS`` old."""
    return _cache.report(services)


def details_of(services: Services, report: HealthReport) -> dict[str, Any]:
    """What operators see: each dependency, and the ids of the clientState keys in use (a
    hash, not the key: table ``subscriptions`` names the key of each subscription by it,
    which tells how far a rotation has come)."""
    from shared.client_state import key_id

    settings = services.settings
    previous = settings.client_state_previous_key
    return {
        **report.as_json(),
        "clientStateKeyIds": {
            "current": key_id(settings.client_state_key),
            "previous": None if previous is None else key_id(previous),
        },
    }
