"""Connect sessions, browser binding, owners, tenants and lifecycle events, over fakes."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from shared.account_events import EVENT_TYPE_PREFIX
from shared.accounts import list_accounts
from shared.bootstrap import Services
from shared.browser_binding import read_browser_binding
from shared.config import ACCOUNT_EVENT_QUEUE
from shared.connect import disconnect_account
from shared.connect_sessions import (
    AnonymousConnectRefusedError,
    SessionInputError,
    SessionRefusedError,
    binding_cookie,
    complete_browser_connect,
    create_session,
    open_anonymous,
    open_session,
    parse_session_request,
    purge_expired,
    show_session,
)
from shared.errors import AuthFlowError, ReauthRequiredError
from shared.events import mail_event
from tests.fakes import FakeUser, make_services, make_settings

BROWSER = "b" * 43
ATTACKER = "a" * 43
PRODUCT = "https://app.product.test"
OTHER_TENANT = "99999999-9999-4999-8999-999999999999"


@pytest.fixture
def services() -> Services:
    return make_services(make_settings(ALLOWED_RETURN_ORIGINS=f"{PRODUCT},http://127.0.0.1:9000"))


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.subscriptions.VALIDATION_RETRY_DELAY_SECONDS", 0)


def as_user(services: Services, user: FakeUser | None = None) -> FakeUser:
    user = user or services.identity.next_user
    services.identity.next_user = user
    services.graph.users.setdefault(
        user.account_id, {"id": user.object_id, "userPrincipalName": user.username, "displayName": user.display_name}
    )
    return user


def new_session(services: Services, owner: str = "user-1", **extra: Any) -> dict[str, Any]:
    return create_session(services, {"ownerId": owner, **extra})


def consent(services: Services) -> dict[str, str]:
    state = services.identity.started[-1]["state"]
    return {"state": state, "code": f"code-for-{state}"}


def connect_with_session(services: Services, owner: str = "user-1", user: FakeUser | None = None, **extra: Any):
    as_user(services, user)
    created = new_session(services, owner, **extra)
    open_session(services, created["sessionId"], BROWSER)
    return created, complete_browser_connect(services, consent(services), BROWSER)


def account_events(services: Services) -> list[dict[str, Any]]:
    return [json.loads(m) for m in services.queues.sent.get(ACCOUNT_EVENT_QUEUE, [])]


# -- creating ------------------------------------------------------------------------------


def test_a_session_has_an_id_a_connect_url_under_the_public_base_and_an_expiry(services: Services) -> None:
    created = new_session(services, "product-user:42", returnUrl=f"{PRODUCT}/settings?tab=mail", loginHint="a@b.c")
    assert created["connectUrl"] == f"https://connector.example.test/api/connect?session={created['sessionId']}"
    expected = services.clock.now() + dt.timedelta(minutes=30)
    assert created["expiresAt"] == expected.isoformat().replace("+00:00", "Z")
    assert show_session(services, created["sessionId"]) == {
        "sessionId": created["sessionId"],
        "ownerId": "product-user:42",
        "status": "pending",
        "expiresAt": created["expiresAt"],
    }


def test_the_lifetime_comes_from_the_setting() -> None:
    services = make_services(make_settings(CONNECT_SESSION_MINUTES="5"))
    created = new_session(services)
    assert created["expiresAt"] == (services.clock.now() + dt.timedelta(minutes=5)).isoformat().replace("+00:00", "Z")


BAD_REQUESTS = [
    ({}, "invalid_owner_id"),
    ({"ownerId": ""}, "invalid_owner_id"),
    ({"ownerId": "x" * 129}, "invalid_owner_id"),
    ({"ownerId": "has space"}, "invalid_owner_id"),
    ({"ownerId": "a/b"}, "invalid_owner_id"),
    ({"ownerId": "ünïcode"}, "invalid_owner_id"),
    ({"ownerId": 42}, "invalid_owner_id"),
    ({"ownerId": "u", "returnUrl": 5}, "invalid_return_url"),
    ({"ownerId": "u", "returnUrl": "/relative"}, "invalid_return_url"),
    ({"ownerId": "u", "returnUrl": "http://app.product.test/x"}, "invalid_return_url"),
    ({"ownerId": "u", "returnUrl": "javascript:alert(1)"}, "invalid_return_url"),
    ({"ownerId": "u", "returnUrl": "https://evil.test/x"}, "return_url_not_allowed"),
    ({"ownerId": "u", "returnUrl": "https://app.product.test.evil.test/x"}, "return_url_not_allowed"),
    ({"ownerId": "u", "returnUrl": "https://app.product.test:444/x"}, "return_url_not_allowed"),
    ({"ownerId": "u", "returnUrl": "https://user:pw@app.product.test/x"}, "invalid_return_url"),
    ({"ownerId": "u", "returnUrl": f"{PRODUCT}/x#frag"}, "invalid_return_url"),
    ({"ownerId": "u", "returnUrl": f"{PRODUCT}/" + "x" * 3000}, "invalid_return_url"),
    ({"ownerId": "u", "loginHint": ["a"]}, "invalid_login_hint"),
    ({"ownerId": "u", "loginHint": "a\r\nb"}, "invalid_login_hint"),
]


@pytest.mark.parametrize(("request_body", "code"), BAD_REQUESTS)
def test_bad_session_requests_are_refused_with_a_reason(services: Services, request_body, code) -> None:
    with pytest.raises(SessionInputError) as raised:
        create_session(services, request_body)
    assert raised.value.code == code
    assert str(raised.value)
    assert services.connect_sessions.items == {}


def test_without_allowed_origins_no_return_url_is_accepted() -> None:
    services = make_services()
    with pytest.raises(SessionInputError) as raised:
        new_session(services, returnUrl=f"{PRODUCT}/done")
    assert raised.value.code == "return_url_not_allowed"


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'"x"', b"\xff\xfe", b"null"])
def test_a_body_that_is_not_a_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(SessionInputError) as raised:
        parse_session_request(body)
    assert raised.value.code == "invalid_json"


# -- the browser ---------------------------------------------------------------------------


def test_a_session_opens_once(services: Services) -> None:
    created = new_session(services, loginHint="adele@contoso.test")
    opened = open_session(services, created["sessionId"], None)
    assert services.identity.started[-1]["login_hint"] == "adele@contoso.test"
    flow = services.authflows.items[services.identity.started[-1]["state"]]
    assert flow.session_id == created["sessionId"]
    with pytest.raises(SessionRefusedError) as raised:
        open_session(services, created["sessionId"], opened.browser_binding)
    assert raised.value.error == "session_used"


def test_a_sign_in_that_cannot_start_leaves_the_link_usable(services: Services) -> None:
    from shared.errors import IdentityError

    created = new_session(services)
    real_start = services.identity.start_auth_code_flow

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise IdentityError("authority_unavailable")

    services.identity.start_auth_code_flow = unavailable
    with pytest.raises(IdentityError):
        open_session(services, created["sessionId"], BROWSER)
    services.identity.start_auth_code_flow = real_start
    assert open_session(services, created["sessionId"], BROWSER).authorize_url


def test_an_expired_session_does_not_open_and_reads_expired(services: Services) -> None:
    created = new_session(services, returnUrl=f"{PRODUCT}/done")
    services.clock.advance(minutes=30)
    with pytest.raises(SessionRefusedError) as raised:
        open_session(services, created["sessionId"], None)
    assert raised.value.error == "session_expired"
    assert raised.value.session is not None
    assert show_session(services, created["sessionId"])["status"] == "expired"
    assert services.authflows.items == {}


def test_the_cookie_is_httponly_secure_samesite_none() -> None:
    cookie = binding_cookie(BROWSER)
    assert cookie.startswith(f"m365c_binding={BROWSER};")
    for attribute in ("HttpOnly", "Secure", "SameSite=None", "Path=/api"):
        assert attribute in cookie
    assert read_browser_binding(f"other=1; m365c_binding={BROWSER}") == BROWSER
    assert read_browser_binding("m365c_binding=short") is None


def test_the_callback_from_another_browser_connects_nothing_and_the_real_one_still_can(services: Services) -> None:
    as_user(services)
    created = new_session(services)
    open_session(services, created["sessionId"], BROWSER)
    callback = consent(services)
    for other in (ATTACKER, None):
        with pytest.raises(AuthFlowError) as raised:
            complete_browser_connect(services, callback, other)
        assert raised.value.error == "browser_mismatch"
    assert services.accounts.items == {}
    assert show_session(services, created["sessionId"])["status"] == "pending"
    outcome = complete_browser_connect(services, callback, BROWSER)
    assert outcome.result is not None


def test_a_connect_records_the_owner_and_completes_the_session(services: Services) -> None:
    created, outcome = connect_with_session(services, "owner-a", returnUrl=f"{PRODUCT}/done?x=1")
    assert outcome.result is not None
    account = services.accounts.get(outcome.result.account.account_id)
    assert account is not None and account.owner_id == "owner-a"
    view = show_session(services, created["sessionId"])
    assert view["status"] == "completed" and view["accountId"] == account.account_id
    location = urlparse(outcome.return_location() or "")
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{PRODUCT}/done"
    assert parse_qs(location.query) == {
        "x": ["1"], "accountId": [account.account_id], "sessionId": [created["sessionId"]], "status": ["connected"],
    }
    listed, _ = list_accounts(services, owner_id="owner-a")
    assert [a["id"] for a in listed] == [account.account_id]
    assert listed[0]["ownerId"] == "owner-a"
    assert list_accounts(services, owner_id="owner-b")[0] == []


def test_mail_events_carry_the_owner(services: Services) -> None:
    _, outcome = connect_with_session(services, "owner-a")
    assert outcome.result is not None
    event = mail_event(outcome.result.account, {"id": "m1", "subject": "s"}, "created", folder="inbox",
                       now=services.clock.now())
    assert event["data"]["ownerId"] == "owner-a"


def test_another_owner_reconnecting_takes_the_mailbox_and_the_event_says_from_whom(services: Services) -> None:
    _, first = connect_with_session(services, "owner-a")
    _, second = connect_with_session(services, "owner-b")
    assert second.result is not None and second.result.reconnected
    assert second.result.previous_owner_id == "owner-a"
    account_id = second.result.account.account_id
    assert services.accounts.get(account_id).owner_id == "owner-b"  # type: ignore[union-attr]
    assert list_accounts(services, owner_id="owner-a")[0] == []
    assert [a["id"] for a in list_accounts(services, owner_id="owner-b")[0]] == [account_id]
    events = account_events(services)
    assert [e["type"] for e in events] == [EVENT_TYPE_PREFIX + "connected", EVENT_TYPE_PREFIX + "reconnected"]
    assert events[1]["data"]["previousOwnerId"] == "owner-a"
    assert events[1]["data"]["ownerId"] == "owner-b"
    assert "previousOwnerId" not in events[0]["data"]
    assert events[0]["source"] == f"/accounts/{account_id}"
    assert events[0]["id"] != events[1]["id"]


def test_a_declined_consent_fails_the_session_and_returns_failed(services: Services) -> None:
    as_user(services)
    created = new_session(services, returnUrl=f"{PRODUCT}/done")
    open_session(services, created["sessionId"], BROWSER)
    state = services.identity.started[-1]["state"]
    outcome = complete_browser_connect(services, {"state": state, "error": "access_denied"}, BROWSER)
    assert outcome.result is None
    query = parse_qs(urlparse(outcome.return_location() or "").query)
    assert query["status"] == ["failed"] and query["error"] == ["access_denied"]
    assert show_session(services, created["sessionId"])["error"] == "access_denied"
    assert show_session(services, created["sessionId"])["status"] == "failed"


def test_a_tenant_not_allowed_is_refused_after_the_code_exchange_and_stores_nothing() -> None:
    services = make_services(make_settings(ALLOWED_TENANT_IDS=OTHER_TENANT, ALLOWED_RETURN_ORIGINS=PRODUCT))
    created, outcome = connect_with_session(services, returnUrl=f"{PRODUCT}/done")
    assert outcome.result is None
    assert isinstance(outcome.error, AuthFlowError) and outcome.error.error == "tenant_not_allowed"
    assert services.accounts.items == {}
    assert services.secrets.items == {}
    assert services.graph.for_account(services.identity.next_user.account_id) == []
    assert show_session(services, created["sessionId"])["error"] == "tenant_not_allowed"
    assert account_events(services) == []


def test_an_allowed_tenant_connects() -> None:
    services = make_services(make_settings(ALLOWED_TENANT_IDS=f"{OTHER_TENANT}, 00000000-0000-0000-0000-000000000002"))
    _, outcome = connect_with_session(services)
    assert outcome.result is not None
    assert outcome.result.account.tenant_id == "00000000-0000-0000-0000-000000000002"


def test_anonymous_connect_is_refused_unless_allowed(services: Services) -> None:
    with pytest.raises(AnonymousConnectRefusedError):
        open_anonymous(services, None, None)
    allowed = make_services(make_settings(ALLOW_ANONYMOUS_CONNECT="true"))
    opened = open_anonymous(allowed, None, None)
    assert opened.authorize_url == allowed.identity.started[-1]["auth_uri"]


# -- lifecycle events ----------------------------------------------------------------------


def test_reauth_required_is_published_once_per_transition(services: Services) -> None:
    _, outcome = connect_with_session(services, "owner-a")
    assert outcome.result is not None
    account = outcome.result.account
    services.identity.revoke(account.account_id)
    services.tokens.forget(account.account_id)
    for _ in range(3):
        with pytest.raises(ReauthRequiredError):
            services.tokens.graph_auth(services.accounts.get(account.account_id))  # type: ignore[arg-type]
    reauth = [e for e in account_events(services) if e["type"].endswith(".reauth_required")]
    assert len(reauth) == 1
    assert reauth[0]["data"]["ownerId"] == "owner-a"
    assert reauth[0]["data"]["reason"]
    # Reconnecting and losing the token again is a new transition: told again, new id.
    connect_with_session(services, "owner-a")
    services.identity.revoke(account.account_id)
    services.tokens.forget(account.account_id)
    with pytest.raises(ReauthRequiredError):
        services.tokens.graph_auth(services.accounts.get(account.account_id))  # type: ignore[arg-type]
    reauth = [e for e in account_events(services) if e["type"].endswith(".reauth_required")]
    assert len(reauth) == 2 and reauth[0]["id"] != reauth[1]["id"]


def test_disconnect_is_published_once(services: Services) -> None:
    _, outcome = connect_with_session(services, "owner-a")
    assert outcome.result is not None
    disconnect_account(services, outcome.result.account.account_id)
    disconnect_account(services, outcome.result.account.account_id)
    types = [e["type"].rsplit(".", 1)[-1] for e in account_events(services)]
    assert types == ["connected", "disconnected"]
    assert account_events(services)[-1]["data"]["accountId"] == outcome.result.account.account_id


# -- purge ---------------------------------------------------------------------------------


def test_expired_flows_and_sessions_are_purged_and_live_ones_kept() -> None:
    services = make_services(make_settings(ALLOW_ANONYMOUS_CONNECT="true"))
    for _ in range(50):
        open_anonymous(services, None, None)
    session = new_session(services)
    assert purge_expired(services) == {"authflows": 0, "connectsessions": 0}
    services.clock.advance(minutes=11)
    live = open_anonymous(services, None, None)
    assert purge_expired(services)["authflows"] == 50
    assert len(services.authflows.items) == 1 and live
    services.clock.advance(minutes=30 + 60)
    counts = purge_expired(services)
    assert counts == {"authflows": 1, "connectsessions": 1}
    assert services.authflows.items == {} and services.connect_sessions.items == {}
    with pytest.raises(Exception, match="no such connect session"):
        show_session(services, session["sessionId"])
