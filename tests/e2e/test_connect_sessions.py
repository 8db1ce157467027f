"""A product connects its users' mailboxes with connect sessions, through the whole local
stack: the devhost running the app, the identity + Graph simulator, Azurite, the Key Vault
emulator. The product's backend creates sessions with its function key; the user's
"browser" (requests, keeping cookies as browsers do on 127.0.0.1) opens the connectUrl."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any
from urllib.parse import urljoin, urlparse

import pytest
import requests

from devstack.stack import LocalStack
from shared.browser_binding import BINDING_COOKIE
from tests.conftest import PRODUCT_ORIGIN
from tests.support.sessions import account_events, create_session, get_session, sign_in_at
from tests.support.stack import (
    browser,
    function_key_headers,
    new_user,
    read_form,
    read_queue,
    send_mail,
    wait_for,
)

pytestmark = pytest.mark.e2e

PREFIX = "com.m365connector.account."
# Every secret the tests below saw on the wire: none may show up in the app's log.
SEEN_SECRETS: set[str] = set()


def owner() -> str:
    return f"product-user:{uuid.uuid4().hex[:10]}"


def account_id(user: dict[str, Any]) -> str:
    return f"{user['id']}.{user['tenantId']}"


def new_session(stack: LocalStack, owner_id: str, user: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ownerId": owner_id, **extra}
    if user is not None:
        body["loginHint"] = user["userPrincipalName"]
    response = create_session(stack, body)
    assert response.status_code == 201, response.text
    created = response.json()
    SEEN_SECRETS.add(created["sessionId"])
    return dict(created)


def remember(run: Any) -> None:
    SEEN_SECRETS.update(v for k, v in run.callback_fields.items() if k in ("code", "state") and v)
    if run.cookie:
        SEEN_SECRETS.add(run.cookie)


def connect_for(stack: LocalStack, owner_id: str, user: dict[str, Any], **extra: Any) -> tuple[dict[str, Any], Any]:
    created = new_session(stack, owner_id, user, returnUrl=f"{PRODUCT_ORIGIN}/settings/mail?tab=accounts", **extra)
    run = sign_in_at(stack, created["connectUrl"])
    remember(run)
    return created, run


def accounts_of(stack: LocalStack, owner_id: str) -> list[dict[str, Any]]:
    response = requests.get(
        f"{stack.devhost_url}/api/accounts", params={"ownerId": owner_id},
        headers=function_key_headers(stack), timeout=30,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["accounts"])


# -- the product's backend -------------------------------------------------------------


def test_a_session_is_created_and_read_back_with_the_function_key(stack: LocalStack) -> None:
    owner_id = owner()
    created = new_session(stack, owner_id, returnUrl=f"{PRODUCT_ORIGIN}/done")
    assert set(created) == {"sessionId", "connectUrl", "expiresAt"}
    assert created["connectUrl"].startswith(f"{stack.devhost_url}/api/connect?")
    shown = get_session(stack, created["sessionId"])
    assert shown.status_code == 200
    assert shown.json()["ownerId"] == owner_id and shown.json()["status"] == "pending"
    assert "accountId" not in shown.json()
    assert requests.post(f"{stack.devhost_url}/api/connect-sessions", json={"ownerId": "x"}, timeout=30).status_code == 401
    assert requests.get(f"{stack.devhost_url}/api/connect-sessions/{created['sessionId']}", timeout=30).status_code == 401
    unknown = get_session(stack, "cs_" + "x" * 43)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert get_session(stack, "not-a-session").status_code == 400


BAD_BODIES: list[tuple[str, Any]] = [
    ("no body", None),
    ("not json", "{ownerId: 1"),
    ("a json array", [{"ownerId": "u"}]),
    ("a json string", "u"),
    ("no ownerId", {"returnUrl": f"{PRODUCT_ORIGIN}/x"}),
    ("empty ownerId", {"ownerId": ""}),
    ("ownerId of 129 characters", {"ownerId": "u" * 129}),
    ("ownerId with a space", {"ownerId": "john doe"}),
    ("ownerId with a slash", {"ownerId": "tenant/user"}),
    ("ownerId with a newline", {"ownerId": "u\nx"}),
    ("ownerId not a string", {"ownerId": 42}),
    ("ownerId null", {"ownerId": None}),
    ("returnUrl not a string", {"ownerId": "u", "returnUrl": ["https://product.test"]}),
    ("returnUrl relative", {"ownerId": "u", "returnUrl": "/settings"}),
    ("returnUrl plain http on a public host", {"ownerId": "u", "returnUrl": "http://product.test/x"}),
    ("returnUrl javascript:", {"ownerId": "u", "returnUrl": "javascript:alert(document.cookie)"}),
    ("returnUrl on another origin", {"ownerId": "u", "returnUrl": "https://evil.test/steal"}),
    ("returnUrl on a look-alike host", {"ownerId": "u", "returnUrl": "https://product.test.evil.test/x"}),
    ("returnUrl on another port", {"ownerId": "u", "returnUrl": "https://product.test:8443/x"}),
    ("returnUrl with credentials", {"ownerId": "u", "returnUrl": "https://a:b@product.test/x"}),
    ("returnUrl with a fragment", {"ownerId": "u", "returnUrl": "https://product.test/x#top"}),
    ("returnUrl too long", {"ownerId": "u", "returnUrl": "https://product.test/" + "x" * 3000}),
    ("loginHint not a string", {"ownerId": "u", "loginHint": {"upn": "a"}}),
    ("loginHint with a header injection", {"ownerId": "u", "loginHint": "a@b.test\r\nSet-Cookie: x=1"}),
    ("loginHint too long", {"ownerId": "u", "loginHint": "a" * 300}),
]


@pytest.mark.parametrize(("what", "body"), BAD_BODIES, ids=[what for what, _ in BAD_BODIES])
def test_bad_session_requests_are_a_400_with_a_reason(stack: LocalStack, what: str, body: Any) -> None:
    if body is None:
        data: bytes | str = b""
    elif isinstance(body, str):
        data = body
    else:
        data = json.dumps(body)
    response = requests.post(
        f"{stack.devhost_url}/api/connect-sessions", data=data,
        headers={**function_key_headers(stack), "Content-Type": "application/json"}, timeout=30,
    )
    assert response.status_code == 400, (what, response.text)
    error = response.json()["error"]
    assert error["code"] and error["message"], what


def test_a_return_url_outside_the_allowed_origins_is_refused_at_creation(stack: LocalStack) -> None:
    response = create_session(stack, {"ownerId": "u", "returnUrl": "https://elsewhere.test/done"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "return_url_not_allowed"
    assert "ALLOWED_RETURN_ORIGINS" in response.json()["error"]["message"]


# -- the user's browser ------------------------------------------------------------------


def test_a_connect_through_the_connect_url_binds_the_browser_and_returns_to_the_product(stack: LocalStack) -> None:
    user, owner_id = new_user(stack, "session"), owner()
    created, run = connect_for(stack, owner_id, user)

    assert run.start is not None
    first_hop = run.start.history[0]
    assert first_hop.status_code == 302
    set_cookie = first_hop.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=None"):
        assert attribute in set_cookie
    assert urlparse(first_hop.headers["Location"]).netloc == urlparse(stack.graphsim_url).netloc
    location = run.finish.headers["Location"]
    assert location.startswith(f"{PRODUCT_ORIGIN}/settings/mail?tab=accounts&")
    assert run.outcome() == {
        "tab": "accounts", "accountId": account_id(user), "sessionId": created["sessionId"], "status": "connected",
    }
    shown = get_session(stack, created["sessionId"]).json()
    assert shown["status"] == "completed" and shown["accountId"] == account_id(user)
    [listed] = accounts_of(stack, owner_id)
    assert listed["id"] == account_id(user) and listed["ownerId"] == owner_id and listed["status"] == "active"
    assert accounts_of(stack, owner()) == []
    single = requests.get(
        f"{stack.devhost_url}/api/accounts/{account_id(user)}", headers=function_key_headers(stack), timeout=30
    ).json()
    assert single["ownerId"] == owner_id


def test_the_same_callback_from_a_second_browser_is_refused_and_connects_nothing(stack: LocalStack) -> None:
    user = new_user(stack, "csrf")
    created = new_session(stack, owner(), user)
    victim_run = sign_in_at(stack, created["connectUrl"], post=False)
    remember(victim_run)
    assert victim_run.callback_fields.get("code")

    second = browser(stack)
    replayed = second.post(victim_run.callback_url, data=victim_run.callback_fields, timeout=30, allow_redirects=False)
    forged_cookie = browser(stack)
    forged_cookie.headers["Cookie"] = f"{BINDING_COOKIE}={'f' * 43}"
    forged = forged_cookie.post(victim_run.callback_url, data=victim_run.callback_fields, timeout=30,
                                allow_redirects=False)

    for refused in (replayed, forged):
        assert refused.status_code == 400
        assert "another browser" in refused.text
    assert requests.get(
        f"{stack.devhost_url}/api/accounts/{account_id(user)}", headers=function_key_headers(stack), timeout=30
    ).status_code == 404
    assert get_session(stack, created["sessionId"]).json()["status"] == "pending"
    # The browser that started it still can finish it.
    finished = victim_run.browser.post(victim_run.callback_url, data=victim_run.callback_fields, timeout=30)
    assert finished.status_code == 200 and "Account connected" in finished.text


def test_a_used_session_is_refused(stack: LocalStack) -> None:
    user = new_user(stack, "reuse")
    created, run = connect_for(stack, owner(), user)
    assert run.outcome()["status"] == "connected"
    for again in (sign_in_at(stack, created["connectUrl"]), sign_in_at(stack, created["connectUrl"], session=run.browser)):
        assert again.start is not None and again.start.status_code == 400
        assert "already used" in again.start.text
    assert get_session(stack, created["sessionId"]).json()["status"] == "completed"


def test_another_owner_connecting_the_same_mailbox_takes_it_over(stack: LocalStack) -> None:
    user, first_owner, second_owner = new_user(stack, "handover"), owner(), owner()
    connect_for(stack, first_owner, user)
    _, run = connect_for(stack, second_owner, user)

    assert run.outcome()["status"] == "reconnected"
    assert accounts_of(stack, first_owner) == []
    assert [a["id"] for a in accounts_of(stack, second_owner)] == [account_id(user)]
    events = account_events(stack, account_id(user))
    assert [e["type"] for e in events] == [PREFIX + "connected", PREFIX + "reconnected"]
    assert events[1]["data"]["ownerId"] == second_owner
    assert events[1]["data"]["previousOwnerId"] == first_owner


def test_a_declined_consent_returns_failed_to_the_product(stack: LocalStack) -> None:
    before = stack.sim("GET", "/_sim/settings")["autoConsent"]
    stack.sim("PUT", "/_sim/settings", json={"autoConsent": False})
    try:
        user = new_user(stack, "declines")
        created = new_session(stack, owner(), user, returnUrl=f"{PRODUCT_ORIGIN}/done")
        run = sign_in_at(stack, created["connectUrl"], post=False)  # stops at the consent page
        assert run.start is not None
        form = read_form(run.start.text)
        declined = run.browser.post(
            urljoin(run.start.url, form.action or ""), data={**form.fields, "action": "cancel"}, timeout=30
        )
        back = read_form(declined.text)  # the simulator posts the error back to the callback
        finish = run.browser.post(
            urljoin(declined.url, back.action or ""), data=back.fields, timeout=30, allow_redirects=False
        )
    finally:
        stack.sim("PUT", "/_sim/settings", json={"autoConsent": before})
    assert finish.status_code == 302
    assert finish.headers["Location"].startswith(f"{PRODUCT_ORIGIN}/done?")
    assert "status=failed" in finish.headers["Location"] and "error=access_denied" in finish.headers["Location"]
    shown = get_session(stack, created["sessionId"]).json()
    assert shown["status"] == "failed" and shown["error"] == "access_denied"
    assert requests.get(
        f"{stack.devhost_url}/api/accounts/{account_id(user)}", headers=function_key_headers(stack), timeout=30
    ).status_code == 404


# -- what the product hears afterwards -----------------------------------------------------


def test_mail_events_carry_the_owner(stack: LocalStack) -> None:
    user, owner_id = new_user(stack, "ownedmail"), owner()
    connect_for(stack, owner_id, user)
    subject = f"owned {uuid.uuid4().hex[:6]}"
    send_mail(stack, user["id"], subject)
    seen: list[dict[str, Any]] = []

    def arrived() -> dict[str, Any] | None:
        seen.extend(read_queue(stack, "mail-events"))
        return next((e for e in seen if e.get("data", {}).get("subject") == subject), None)

    event = wait_for(arrived, timeout=30, what="the mail event")
    assert event["data"]["ownerId"] == owner_id
    assert event["data"]["accountId"] == account_id(user)


def test_each_lifecycle_event_is_published_exactly_once(stack: LocalStack) -> None:
    user, owner_id = new_user(stack, "lifecycle"), owner()
    the_account = account_id(user)
    # Access tokens of 5 minutes are never cached by the connector (5-minute margin): every
    # action redeems the refresh token, which the revocation below kills. They stay that
    # short until the account is marked: any token refresh meanwhile (the connects' delta
    # rounds, a renewal run the devhost's timer fires) would otherwise cache a 1-hour one,
    # and the actions below would never meet the dead refresh token.
    stack.sim("PUT", "/_sim/settings", json={"accessTokenLifetimeSeconds": 300})
    try:
        connect_for(stack, owner_id, user)
        connect_for(stack, owner_id, user)
        stack.sim("POST", f"/_sim/users/{user['id']}/revoke")
        for _ in range(3):  # every action meets the dead refresh token; one transition
            response = requests.post(
                f"{stack.devhost_url}/api/accounts/{the_account}/resync", headers=function_key_headers(stack),
                timeout=30,
            )
            assert response.status_code in (200, 503), response.text
        shown = requests.get(
            f"{stack.devhost_url}/api/accounts/{the_account}", headers=function_key_headers(stack), timeout=30
        ).json()
        assert shown["status"] == "reauth_required"
    finally:
        stack.sim("PUT", "/_sim/settings", json={"accessTokenLifetimeSeconds": 3600})
    for _ in range(2):
        assert requests.delete(
            f"{stack.devhost_url}/api/accounts/{the_account}", headers=function_key_headers(stack), timeout=30
        ).status_code == 200

    events = account_events(stack, the_account)
    assert Counter(e["type"] for e in events) == {
        PREFIX + "connected": 1, PREFIX + "reconnected": 1, PREFIX + "reauth_required": 1, PREFIX + "disconnected": 1,
    }
    assert len({e["id"] for e in events}) == 4
    for event in events:
        assert event["specversion"] == "1.0"
        assert event["source"] == f"/accounts/{the_account}"
        data = event["data"]
        assert data["ownerId"] == owner_id
        assert data["tenantId"] == user["tenantId"] and data["userId"] == user["id"]
        assert data["userPrincipalName"] == user["userPrincipalName"]
        assert data["reason"]
    reauth = next(e for e in events if e["type"].endswith("reauth_required"))
    assert reauth["data"]["reason"] == "invalid_grant"


def test_no_secret_seen_on_the_wire_is_in_the_apps_log(stack: LocalStack) -> None:
    """Runs last in this module: the codes, states, cookies and session ids the tests above
    exchanged with the app must not appear in any line the app logged."""
    assert stack.log_dir is not None
    log = (stack.log_dir / "devhost.log").read_text(errors="replace")
    assert "connect session" in log  # the log is the app's, and it did log the flows
    assert len(SEEN_SECRETS) > 10
    leaked = sorted(s for s in SEEN_SECRETS if s in log)
    assert not leaked, f"{len(leaked)} secrets in the log"
    assert "eyJ" not in log  # no JWT (access or id token)
