"""The MSAL adapter without a network: how MSAL's answers are translated, how the pooled
applications get the account's cache and give it back, how the application is built."""

from __future__ import annotations

import threading
import time
from typing import Any

import msal
import pytest

from shared.adapters.identity import MsalIdentity
from shared.errors import AuthFlowError, IdentityError, ReauthRequiredError
from shared.models import ClientKind
from tests.fakes import make_settings

HOME = "oid-1.tid-1"
CLAIMS = {"oid": "oid-1", "tid": "tid-1", "preferred_username": "adele@contoso.test", "name": "Adele"}
TOKEN = {"access_token": "at", "expires_in": 3600, "id_token_claims": CLAIMS}


class FakeApp:
    """Stands in for an MSAL client application; ``answer`` is what MSAL would return."""

    def __init__(self, answer: Any = None, error: Exception | None = None, *, refreshes: bool = True) -> None:
        self.token_cache: Any = None
        self.answer = answer
        self.error = error
        self.refreshes = refreshes  # False: the token came from MSAL's cache, nothing changed
        self.busy = threading.Lock()
        self.overlaps = 0

    def _call(self) -> Any:
        if not self.busy.acquire(blocking=False):
            self.overlaps += 1
            return self.answer
        try:
            time.sleep(0.01)
            if self.error is not None:
                raise self.error
            if self.refreshes and isinstance(self.answer, dict) and "access_token" in self.answer:
                self.token_cache.has_state_changed = True
            return self.answer
        finally:
            self.busy.release()

    def initiate_auth_code_flow(self, scopes: list[str], **kwargs: Any) -> dict[str, Any]:
        return {"state": "s", "auth_uri": "https://login.test/authorize", "scopes": scopes, **kwargs}

    def acquire_token_by_auth_code_flow(self, flow: dict[str, Any], response: dict[str, str]) -> Any:
        return self._call()

    def acquire_token_silent_with_error(self, scopes: list[str], account: dict[str, Any]) -> Any:
        return self._call()

    def get_accounts(self) -> list[dict[str, Any]]:
        return [{"home_account_id": HOME, "username": "adele@contoso.test"}]


class Cache:
    def __init__(self) -> None:
        self.has_state_changed = False

    def serialize(self) -> str:
        return '{"AccessToken": {}}'

    def deserialize(self, state: str) -> None:
        if not state.startswith("{"):
            raise ValueError("not JSON")


def identity_with(app: FakeApp, monkeypatch: pytest.MonkeyPatch) -> MsalIdentity:
    monkeypatch.setattr(msal, "SerializableTokenCache", Cache)
    identity = MsalIdentity(make_settings())
    monkeypatch.setattr(identity, "_build", lambda kind: app)
    return identity


def silent(identity: MsalIdentity) -> Any:
    return identity.acquire_silent("{}", HOME, ("Mail.Read",), ClientKind.CONFIDENTIAL)


def test_the_flow_asks_for_form_post_and_passes_the_login_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    flow = identity_with(FakeApp(), monkeypatch).start_auth_code_flow(
        ("User.Read",), "https://c.test/api/auth/callback", "adele@contoso.test"
    )
    assert flow["response_mode"] == "form_post"
    assert flow["login_hint"] == "adele@contoso.test"
    assert flow["redirect_uri"] == "https://c.test/api/auth/callback"


def test_a_redeemed_code_gives_the_account_and_its_new_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    grant = identity_with(FakeApp(TOKEN), monkeypatch).redeem_auth_code({}, {})
    assert (grant.home_account_id, grant.object_id, grant.tenant_id) == (HOME, "oid-1", "tid-1")
    assert grant.username == "adele@contoso.test" and grant.display_name == "Adele"
    assert grant.cache_state == '{"AccessToken": {}}'


def test_msals_state_check_becomes_an_auth_flow_error(monkeypatch: pytest.MonkeyPatch) -> None:
    identity = identity_with(FakeApp(error=ValueError("state mismatch")), monkeypatch)
    with pytest.raises(AuthFlowError) as raised:
        identity.redeem_auth_code({}, {})
    assert raised.value.error == "state_mismatch"


@pytest.mark.parametrize(
    ("error", "expected"),
    [("invalid_grant", AuthFlowError), ("access_denied", AuthFlowError), ("invalid_client", IdentityError)],
)
def test_redemption_errors_are_told_apart(
    monkeypatch: pytest.MonkeyPatch, error: str, expected: type
) -> None:
    answer = {"error": error, "error_description": "AADSTS70000: nope.\nTrace ID: 1"}
    with pytest.raises(expected) as raised:
        identity_with(FakeApp(answer), monkeypatch).redeem_auth_code({}, {})
    assert "Trace ID" not in str(getattr(raised.value, "description", ""))


