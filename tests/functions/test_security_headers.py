"""Every HTTP route sends nosniff, and HSTS when the request came over HTTPS."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Any

import pytest

from shared import bootstrap
from tests.fakes import make_services
from tests.support.app import app_functions, call_endpoint, streams_request


class Outbox:
    def set(self, value: Any) -> None:
        self.value = value


@pytest.fixture(autouse=True)
def services() -> Iterator[Any]:
    installed = make_services(real_tokens=False)
    bootstrap.use(installed)
    yield installed
    bootstrap.use(None)


def http_functions() -> dict[str, tuple[str, str]]:
    """Every HTTP-triggered function: its first method and its route."""
    found = {}
    for name, function in app_functions().items():
        for binding in json.loads(function.get_function_json())["bindings"]:
            if binding["type"] == "httpTrigger":
                found[name] = (str(binding["methods"][0]).upper(), binding["route"])
    return found


def call(name: str, url_base: str, headers: dict[str, str] | None = None) -> Any:
    method, route = http_functions()[name]
    route = route.replace("{account_id}", "nobody.tenant")
    request = streams_request(method, f"{url_base}/api/{route}", headers=headers,
                              route_params={"account_id": "nobody.tenant"})
    user_function = app_functions()[name].get_user_function()
    others = {p: (None if p == "context" else Outbox()) for p in inspect.signature(user_function).parameters
              if p != "req"}
    return call_endpoint(name, request, **others)


def test_the_app_has_the_routes_this_checks() -> None:
    assert {"health", "health_details", "graph_notifications", "accounts_list", "auth_callback"} <= set(
        http_functions()
    )


@pytest.mark.parametrize("name", sorted(http_functions()))
def test_every_response_says_nosniff_and_no_hsts_over_plain_http(name: str) -> None:
    response = call(name, "http://127.0.0.1:7071")
    assert response.headers.get("X-Content-Type-Options") == "nosniff", (name, response.status_code)
    assert "Strict-Transport-Security" not in response.headers


@pytest.mark.parametrize("name", sorted(http_functions()))
def test_every_response_to_an_https_request_sends_hsts(name: str) -> None:
    response = call(name, "https://connector.example")
    assert response.headers.get("Strict-Transport-Security", "").startswith("max-age=")
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


def test_hsts_also_behind_a_front_end_that_forwards_the_scheme() -> None:
    response = call("health", "http://10.0.0.4", headers={"X-Forwarded-Proto": "https"})
    assert response.headers.get("Strict-Transport-Security") == "max-age=31536000"
