"""The app as the Functions host sees it: its functions, routes, auth levels, and a light import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.app import app_functions

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("msal", "azure.identity", "azure.keyvault", "azure.data.tables", "azure.storage.queue", "requests")


def _bindings() -> dict[str, list[dict[str, object]]]:
    return {name: [json.loads(f.get_function_json())["bindings"]][0] for name, f in app_functions().items()}


def _http(bindings: list[dict[str, object]]) -> dict[str, object] | None:
    return next((b for b in bindings if b.get("type") == "httpTrigger"), None)


def test_importing_the_app_loads_no_heavy_sdk() -> None:
    # The webhook's cold path: Graph's 10 s validation handshake must never wait for these.
    code = "import sys, function_app; print(','.join(m for m in sys.modules))"
    loaded = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip().split(","))
    assert not [m for m in loaded if m.split(".")[0] == "msal" or any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_function_names_are_unique_and_every_route_states_its_auth_level() -> None:
    assert app_functions()  # indexing raises on a duplicate name
    for name, bindings in _bindings().items():
        trigger = _http(bindings)
        if trigger is not None:
            assert trigger.get("authLevel") in ("ANONYMOUS", "FUNCTION", "ADMIN", 0, 1, 2), name


def test_health_and_the_webhooks_are_anonymous_routes() -> None:
    bindings = _bindings()
    for name, route in (("health", "health"), ("graph_notifications", "notifications"), ("graph_lifecycle", "lifecycle")):
        trigger = _http(bindings[name])
        assert trigger is not None and trigger["route"] == route
        assert str(trigger["authLevel"]).upper() == "ANONYMOUS"