def test_a_silent_token_from_msals_cache_writes_nothing_back(monkeypatch: pytest.MonkeyPatch) -> None:
    grant = silent(identity_with(FakeApp({**TOKEN, "token_source": "cache"}, refreshes=False), monkeypatch))
    assert grant.access_token == "at" and grant.cache_state is None


def test_a_refresh_writes_the_cache_back(monkeypatch: pytest.MonkeyPatch) -> None:
    assert silent(identity_with(FakeApp(TOKEN), monkeypatch)).cache_state is not None


@pytest.mark.parametrize("answer", [None, {"error": "invalid_grant"}, {"error": "interaction_required"}])
def test_a_dead_refresh_token_needs_a_new_sign_in(monkeypatch: pytest.MonkeyPatch, answer: Any) -> None:
    with pytest.raises(ReauthRequiredError):
        silent(identity_with(FakeApp(answer), monkeypatch))


def test_an_unreadable_cache_needs_a_new_sign_in(monkeypatch: pytest.MonkeyPatch) -> None:
    identity = identity_with(FakeApp(TOKEN), monkeypatch)
    with pytest.raises(ReauthRequiredError) as raised:
        identity.acquire_silent("garbage", HOME, ("Mail.Read",), ClientKind.CONFIDENTIAL)
    assert raised.value.reason == "unreadable_token_cache"


def test_other_refresh_errors_are_identity_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(IdentityError) as raised:
        silent(identity_with(FakeApp({"error": "temporarily_unavailable"}), monkeypatch))
    assert raised.value.error == "temporarily_unavailable"


def test_a_pooled_application_serves_one_caller_at_a_time_and_keeps_no_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(msal, "SerializableTokenCache", Cache)
    built: list[FakeApp] = []

    def build(kind: ClientKind) -> FakeApp:
        app = FakeApp(TOKEN)
        built.append(app)
        return app

    identity = MsalIdentity(make_settings(), pool_size=3)
    monkeypatch.setattr(identity, "_build", build)
    threads = [threading.Thread(target=silent, args=(identity,)) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert 1 <= len(built) <= 3
    assert sum(app.overlaps for app in built) == 0
    assert all(isinstance(app.token_cache, msal.TokenCache) for app in built)  # the account's cache is gone


@pytest.mark.parametrize(
    ("host", "discovery"),
    [("https://login.microsoftonline.com", None), ("https://127.0.0.1:8444", False)],
)
def test_instance_discovery_is_off_only_for_authorities_not_microsofts(
    monkeypatch: pytest.MonkeyPatch, host: str, discovery: bool | None
) -> None:
    seen: dict[str, Any] = {}

    def capture(client_id: str, **kwargs: Any) -> object:
        seen.update(kwargs, client_id=client_id)
        return object()

    monkeypatch.setattr(msal, "ConfidentialClientApplication", capture)
    MsalIdentity(make_settings(MICROSOFT_AUTHORITY_HOST=host))._build(ClientKind.CONFIDENTIAL)
    assert seen["authority"] == f"{host}/common"
    assert seen.get("instance_discovery") is discovery
    assert seen["client_credential"] == "test-client-secret"


def test_device_code_accounts_use_the_public_client_without_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def capture(client_id: str, **kwargs: Any) -> object:
        seen.update(kwargs)
        return object()

    monkeypatch.setattr(msal, "PublicClientApplication", capture)
    MsalIdentity(make_settings())._build(ClientKind.PUBLIC)
    assert "client_credential" not in seen


def test_an_unreachable_identity_platform_is_an_identity_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    identity = identity_with(FakeApp(error=requests.ConnectionError("refused")), monkeypatch)
    with pytest.raises(IdentityError) as raised:
        silent(identity)
    assert raised.value.error == "identity_unreachable"


def test_a_failed_discovery_is_an_identity_error_and_is_tried_again_next_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import requests

    monkeypatch.setattr(msal, "SerializableTokenCache", Cache)
    identity = MsalIdentity(make_settings())
    attempts: list[int] = []

    def build(kind: ClientKind) -> FakeApp:
        attempts.append(1)
        if len(attempts) == 1:
            raise requests.ConnectionError("discovery refused")
        return FakeApp(TOKEN)

    monkeypatch.setattr(identity, "_build", build)
    with pytest.raises(IdentityError) as raised:
        silent(identity)
    assert raised.value.error == "authority_unavailable"
    assert silent(identity).access_token == "at"
