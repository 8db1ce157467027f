"""Connecting accounts through the whole local stack: devhost running the app, the Graph and
identity simulator, Azurite and the Key Vault emulator, all over their real protocols."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from devstack.stack import LocalStack
from shared.adapters.keyvault import KeyVaultSecretStore
from shared.adapters.tables import TableAuthFlowStore
from shared.browser_binding import BINDING_COOKIE, binding_digest
from shared.models import PendingAuthFlow
from shared.tokens import token_cache_secret_name
from tests.support.stack import browser, connect_user, function_key_headers, new_user, read_form, wait_for

pytestmark = pytest.mark.e2e


def connect(stack: LocalStack, user: dict[str, Any]) -> requests.Response:
    return connect_user(stack, user["userPrincipalName"], session=browser(stack))


def account_id(user: dict[str, Any]) -> str:
    return f"{user['id']}.{user['tenantId']}"


def account(stack: LocalStack, user: dict[str, Any]) -> requests.Response:
    return requests.get(
        f"{stack.devhost_url}/api/accounts/{account_id(user)}",
        headers=function_key_headers(stack),
        timeout=30,
    )


def sim_subscriptions(stack: LocalStack, user: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in stack.sim("GET", "/_sim/subscriptions")["value"] if s["userId"] == user["id"]]


def vault(stack: LocalStack) -> KeyVaultSecretStore:
    return KeyVaultSecretStore(stack.keyvault_url, ca_bundle=str(stack.ca_file))


def sim_settings(stack: LocalStack, **values: Any) -> dict[str, Any]:
    before = stack.sim("GET", "/_sim/settings")
    stack.sim("PUT", "/_sim/settings", json=values)
    return {k: before[k] for k in values}


@pytest.fixture
def manual_consent(stack: LocalStack) -> Iterator[None]:
    before = sim_settings(stack, autoConsent=False)
    yield
    stack.sim("PUT", "/_sim/settings", json=before)


def test_a_user_connects_and_everything_is_in_place(stack: LocalStack) -> None:
    user = new_user(stack, "connect")

    page = connect(stack, user)

    assert page.status_code == 200, page.text
    assert "Account connected" in page.text
    shown = account(stack, user)
    assert shown.status_code == 200
    assert shown.json()["status"] == "active"
    assert shown.json()["user"] == user["userPrincipalName"]
    assert vault(stack).get(token_cache_secret_name(account_id(user)))
    [subscription] = sim_subscriptions(stack, user)
    assert subscription["notificationUrl"] == f"{stack.devhost_url}/api/notifications"
    assert subscription["lifecycleNotificationUrl"] == f"{stack.devhost_url}/api/lifecycle"
    assert subscription["resource"] == "/me/mailFolders('inbox')/messages"
    assert subscription["changeType"] == "created,updated,deleted"
    assert shown.json()["subscriptions"][0]["id"] == subscription["id"]


def test_reconnecting_updates_in_place_and_never_duplicates(stack: LocalStack) -> None:
    user = new_user(stack, "reconnect")
    assert connect(stack, user).status_code == 200

    again = connect(stack, user)

    assert again.status_code == 200, again.text
    assert "Account reconnected" in again.text
    assert len(sim_subscriptions(stack, user)) == 1
    listing = requests.get(
        f"{stack.devhost_url}/api/accounts",
        params={"size": "100"},
        headers=function_key_headers(stack),
        timeout=30,
    ).json()
    ids = [a["id"] for a in listing["accounts"]]
    while listing["continuation"]:
        listing = requests.get(
            f"{stack.devhost_url}/api/accounts",
            params={"size": "100", "continuation": listing["continuation"]},
            headers=function_key_headers(stack),
            timeout=30,
        ).json()
        ids += [a["id"] for a in listing["accounts"]]
    assert ids.count(account_id(user)) == 1


def test_the_accounts_api_needs_the_function_key(stack: LocalStack) -> None:
    assert requests.get(f"{stack.devhost_url}/api/accounts", timeout=30).status_code == 401


def test_a_forged_state_is_refused(stack: LocalStack) -> None:
    response = requests.post(
        f"{stack.devhost_url}/api/auth/callback",
        data={"state": "forged-state", "code": "forged-code"},
        timeout=30,
    )
    assert response.status_code == 400
    assert "unknown or was already used" in response.text
    assert "forged-code" not in response.text


def test_a_replayed_callback_is_refused(stack: LocalStack) -> None:
    user = new_user(stack, "replay")
    session = browser(stack)
    sign_in = session.get(
        f"{stack.devhost_url}/api/connect", params={"login_hint": user["userPrincipalName"]}, timeout=30
    )
    form = read_form(sign_in.text)  # the simulator's auto-posting form_post page
    assert form.action and "code" in form.fields
    callback = urljoin(sign_in.url, form.action)

    first = session.post(callback, data=form.fields, timeout=30)
    replayed = session.post(callback, data=form.fields, timeout=30)

    assert first.status_code == 200, first.text
    assert replayed.status_code == 400
    assert "already used" in replayed.text


def test_an_expired_state_is_refused(stack: LocalStack) -> None:
    state = f"expired-{uuid.uuid4().hex}"
    cookie = "e" * 43
    TableAuthFlowStore(stack.storage_connection).put(
        PendingAuthFlow(
            state=state,
            flow={"state": state, "redirect_uri": f"{stack.devhost_url}/api/auth/callback"},
            expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
            browser_binding=binding_digest(cookie),
        )
    )
    response = requests.post(
        f"{stack.devhost_url}/api/auth/callback", data={"state": state, "code": "c"},
        headers={"Cookie": f"{BINDING_COOKIE}={cookie}"}, timeout=30,
    )
    assert response.status_code == 400
    assert "expired" in response.text


def test_a_denied_consent_shows_an_escaped_error(stack: LocalStack, manual_consent: None) -> None:
    user = new_user(stack, "denied")
    session = browser(stack)
    consent = session.get(
        f"{stack.devhost_url}/api/connect", params={"login_hint": user["userPrincipalName"]}, timeout=30
    )
    form = read_form(consent.text)
    assert form.method == "POST"
    declined = session.post(
        urljoin(consent.url, form.action or ""), data={**form.fields, "action": "cancel"}, timeout=30
    )
    back = read_form(declined.text)  # the simulator posts the error back to our callback
    page = session.post(urljoin(declined.url, back.action or ""), data=back.fields, timeout=30)

    assert page.status_code == 400
    assert "access_denied" in page.text
    assert "User declined to consent" in page.text
    assert "<script" not in page.text
    assert account(stack, user).status_code == 404


def test_a_user_connects_through_the_consent_page(stack: LocalStack, manual_consent: None) -> None:
    user = new_user(stack, "consent")
    session = browser(stack)
    consent = session.get(
        f"{stack.devhost_url}/api/connect", params={"login_hint": user["userPrincipalName"]}, timeout=30
    )
    form = read_form(consent.text)
    accepted = session.post(
        urljoin(consent.url, form.action or ""),
        data={**form.fields, "user": user["userPrincipalName"], "action": "accept"},
        timeout=30,
    )
    back = read_form(accepted.text)
    page = session.post(urljoin(accepted.url, back.action or ""), data=back.fields, timeout=30)
    assert page.status_code == 200, page.text
    assert account(stack, user).json()["status"] == "active"


def test_disconnect_removes_the_subscription_and_the_secret(stack: LocalStack) -> None:
    user = new_user(stack, "disconnect")
    assert connect(stack, user).status_code == 200
    url = f"{stack.devhost_url}/api/accounts/{account_id(user)}"

    first = requests.delete(url, headers=function_key_headers(stack), timeout=30)
    second = requests.delete(url, headers=function_key_headers(stack), timeout=30)

    assert first.status_code == second.status_code == 200
    assert second.json()["status"] == "disconnected"
    assert sim_subscriptions(stack, user) == []
    assert vault(stack).get(token_cache_secret_name(account_id(user))) is None
    unknown = requests.delete(
        f"{stack.devhost_url}/api/accounts/nobody.nowhere", headers=function_key_headers(stack), timeout=30
    )
    assert unknown.status_code == 404

    # Reconnecting recovers the soft-deleted secret and subscribes again.
    again = connect(stack, user)
    assert again.status_code == 200, again.text
    assert len(sim_subscriptions(stack, user)) == 1
    assert vault(stack).get(token_cache_secret_name(account_id(user)))


def test_a_revoked_refresh_token_turns_the_account_reauth_required(stack: LocalStack) -> None:
    user = new_user(stack, "revoked")
    # Access tokens shorter than the provider's 5-minute margin: every use refreshes.
    # Kept that short until the resync below: a token refreshed meanwhile (a run the
    # devhost's timer fires, say) would otherwise live an hour and the resync never meet
    # the dead refresh token.
    before = sim_settings(stack, accessTokenLifetimeSeconds=240)
    try:
        assert connect(stack, user).status_code == 200
        # The first delta round runs on the queue after the callback: let it finish first.
        wait_for(lambda: account(stack, user).json()["lastSyncAt"], what="the first delta round")
        stack.sim("POST", f"/_sim/users/{user['id']}/revoke")

        resync = requests.post(
            f"{stack.devhost_url}/api/accounts/{account_id(user)}/resync",
            headers=function_key_headers(stack),
            timeout=60,
        )
    finally:
        stack.sim("PUT", "/_sim/settings", json=before)

    assert resync.status_code == 200, resync.text
    assert resync.json()["skipped"] == "reauth_required"
    shown = account(stack, user).json()
    assert shown["status"] == "reauth_required"
    assert "invalid_grant" in (shown["lastError"] or "")
