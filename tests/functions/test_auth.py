"""The browser's connect flow through the registered handlers, over fakes of every port."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from urllib.parse import urlencode

import azure.functions as func
import pytest

from shared import bootstrap
from shared.bootstrap import Services
from shared.errors import GraphError, IdentityError
from shared.models import AccountStatus
from shared.tokens import token_cache_secret_name
from tests.fakes import make_services, make_settings
from tests.support.app import app_functions, handler, http_request

BASE = "https://connector.example.test"


@pytest.fixture
def services() -> Iterator[Services]:
    installed = make_services(make_settings(ALLOW_ANONYMOUS_CONNECT="true"))
    user = installed.identity.next_user
    installed.graph.users[user.account_id] = {
        "id": user.object_id,
        "userPrincipalName": user.username,
        "displayName": user.display_name,
    }
    bootstrap.use(installed)
    yield installed
    bootstrap.use(None)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.subscriptions.VALIDATION_RETRY_DELAY_SECONDS", 0)


# The browser's cookie jar: the binding cookie /api/connect set, sent back on the callback.
_jar: dict[str, str] = {}


@pytest.fixture(autouse=True)
def empty_jar() -> None:
    _jar.clear()


def start(login_hint: str | None = None) -> func.HttpResponse:
    params = {"login_hint": login_hint} if login_hint is not None else {}
    headers = {"Cookie": _jar["cookie"]} if "cookie" in _jar else {}
    response = handler("connect")(http_request("GET", f"{BASE}/api/connect", params=params, headers=headers))
    set_cookie = response.headers.get("Set-Cookie")
    if set_cookie:
        _jar["cookie"] = set_cookie.split(";", 1)[0]
    return response


def cookie_headers() -> dict[str, str]:
    return {"Cookie": _jar["cookie"]} if "cookie" in _jar else {}


def form_post(fields: dict[str, str]) -> func.HttpResponse:
    body = urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **cookie_headers()}
    return handler("auth_callback")(
        http_request("POST", f"{BASE}/api/auth/callback", body=body, headers=headers)
    )


def consent(services: Services) -> dict[str, str]:
    """What Microsoft posts back after the user consented."""
    state = services.identity.started[-1]["state"]
    return {"code": f"code-for-{state}", "state": state, "session_state": "s"}


def text(response: func.HttpResponse) -> str:
    return response.get_body().decode()


def test_the_routes_are_anonymous_and_the_callback_takes_get_and_post() -> None:
    functions = app_functions()
    for name, route in (
        ("connect_start_page", "connect/start"),
        ("connect", "connect"),
        ("auth_callback", "auth/callback"),
    ):
        trigger = functions[name].get_trigger()
        assert trigger.route == route
        assert str(trigger.auth_level).endswith("ANONYMOUS")
    assert {str(m).rsplit(".", 1)[-1] for m in functions["auth_callback"].get_trigger().methods} == {
        "GET",
        "POST",
    }


def test_the_start_page_has_a_connect_button_pointing_at_connect(services: Services) -> None:
    response = handler("connect_start_page")(http_request("GET", f"{BASE}/api/connect/start"))
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = text(response)
    assert f'action="{BASE}/api/connect"' in page
    assert "Connect Microsoft account" in page and 'name="login_hint"' in page
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_connect_redirects_to_microsoft_and_keeps_the_flow(services: Services) -> None:
    response = start("adele@contoso.test")
    flow = services.identity.started[-1]
    assert response.status_code == 302
    assert response.headers["Location"] == flow["auth_uri"]
    assert flow["state"] in services.authflows.items
    assert flow["login_hint"] == "adele@contoso.test"


def test_connect_with_an_unreasonable_login_hint_is_a_400_page(services: Services) -> None:
    response = start("x" * 1000)
    assert response.status_code == 400
    assert services.authflows.items == {}


def test_the_form_post_callback_connects_and_shows_success(services: Services) -> None:
    start()
    response = form_post(consent(services))
    assert response.status_code == 200, text(response)
    assert "Account connected" in text(response)
    assert "adele@contoso.test" in text(response)
    account = services.accounts.get(services.identity.next_user.account_id)
    assert account is not None and account.status == AccountStatus.ACTIVE
    assert services.secrets.get(token_cache_secret_name(account.account_id))
    assert len(services.graph.for_account(account.account_id)) == 1


def test_the_query_callback_works_too(services: Services) -> None:
    start()
    response = handler("auth_callback")(
        http_request("GET", f"{BASE}/api/auth/callback", params=consent(services), headers=cookie_headers())
    )
    assert response.status_code == 200


def test_a_second_connect_says_reconnected_and_keeps_one_account(services: Services) -> None:
    start()
    form_post(consent(services))
    start()
    response = form_post(consent(services))
    assert "Account reconnected" in text(response)
    assert len(services.accounts.items) == 1
    assert len(services.graph.subscriptions) == 1


def test_a_post_connect_redirect_url_is_followed() -> None:
    installed = make_services(
        make_settings(POST_CONNECT_REDIRECT_URL="https://app.example.test/connected", ALLOW_ANONYMOUS_CONNECT="true")
    )
    bootstrap.use(installed)
    try:
        start()
        response = form_post(consent(installed))
    finally:
        bootstrap.use(None)
    assert response.status_code == 302
    assert response.headers["Location"] == "https://app.example.test/connected"


@pytest.mark.parametrize(
    "fields",
    [
        {"code": "c", "state": "forged"},
        {"code": "c"},
        {},
    ],
)
def test_forged_or_missing_states_are_a_400_page(services: Services, fields: dict[str, str]) -> None:
    response = form_post(fields)
    assert response.status_code == 400
    assert "Sign-in failed" in text(response)
    assert services.accounts.items == {}


def test_a_replayed_state_is_a_400_page_that_says_so(services: Services) -> None:
    start()
    fields = consent(services)
    assert form_post(fields).status_code == 200
    response = form_post(fields)
    assert response.status_code == 400
    assert "already used" in text(response)


def test_an_expired_state_is_a_400_page_that_says_so(services: Services) -> None:
    start()
    services.clock.advance(minutes=11)
    response = form_post(consent(services))
    assert response.status_code == 400
    assert "expired" in text(response)


def test_a_denied_consent_shows_microsofts_error_escaped(services: Services) -> None:
    start()
    state = services.identity.started[-1]["state"]
    response = form_post(
        {
            "state": state,
            "error": "access_denied<script>alert(1)</script>",
            "error_description": 'AADSTS65004: User declined to consent. <img src=x onerror="alert(2)">',
        }
    )
    page = text(response)
    assert response.status_code == 400
    assert "<script>" not in page and "<img" not in page
    assert "access_denied&lt;script&gt;" in page
    assert "User declined to consent. &lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    assert state not in services.authflows.items


def test_no_code_or_state_in_the_page_or_the_log(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    start()
    fields = consent(services)
    services.identity.redeem_error = "invalid_grant"
    response = form_post(fields)
    assert response.status_code == 400
    for secret in (fields["code"], fields["state"]):
        assert secret not in text(response)
        assert secret not in caplog.text


def test_a_huge_or_garbled_form_is_a_400_not_a_500(services: Services) -> None:
    big = handler("auth_callback")(
        http_request("POST", f"{BASE}/api/auth/callback", body=b"code=" + b"x" * 100_000)
    )
    garbled = handler("auth_callback")(
        http_request("POST", f"{BASE}/api/auth/callback", body=b"\xff\xfe=\x00")
    )
    assert big.status_code == 400
    assert garbled.status_code == 400


def test_a_subscription_failure_is_a_503_page_and_the_account_shows_the_error(services: Services) -> None:
    services.graph.fail["create_subscription"] = [
        GraphError(400, "ValidationError", "Subscription validation request failed.") for _ in range(3)
    ]
    start()
    response = form_post(consent(services))
    assert response.status_code == 503
    account = services.accounts.get(services.identity.next_user.account_id)
    assert account is not None and account.status == AccountStatus.ERROR


def test_a_refusal_by_the_identity_platform_is_a_502_page(services: Services) -> None:
    def refuse(flow: object, response: object) -> None:
        raise IdentityError("invalid_client", "AADSTS7000215: Invalid client secret provided.")

    services.identity.redeem_auth_code = refuse  # type: ignore[attr-defined]
    start()
    response = form_post(consent(services))
    assert response.status_code == 502
    assert "Microsoft refused the sign-in" in text(response)
    assert "AADSTS7000215" not in text(response)  # our configuration is not the user's business
