"""The MSAL identity adapter and the operators' device-code connect against the simulator:
real MSAL, real token endpoint (PKCE, refresh token rotation, public vs confidential
clients), real Key Vault emulator and devhost."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from devstack.stack import LocalStack
from shared.adapters.identity import MsalIdentity
from shared.config import Settings
from shared.errors import AuthFlowError, ReauthRequiredError
from shared.models import ClientKind
from tests.support.stack import function_key_headers, new_user, read_form, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def trusting_session(stack: LocalStack) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # the environment's CA bundle would replace the stack's
    session.verify = str(stack.ca_file)
    return session


@pytest.fixture
def identity(stack: LocalStack) -> MsalIdentity:
    return MsalIdentity(Settings.from_env(stack.settings), http_client=trusting_session(stack))


@pytest.fixture
def short_access_tokens(stack: LocalStack) -> Iterator[None]:
    """Access tokens that MSAL considers due for refresh at once (under its 5 minutes)."""
    before = stack.sim("GET", "/_sim/settings")
    stack.sim(
        "PUT", "/_sim/settings", json={"accessTokenLifetimeSeconds": 240, "deviceCodeIntervalSeconds": 1}
    )
    yield
    stack.sim(
        "PUT",
        "/_sim/settings",
        json={k: before[k] for k in ("accessTokenLifetimeSeconds", "deviceCodeIntervalSeconds")},
    )


def sign_in(stack: LocalStack, identity: MsalIdentity, user: dict[str, Any]) -> Any:
    settings = Settings.from_env(stack.settings)
    flow = identity.start_auth_code_flow(settings.scopes, settings.redirect_uri, user["userPrincipalName"])
    assert flow["code_verifier"] and flow["state"]
    page = trusting_session(stack).get(flow["auth_uri"], timeout=30)  # auto-consent: form_post page
    response = read_form(page.text).fields
    return flow, response


def test_a_code_is_redeemed_into_a_grant_with_the_accounts_own_cache(
    stack: LocalStack, identity: MsalIdentity
) -> None:
    user = new_user(stack, "msal")
    flow, response = sign_in(stack, identity, user)

    grant = identity.redeem_auth_code(flow, response)

    assert grant.home_account_id == f"{user['id']}.{user['tenantId']}"
    assert grant.object_id == user["id"] and grant.tenant_id == user["tenantId"]
    assert grant.username == user["userPrincipalName"]
    assert grant.access_token and grant.expires_in > 0
    assert grant.cache_state and user["id"] in grant.cache_state
    assert grant.client_kind == ClientKind.CONFIDENTIAL


def test_a_state_that_is_not_the_flows_is_refused(stack: LocalStack, identity: MsalIdentity) -> None:
    user = new_user(stack, "csrf")
    flow, response = sign_in(stack, identity, user)
    with pytest.raises(AuthFlowError) as raised:
        identity.redeem_auth_code(flow, {**response, "state": "someone-elses"})
    assert raised.value.error == "state_mismatch"


def test_a_code_redeemed_twice_is_an_auth_flow_error(stack: LocalStack, identity: MsalIdentity) -> None:
    user = new_user(stack, "twice")
    flow, response = sign_in(stack, identity, user)
    identity.redeem_auth_code(flow, response)
    with pytest.raises(AuthFlowError) as raised:
        identity.redeem_auth_code(flow, response)
    assert raised.value.error == "invalid_grant"


def test_silent_refresh_rotates_and_a_revoked_token_needs_a_new_sign_in(
    stack: LocalStack, identity: MsalIdentity, short_access_tokens: None
) -> None:
    user = new_user(stack, "silent")
    flow, response = sign_in(stack, identity, user)
    grant = identity.redeem_auth_code(flow, response)
    scopes = Settings.from_env(stack.settings).scopes
    assert grant.cache_state is not None

    refreshed = identity.acquire_silent(
        grant.cache_state, grant.home_account_id, scopes, ClientKind.CONFIDENTIAL
    )

    assert refreshed.access_token != grant.access_token
    assert refreshed.cache_state is not None and refreshed.cache_state != grant.cache_state
    stack.sim("POST", f"/_sim/users/{user['id']}/revoke")
    with pytest.raises(ReauthRequiredError) as raised:
        identity.acquire_silent(refreshed.cache_state, grant.home_account_id, scopes, ClientKind.CONFIDENTIAL)
    assert raised.value.reason == "invalid_grant"


def test_an_unreadable_or_foreign_cache_needs_a_new_sign_in(
    stack: LocalStack, identity: MsalIdentity
) -> None:
    scopes = Settings.from_env(stack.settings).scopes
    with pytest.raises(ReauthRequiredError):
        identity.acquire_silent("not json", "a.b", scopes, ClientKind.CONFIDENTIAL)
    with pytest.raises(ReauthRequiredError):
        identity.acquire_silent("{}", "a.b", scopes, ClientKind.CONFIDENTIAL)


def test_an_operator_connects_an_account_with_the_device_code_flow(
    stack: LocalStack, short_access_tokens: None
) -> None:
    user = new_user(stack, "device")
    env = {**os.environ, **stack.settings, "REQUESTS_CA_BUNDLE": str(stack.ca_file)}
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "connect", "--device-code"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        message = process.stderr.readline()
        found = re.search(r"open the page (\S+) and enter the code (\w+)", message)
        assert found, message
        session = trusting_session(stack)
        page = session.get(found.group(1), params={"code": found.group(2)}, timeout=30)
        form = read_form(page.text)
        done = session.post(
            urljoin(page.url, form.action or ""),
            data={
                **form.fields,
                "code": found.group(2),
                "user": user["userPrincipalName"],
                "action": "accept",
            },
            timeout=30,
        )
        assert "signed in" in done.text
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    shown = json.loads(out)
    assert shown["id"] == f"{user['id']}.{user['tenantId']}"
    assert shown["clientKind"] == "public"
    assert shown["subscriptions"]

    # Its refresh token is redeemed by the public client (a secret would be refused), once
    # the first delta round the connect queued has run.
    def first_round_done() -> bool:
        account = requests.get(
            f"{stack.devhost_url}/api/accounts/{shown['id']}", headers=function_key_headers(stack), timeout=10
        )
        return bool(account.json().get("lastSyncAt"))

    wait_for(first_round_done, what="the first delta round")
    resync = requests.post(
        f"{stack.devhost_url}/api/accounts/{shown['id']}/resync",
        headers=function_key_headers(stack),
        timeout=60,
    )
    assert resync.status_code == 200, resync.text
    assert resync.json()["skipped"] is None
