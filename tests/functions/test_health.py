"""GET /api/health reports each dependency, and 503 when one is down."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from shared import bootstrap
from shared.bootstrap import Services
from shared.config import Settings
from tests.support.app import handler, http_request
from tests.unit.test_config import EXAMPLE


class Probe:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def check(self) -> None:
        if self.error is not None:
            raise self.error


@pytest.fixture()
def install() -> Iterator[object]:
    def _install(**probes: Probe) -> None:
        bootstrap.use(Services(Settings.from_env(EXAMPLE), **probes))

    yield _install
    bootstrap.use(None)


def test_all_dependencies_up_gives_200(install) -> None:  # type: ignore[no-untyped-def]
    install(accounts=Probe(), queues=Probe(), secrets=Probe())
    response = handler("health")(http_request("GET", "/api/health"))
    body = json.loads(response.get_body())
    assert response.status_code == 200
    assert body == {"status": "ok", "dependencies": {"tables": "ok", "queues": "ok", "keyvault": "ok"}}


def test_one_dependency_down_gives_503_and_names_it(install) -> None:  # type: ignore[no-untyped-def]
    install(accounts=Probe(), queues=Probe(), secrets=Probe(ConnectionError("vault unreachable")))
    response = handler("health")(http_request("GET", "/api/health"))
    body = json.loads(response.get_body())
    assert response.status_code == 503
    assert body["dependencies"]["tables"] == "ok"
    assert body["dependencies"]["keyvault"].startswith("error: ConnectionError")
