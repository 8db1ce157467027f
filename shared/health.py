"""Dependency health for GET /api/health: each dependency is ``ok`` or the error's text."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthReport:
    dependencies: dict[str, str]

    @property
    def healthy(self) -> bool:
        return all(state == "ok" for state in self.dependencies.values())

    def as_json(self) -> dict[str, Any]:
        return {"status": "ok" if self.healthy else "degraded", "dependencies": self.dependencies}


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
