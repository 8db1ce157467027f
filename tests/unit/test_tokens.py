"""CachedTokenProvider over fake Key Vault and identity: caching, write-back, invalid_grant."""

from __future__ import annotations

import re
import threading

import pytest

from shared.connect import finish_connect
from shared.errors import IdentityError, ReauthRequiredError
from shared.models import AccountStatus, ClientKind
from shared.tokens import CachedTokenProvider, token_cache_secret_name
from tests.fakes import FakeIdentity, FakeSecretStore, make_services


@pytest.fixture
def services():
    return make_services()


def connected(services, kind: ClientKind = ClientKind.CONFIDENTIAL):
    identity: FakeIdentity = services.identity
    grant = (
        identity.redeem_device_flow({})
        if kind == ClientKind.PUBLIC
        else identity._issue(identity.next_user, ClientKind.CONFIDENTIAL)
    )
    return finish_connect(services, grant).account


def test_secret_names_are_key_vault_names_and_distinct_for_distinct_accounts():
    names = {token_cache_secret_name(i) for i in ("a.b", "a-b", "a_b", "ü.x", "x" * 300, "...")}
    assert len(names) == 6
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9-]{1,127}", name)


def test_the_same_account_always_gets_the_same_secret_name():
    account_id = "7d1a3a5e-0c4b-4d6e-8a0f-00000000ade1.8f5c1f3e-6a1b-4c2d-9e7f-00000000c0de"
    assert token_cache_secret_name(account_id) == token_cache_secret_name(account_id)
    assert token_cache_secret_name(account_id).startswith("tokencache-7d1a3a5e-0c4b")


def test_a_fresh_provider_refreshes_silently_and_writes_the_rotated_cache_back(services):
    account = connected(services)
    secrets: FakeSecretStore = services.secrets
    name = token_cache_secret_name(account.account_id)
    before = secrets.get(name)
    provider = CachedTokenProvider(services)  # another process: nothing cached in memory

    auth = provider.graph_auth(account)

    assert auth.account_id == account.account_id
    assert auth.access_token.startswith("at-")
    assert services.identity.silent_calls == 1
    assert secrets.get(name) != before  # the rotated refresh token was kept


def test_access_tokens_are_served_from_memory_until_shortly_before_expiry(services):
    account = connected(services)
    provider = CachedTokenProvider(services)
    first = provider.graph_auth(account)
    services.clock.advance(minutes=50)
    assert provider.graph_auth(account) == first
    assert services.identity.silent_calls == 1
    services.clock.advance(minutes=6)  # 56 min: within the 5-minute margin of the 60-minute token
    assert provider.graph_auth(account) != first
    assert services.identity.silent_calls == 2


def test_the_cache_is_not_written_back_when_msal_reports_no_change(services):
    account = connected(services)
    secrets: FakeSecretStore = services.secrets
    provider = CachedTokenProvider(services)
    original = services.identity.acquire_silent

    def unchanged(*args, **kwargs):
        grant = original(*args, **kwargs)
        from dataclasses import replace

        return replace(grant, cache_state=None)

    services.identity.acquire_silent = unchanged
    writes = secrets.writes
    provider.graph_auth(account)
    assert secrets.writes == writes


def test_invalid_grant_marks_the_account_reauth_required_and_keeps_it(services):
    account = connected(services)
    services.identity.revoke(account.account_id)
    provider = CachedTokenProvider(services)

    with pytest.raises(ReauthRequiredError) as raised:
        provider.graph_auth(account)

    assert raised.value.reason == "invalid_grant"
    stored = services.accounts.get(account.account_id)
    assert stored.status == AccountStatus.REAUTH_REQUIRED
    assert "invalid_grant" in stored.last_error


def test_a_missing_token_cache_means_sign_in_again(services):
    account = connected(services)
    services.secrets.delete(token_cache_secret_name(account.account_id))
    with pytest.raises(ReauthRequiredError):
        CachedTokenProvider(services).graph_auth(account)
    assert services.accounts.get(account.account_id).status == AccountStatus.REAUTH_REQUIRED


def test_a_disconnected_account_stays_disconnected_when_its_token_is_asked_for(services):
    account = connected(services)
    stored = services.accounts.get(account.account_id)
    stored.status = AccountStatus.DISCONNECTED
    services.accounts.save(stored)
    with pytest.raises(ReauthRequiredError):
        CachedTokenProvider(services).graph_auth(stored)
    assert services.accounts.get(account.account_id).status == AccountStatus.DISCONNECTED


def test_other_identity_errors_do_not_mark_the_account(services):
    account = connected(services)

    def refuse(*args, **kwargs):
        raise IdentityError("temporarily_unavailable")

    services.identity.acquire_silent = refuse
    with pytest.raises(IdentityError):
        CachedTokenProvider(services).graph_auth(account)
    assert services.accounts.get(account.account_id).status == AccountStatus.ACTIVE


def test_device_code_accounts_refresh_through_the_public_client(services):
    account = connected(services, ClientKind.PUBLIC)
    assert account.client_kind == ClientKind.PUBLIC
    assert CachedTokenProvider(services).graph_auth(account).access_token.startswith("at-")


def test_concurrent_callers_refresh_an_account_once(services):
    account = connected(services)
    provider = CachedTokenProvider(services)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def call():
        barrier.wait()
        results.append(provider.graph_auth(account).access_token)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Rotation would make every refresh after the first fail with invalid_grant.
    assert len(set(results)) == 1
    assert services.identity.silent_calls == 1
    assert services.accounts.get(account.account_id).status == AccountStatus.ACTIVE
