"""``KeyVaultSecretStore`` against the emulator: the SecretStore the connector relies on."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.keyvault.secrets import SecretClient

from devstack.keyvault import KeyVaultEmulator
from shared.adapters.keyvault import KeyVaultSecretStore, LocalStaticTokenCredential, is_loopback_url
from shared.errors import (
    ConfigurationError,
    InvalidInputError,
    PersistenceError,
    ThrottledError,
    UpstreamError,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(emulator: KeyVaultEmulator) -> Iterator[KeyVaultSecretStore]:
    secret_store = KeyVaultSecretStore(emulator.url, ca_bundle=str(emulator.ca_file))
    yield secret_store
    secret_store.close()


def test_a_value_set_is_read_back_and_gone_after_delete(store: KeyVaultSecretStore) -> None:
    store.set("account-42", '{"AccessToken": {}}')
    assert store.get("account-42") == '{"AccessToken": {}}'

    store.set("account-42", '{"RefreshToken": {}}')
    assert store.get("account-42") == '{"RefreshToken": {}}'

    store.delete("account-42")
    assert store.get("account-42") is None


def test_a_missing_secret_reads_as_none(store: KeyVaultSecretStore) -> None:
    assert store.get("no-such-account") is None


def test_delete_is_idempotent(store: KeyVaultSecretStore) -> None:
    store.delete("never-existed")
    store.set("twice-deleted", "v")
    store.delete("twice-deleted")
    store.delete("twice-deleted")
    assert store.get("twice-deleted") is None


def test_reconnecting_after_a_disconnect_recovers_the_soft_deleted_secret(
    store: KeyVaultSecretStore, client: SecretClient
) -> None:
    store.set("account-7", "first-connection")
    store.delete("account-7")

    store.set("account-7", "second-connection")

    assert store.get("account-7") == "second-connection"
    assert list(client.list_deleted_secrets()) == []
    # Recovered, not purged: the old version is still there, under the new one.
    assert len(list(client.list_properties_of_secret_versions("account-7"))) == 2


def test_a_write_back_does_not_recover_a_secret_a_disconnect_deleted(
    store: KeyVaultSecretStore, client: SecretClient
) -> None:
    from shared.errors import NotFoundError

    store.set("account-8", "cache-with-refresh-token")
    store.delete("account-8")

    with pytest.raises(NotFoundError):
        store.set("account-8", "refreshed-cache", recover=False)

    assert store.get("account-8") is None
    assert [d.name for d in client.list_deleted_secrets()] == ["account-8"]


def test_errors_name_the_secret_but_never_its_value(store: KeyVaultSecretStore) -> None:
    value = "too-big-" + "x" * 25600
    with pytest.raises(PersistenceError) as refused:
        store.set("oversized", value)
    assert "oversized" in str(refused.value)
    assert "xxxx" not in str(refused.value)

    with pytest.raises(InvalidInputError):
        store.get("not_a_valid_name")


def test_a_refusal_by_the_vault_becomes_a_connector_error(
    store: KeyVaultSecretStore, client: SecretClient
) -> None:
    store.set("switched-off", "private-value")
    client.update_secret_properties("switched-off", enabled=False)

    with pytest.raises(UpstreamError) as refused:
        store.get("switched-off")

    assert "403" in str(refused.value) and "private-value" not in str(refused.value)
    assert refused.value.transient is False


def test_health_check_passes_while_the_vault_answers_and_fails_fast_once_it_is_down(
    cert_dir: Path,
) -> None:
    emulator = KeyVaultEmulator(cert_dir=cert_dir).start()
    store = KeyVaultSecretStore(emulator.url, ca_bundle=str(emulator.ca_file))
    try:
        store.check()
        emulator.stop()

        started = time.monotonic()
        with pytest.raises(UpstreamError):
            store.check()
        assert time.monotonic() - started < 10
    finally:
        emulator.stop()
        store.close()


def test_the_ca_bundle_can_come_from_the_environment(
    emulator: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_file))
    store = KeyVaultSecretStore(emulator.url)
    try:
        store.set("from-env", "v")
        assert store.get("from-env") == "v"
    finally:
        store.close()


def test_only_loopback_vaults_get_the_local_credential() -> None:
    assert is_loopback_url("https://127.0.0.1:8443")
    assert is_loopback_url("https://localhost:8443/")
    assert is_loopback_url("https://[::1]:8443")
    assert not is_loopback_url("https://contoso.vault.azure.net")
    assert KeyVaultSecretStore("https://127.0.0.1:8443").is_local
    assert not KeyVaultSecretStore("https://contoso.vault.azure.net").is_local
    token = LocalStaticTokenCredential().get_token("https://vault.azure.net/.default")
    assert token.token and token.expires_on > time.time()


def test_a_vault_url_must_be_https() -> None:
    with pytest.raises(ConfigurationError):
        KeyVaultSecretStore("http://127.0.0.1:8443")


def test_importing_the_adapter_does_not_load_the_azure_sdks() -> None:
    probe = (
        "import json, sys; import shared.adapters.keyvault; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('azure'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30, check=True
    )

    loaded = json.loads(result.stdout)
    assert not [m for m in loaded if m.startswith(("azure.keyvault", "azure.identity", "azure.core"))], loaded


class _Response:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.headers = headers
        self.reason = "refused"

    def text(self) -> str:
        return ""


@pytest.mark.parametrize(
    ("status", "headers", "expected", "transient"),
    [
        (429, {"Retry-After": "7"}, ThrottledError, True),
        (503, {}, UpstreamError, True),
        (403, {}, UpstreamError, False),
        (400, {}, PersistenceError, None),
    ],
)
def test_vault_answers_translate_once_into_connector_errors(
    status: int, headers: dict[str, str], expected: type[Exception], transient: bool | None
) -> None:
    from azure.core.exceptions import HttpResponseError

    from shared.adapters.keyvault import _raise_upstream

    error = HttpResponseError(message="refused")
    error.status_code = status
    error.response = _Response(status, headers)  # type: ignore[assignment]

    with pytest.raises(expected) as translated:
        _raise_upstream("set", "account-9", error)

    assert type(translated.value) is expected
    assert "account-9" in str(translated.value) and str(status) in str(translated.value)
    if isinstance(translated.value, ThrottledError):
        assert translated.value.retry_after == 7.0
    if transient is not None:
        assert getattr(translated.value, "transient", None) is transient


class _ConflictResponse(_Response):
    def __init__(self, inner_code: str) -> None:
        super().__init__(409, {})
        self.body = json.dumps({"error": {"code": "Conflict", "message": "m", "innererror": {"code": inner_code}}})

    def text(self, encoding: str | None = None) -> str:  # type: ignore[override]
        return self.body


class _VaultStillDeleting:
    """A SecretClient whose vault needs a moment to finish a delete before a set succeeds."""

    def __init__(self, busy_answers: int) -> None:
        self.busy_answers = busy_answers
        self.written: list[str] = []

    def set_secret(self, name: str, value: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        if self.busy_answers:
            self.busy_answers -= 1
            raise ResourceExistsError(response=_ConflictResponse("ObjectIsBeingDeleted"))
        self.written.append(value)


def test_a_set_racing_a_delete_still_under_way_waits_and_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.adapters.keyvault as adapter

    monkeypatch.setattr(adapter, "TRANSITION_BACKOFF_SECONDS", 0.01)
    vault = _VaultStillDeleting(busy_answers=2)
    store = KeyVaultSecretStore("https://contoso.vault.azure.net")
    store._client = vault  # type: ignore[assignment]

    store.set("account-3", "v")

    assert vault.written == ["v"]


def test_a_delete_that_never_completes_is_a_transient_upstream_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.adapters.keyvault as adapter

    monkeypatch.setattr(adapter, "TRANSITION_BACKOFF_SECONDS", 0.01)
    store = KeyVaultSecretStore("https://contoso.vault.azure.net")
    store._client = _VaultStillDeleting(busy_answers=100)  # type: ignore[assignment]

    with pytest.raises(UpstreamError) as failed:
        store.set("account-3", "private-value")

    assert failed.value.transient is True
    assert "ObjectIsBeingDeleted" in str(failed.value) and "private-value" not in str(failed.value)
