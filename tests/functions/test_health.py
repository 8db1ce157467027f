"""GET /api/health says only ok or degraded; GET /api/health/details says which and why; both cached."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from shared import bootstrap
from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.config import Settings
from tests.fakes import EPOCH
from tests.support.app import app_functions, handler, http_request
from tests.unit.test_config import EXAMPLE


class Probe:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls = 0

    def check(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error


@pytest.fixture()
def clock() -> FixedClock:
    return FixedClock(EPOCH)


@pytest.fixture()
def install(clock: FixedClock) -> Iterator[object]:
    def _install(**probes: Probe) -> None:
        bootstrap.use(Services(Settings.from_env(EXAMPLE), clock=clock, **probes))

    yield _install
    bootstrap.use(None)


def get(name: str) -> tuple[int, dict[str, object]]:
    route = "/api/health" if name == "health" else "/api/health/details"
    response = handler(name)(http_request("GET", route))
    return response.status_code, json.loads(response.get_body())


def test_all_dependencies_up_gives_200_and_ok(install) -> None:  # type: ignore[no-untyped-def]
    install(accounts=Probe(), queues=Probe(), secrets=Probe())
    assert get("health") == (200, {"status": "ok"})
    status, details = get("health_details")
    assert status == 200
    assert details["status"] == "ok"
    assert details["dependencies"] == {"tables": "ok", "queues": "ok", "keyvault": "ok"}


def test_the_details_name_the_clientstate_keys_by_id_never_by_value(install) -> None:  # type: ignore[no-untyped-def]
    from shared.client_state import key_id

    install(accounts=Probe(), queues=Probe(), secrets=Probe())
    _, details = get("health_details")
    current = EXAMPLE["CLIENT_STATE_KEY"]
    assert details["clientStateKeyIds"] == {"current": key_id(current.encode()), "previous": None}
    assert current not in json.dumps(details)


def test_one_dependency_down_gives_503_and_the_anonymous_route_says_nothing_more(install) -> None:  # type: ignore[no-untyped-def]
    install(accounts=Probe(), queues=Probe(), secrets=Probe(ConnectionError("vault kv-1234 unreachable")))
    status, body = get("health")
    assert (status, body) == (503, {"status": "degraded"})
    status, details = get("health_details")
    assert status == 503
    dependencies = details["dependencies"]
    assert isinstance(dependencies, dict) and dependencies["tables"] == "ok"
    assert dependencies["keyvault"].startswith("error: ConnectionError")


def test_the_details_need_a_function_key_and_the_status_does_not() -> None:
    levels = {}
    for name in ("health", "health_details"):
        [trigger] = [b for b in json.loads(app_functions()[name].get_function_json())["bindings"]
                     if b["type"] == "httpTrigger"]
        levels[name] = (trigger["route"], str(trigger["authLevel"]).upper())
    assert levels == {"health": ("health", "ANONYMOUS"), "health_details": ("health/details", "FUNCTION")}


def test_a_flood_of_health_calls_probes_each_dependency_once_per_period(install, clock: FixedClock) -> None:  # type: ignore[no-untyped-def]
    vault = Probe()
    install(accounts=Probe(), queues=Probe(), secrets=vault)
    for _ in range(50):
        get("health")
        get("health_details")
    assert vault.calls == 1
    clock.advance(seconds=4)
    get("health")
    assert vault.calls == 1
    clock.advance(seconds=2)
    get("health")
    assert vault.calls == 2


def test_a_recovered_dependency_shows_after_the_period(install, clock: FixedClock) -> None:  # type: ignore[no-untyped-def]
    vault = Probe(ConnectionError("down"))
    install(accounts=Probe(), queues=Probe(), secrets=vault)
    assert get("health")[0] == 503
    vault.error = None
    assert get("health")[0] == 503  # the cached report
    clock.advance(seconds=6)
    assert get("health") == (200, {"status": "ok"})
