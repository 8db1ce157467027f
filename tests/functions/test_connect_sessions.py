"""Connect sessions through the registered handlers, over fakes of every port."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import azure.functions as func
import pytest

from shared import bootstrap
from shared.bootstrap import Services
from tests.fakes import make_services, make_settings
from tests.support.app import app_functions, handler, http_request

BASE = "https://connector.example.test"
PRODUCT = "https://app.product.test"


@pytest.fixture
def services() -> Iterator[Services]:
    installed = make_services(make_settings(ALLOWED_RETURN_ORIGINS=PRODUCT))
    user = installed.identity.next_user
    installed.graph.users[user.account_id] = {"id": user.object_id, "userPrincipalName": user.username}
    bootstrap.use(installed)
    yield installed
    bootstrap.use(None)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.subscriptions.VALIDATION_RETRY_DELAY_SECONDS", 0)


def create(body: Any) -> func.HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return handler("connect_sessions_create")(http_request("POST", f"{BASE}/api/connect-sessions", body=raw))


def show(session_id: str) -> func.HttpResponse:
    return handler("connect_sessions_item")(
        http_request("GET", f"{BASE}/api/connect-sessions/{session_id}", route_params={"session_id": session_id})
    )


def open_link(url: str, cookie: str | None = None) -> func.HttpResponse:
    query = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
    headers = {"Cookie": cookie} if cookie else {}
    return handler("connect")(http_request("GET", f"{BASE}/api/connect", params=query, headers=headers))


def callback(services: Services, cookie: str | None) -> func.HttpResponse:
    state = services.identity.started[-1]["state"]
    body = urlencode({"state": state, "code": f"code-for-{state}"}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **({"Cookie": cookie} if cookie else {})}
    return handler("auth_callback")(http_request("POST", f"{BASE}/api/auth/callback", body=body, headers=headers))


def test_the_routes_need_a_function_key_and_the_purge_runs_every_ten_minutes() -> None:
    functions = app_functions()
    for name, route in (("connect_sessions_create", "connect-sessions"),
                        ("connect_sessions_item", "connect-sessions/{session_id}")):
        trigger = functions[name].get_trigger()
        assert trigger.route == route
        assert str(trigger.auth_level).rsplit(".", 1)[-1] == "FUNCTION"
    timer = functions["purge_expired_connects"].get_trigger()
    assert timer.schedule == "0 */10 * * * *"


def test_create_answers_201_and_the_session_reads_back(services: Services) -> None:
    response = create({"ownerId": "u-1", "returnUrl": f"{PRODUCT}/done"})
    assert response.status_code == 201
    created = json.loads(response.get_body())
    shown = show(created["sessionId"])
    assert shown.status_code == 200
    assert json.loads(shown.get_body())["status"] == "pending"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "invalid_json"),
        ({"ownerId": "a b"}, 400, "invalid_owner_id"),
        ({"ownerId": "u", "returnUrl": "https://evil.test/"}, 400, "return_url_not_allowed"),
        (b"{" + b" " * 20000 + b"}", 413, "request_too_large"),
    ],
)
def test_bad_input_is_a_json_error_with_a_code(services: Services, body: Any, status: int, code: str) -> None:
    response = create(body)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert json.loads(response.get_body())["error"]["code"] == code


def test_unknown_and_malformed_session_ids(services: Services) -> None:
    assert show("cs_" + "z" * 43).status_code == 404
    assert show("../../etc").status_code == 400


def test_the_connect_link_sets_the_cookie_and_the_callback_needs_it(services: Services) -> None:
    created = json.loads(create({"ownerId": "u-1", "returnUrl": f"{PRODUCT}/done"}).get_body())
    opened = open_link(created["connectUrl"])
    assert opened.status_code == 302
    set_cookie = opened.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=None"):
        assert attribute in set_cookie
    cookie = set_cookie.split(";", 1)[0]

    refused = callback(services, None)
    assert refused.status_code == 400
    assert "another browser" in refused.get_body().decode()

    done = callback(services, cookie)
    assert done.status_code == 302
    query = parse_qs(urlparse(done.headers["Location"]).query)
    assert query["status"] == ["connected"] and query["sessionId"] == [created["sessionId"]]
    again = open_link(created["connectUrl"], cookie)
    assert again.status_code == 400 and "already used" in again.get_body().decode()


def test_anonymous_connect_and_the_start_page_are_403_by_default(services: Services) -> None:
    assert handler("connect")(http_request("GET", f"{BASE}/api/connect")).status_code == 403
    assert handler("connect_start_page")(http_request("GET", f"{BASE}/api/connect/start")).status_code == 403
    assert services.authflows.items == {}


def test_nothing_secret_is_logged(services: Services, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = json.loads(create({"ownerId": "u-1"}).get_body())
    cookie = open_link(created["connectUrl"]).headers["Set-Cookie"].split(";", 1)[0]
    state = services.identity.started[-1]["state"]
    callback(services, None)  # refused
    callback(services, cookie)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "connect session" in logged
    for secret in (created["sessionId"], cookie.split("=", 1)[1], state, f"code-for-{state}"):
        assert secret not in logged


def test_two_tabs_of_one_browser_both_finish(services: Services) -> None:
    first = json.loads(create({"ownerId": "u-1", "returnUrl": f"{PRODUCT}/a"}).get_body())
    second = json.loads(create({"ownerId": "u-1", "returnUrl": f"{PRODUCT}/b"}).get_body())
    cookie = open_link(first["connectUrl"]).headers["Set-Cookie"].split(";", 1)[0]
    first_state = services.identity.started[-1]["state"]
    # The second tab's start reuses the browser's cookie: the first tab's sign-in stays valid.
    assert open_link(second["connectUrl"], cookie).headers["Set-Cookie"].split(";", 1)[0] == cookie
    assert callback(services, cookie).status_code == 302
    body = urlencode({"state": first_state, "code": f"code-for-{first_state}"}).encode()
    done = handler("auth_callback")(http_request(
        "POST", f"{BASE}/api/auth/callback", body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
    ))
    assert done.status_code == 302 and done.headers["Location"].startswith(f"{PRODUCT}/a?")
