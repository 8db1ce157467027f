"""The Key Vault emulator as the real ``SecretClient`` (and a plain HTTP client) sees it."""

from __future__ import annotations

import http.client
import json
import logging
import re
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._shared.http_challenge import HttpChallenge

from devstack.keyvault import KeyVaultEmulator, SecretVault
from devstack.keyvault.server import DEFAULT_TENANT_ID

from .conftest import AnyTokenCredential

API = {"api-version": "2026-04-01"}
AUTH = {"Authorization": "Bearer test-token"}
VERSION = re.compile(r"^[0-9a-f]{32}$")


def wait_for(poller: Any) -> Any:
    poller.wait(timeout=10)
    assert poller.done(), "the SDK poller never saw the operation complete"
    return poller.result()


def test_each_set_makes_a_new_version_and_every_version_stays_readable(
    client: SecretClient, emulator: KeyVaultEmulator
) -> None:
    first = client.set_secret("account-1", "cache-one", content_type="application/json", tags={"kind": "msal"})
    second = client.set_secret("account-1", "cache-two")

    assert VERSION.match(first.properties.version or "")
    assert first.properties.version != second.properties.version
    assert first.id == f"{emulator.url}/secrets/account-1/{first.properties.version}"
    assert client.get_secret("account-1").value == "cache-two"
    old = client.get_secret("account-1", first.properties.version)
    assert (old.value, old.properties.content_type, old.properties.tags) == (
        "cache-one",
        "application/json",
        {"kind": "msal"},
    )
    versions = {p.version for p in client.list_properties_of_secret_versions("account-1")}
    assert versions == {first.properties.version, second.properties.version}
    assert second.properties.recovery_level == "Recoverable+Purgeable"
    assert second.properties.created_on is not None



def test_listing_versions_pages_through_every_version_once(client: SecretClient) -> None:
    written = [client.set_secret("many-versions", f"v{i}").properties.version for i in range(5)]

    pages = [list(page) for page in client.list_properties_of_secret_versions("many-versions", max_page_size=2).by_page()]

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [p.version for page in pages for p in page] == written

def test_the_latest_version_is_also_addressed_with_a_trailing_slash(emulator: KeyVaultEmulator) -> None:
    url = f"{emulator.url}/secrets/trailing"
    requests.put(url, params=API, headers=AUTH, json={"value": "v"}, verify=emulator.ca_file, timeout=5)

    response = requests.get(url + "/", params=API, headers=AUTH, verify=emulator.ca_file, timeout=5)

    assert response.status_code == 200
    assert response.json()["value"] == "v"


def test_listing_secrets_follows_next_links_page_by_page(client: SecretClient, emulator: KeyVaultEmulator) -> None:
    for i in range(7):
        client.set_secret(f"listed-{i}", "x")

    pages = [list(page) for page in client.list_properties_of_secrets(max_page_size=3).by_page()]

    assert [len(page) for page in pages] == [3, 3, 1]
    assert sorted(p.name for page in pages for p in page) == [f"listed-{i}" for i in range(7)]
    raw = requests.get(
        f"{emulator.url}/secrets", params={**API, "maxresults": "3"}, headers=AUTH, verify=emulator.ca_file, timeout=5
    ).json()
    assert raw["nextLink"].startswith(f"{emulator.url}/secrets?")
    assert "value" not in raw["value"][0]  # a listing never carries values


def test_updating_properties_changes_them_and_a_disabled_secret_cannot_be_read(client: SecretClient) -> None:
    client.set_secret("updated", "v1")

    properties = client.update_secret_properties("updated", content_type="text/plain", tags={"a": "b"}, enabled=False)

    assert (properties.content_type, properties.tags, properties.enabled) == ("text/plain", {"a": "b"}, False)
    with pytest.raises(HttpResponseError) as refused:
        client.get_secret("updated")
    assert refused.value.status_code == 403
    client.update_secret_properties("updated", properties.version, enabled=True)
    assert client.get_secret("updated").value == "v1"


def test_delete_get_deleted_recover_and_purge_complete_through_the_sdk_pollers(client: SecretClient) -> None:
    client.set_secret("doomed", "v1")

    deleted = wait_for(client.begin_delete_secret("doomed"))

    assert deleted.recovery_id.endswith("/deletedsecrets/doomed")
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date > deleted.deleted_date
    assert client.get_deleted_secret("doomed").name == "doomed"
    assert [s.name for s in client.list_deleted_secrets()] == ["doomed"]
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("doomed")

    recovered = wait_for(client.begin_recover_deleted_secret("doomed"))

    assert recovered.name == "doomed"
    assert client.get_secret("doomed").value == "v1"
    assert list(client.list_deleted_secrets()) == []

    wait_for(client.begin_delete_secret("doomed"))
    client.purge_deleted_secret("doomed")

    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret("doomed")
    assert client.set_secret("doomed", "fresh").value == "fresh"
    assert len(list(client.list_properties_of_secret_versions("doomed"))) == 1


def test_setting_a_soft_deleted_name_is_a_conflict_until_it_is_recovered(client: SecretClient) -> None:
    client.set_secret("reconnected", "old-cache")
    wait_for(client.begin_delete_secret("reconnected"))

    with pytest.raises(ResourceExistsError) as conflict:
        client.set_secret("reconnected", "new-cache")

    assert conflict.value.status_code == 409
    assert conflict.value.error is not None
    assert conflict.value.error.code == "Conflict"
    assert conflict.value.error.innererror == {"code": "ObjectIsDeletedButRecoverable"}


def test_a_missing_secret_is_secret_not_found(client: SecretClient, emulator: KeyVaultEmulator) -> None:
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_secret("never-set")
    assert missing.value.error is not None and missing.value.error.code == "SecretNotFound"

    response = requests.get(
        f"{emulator.url}/secrets/never-set/{'0' * 32}", params=API, headers=AUTH, verify=emulator.ca_file, timeout=5
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "SecretNotFound"


@pytest.mark.parametrize("name", ["under_score", "dot.ted", "x" * 128])
def test_an_invalid_name_is_bad_parameter(emulator: KeyVaultEmulator, name: str) -> None:
    response = requests.put(
        f"{emulator.url}/secrets/{name}", params=API, headers=AUTH, json={"value": "v"},
        verify=emulator.ca_file, timeout=5,
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadParameter"


def test_a_value_over_25_kb_is_refused(client: SecretClient) -> None:
    client.set_secret("big", "x" * 25600)  # exactly the limit is fine

    with pytest.raises(HttpResponseError) as refused:
        client.set_secret("big", "x" * 25601)

    assert refused.value.status_code == 400
    assert client.get_secret("big").value == "x" * 25600


def test_a_request_without_a_token_gets_the_key_vault_challenge(emulator: KeyVaultEmulator) -> None:
    response = requests.get(f"{emulator.url}/secrets/anything", params=API, verify=emulator.ca_file, timeout=5)

    assert response.status_code == 401
    header = response.headers["WWW-Authenticate"]
    assert header == (
        f'Bearer authorization="https://login.microsoftonline.com/{DEFAULT_TENANT_ID}", '
        'resource="https://vault.azure.net"'
    )
    challenge = HttpChallenge(response.url, header)  # what azure-keyvault's policy parses
    assert challenge.tenant_id == DEFAULT_TENANT_ID
    assert challenge.get_resource() == "https://vault.azure.net"
    assert response.json()["error"]["code"] == "Unauthorized"

    malformed = requests.get(
        f"{emulator.url}/secrets", params=API, headers={"Authorization": "Bearer"}, verify=emulator.ca_file, timeout=5
    )
    assert malformed.status_code == 401


def test_requests_share_one_kept_alive_connection(emulator: KeyVaultEmulator) -> None:
    context = ssl.create_default_context(cafile=str(emulator.ca_file))
    connection = http.client.HTTPSConnection("127.0.0.1", emulator.port, context=context, timeout=5)
    try:
        statuses = []
        for _ in range(3):
            connection.request("GET", "/secrets?api-version=7.6", headers=AUTH)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        connection.close()

    assert statuses == [200, 200, 200]


def test_secrets_and_their_deleted_state_survive_a_restart(cert_dir: Path, tmp_path: Path) -> None:
    data_file = tmp_path / "keyvault.json"
    with KeyVaultEmulator(cert_dir=cert_dir, data_file=data_file) as first:
        client = SecretClient(
            first.url, AnyTokenCredential(), verify_challenge_resource=False, connection_verify=str(first.ca_file)
        )
        client.set_secret("kept", "v1")
        client.set_secret("kept", "v2")
        client.set_secret("gone", "v")
        wait_for(client.begin_delete_secret("gone"))
        client.close()

    assert stat.S_IMODE(data_file.stat().st_mode) == 0o600
    with KeyVaultEmulator(cert_dir=cert_dir, data_file=data_file) as second:
        client = SecretClient(
            second.url, AnyTokenCredential(), verify_challenge_resource=False, connection_verify=str(second.ca_file)
        )
        assert client.get_secret("kept").value == "v2"
        assert len(list(client.list_properties_of_secret_versions("kept"))) == 2
        assert client.get_deleted_secret("gone").name == "gone"
        client.close()


def test_secret_values_never_reach_the_log(
    client: SecretClient, emulator: KeyVaultEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="devstack.keyvault"):
        client.set_secret("logged", "value-that-must-stay-private")
        client.get_secret("logged")

    assert "logged" in caplog.text
    assert "value-that-must-stay-private" not in caplog.text


def test_a_deleted_secret_is_purged_when_its_retention_ends(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    vault = SecretVault(tmp_path / "vault.json", retention_days=7, clock=lambda: now[0])
    vault.set("short-lived", {"value": "v"})
    vault.delete("short-lived")

    now[0] += 7 * 86400 - 1
    assert vault.get_deleted("short-lived").name == "short-lived"
    now[0] += 1
    assert vault.list_deleted() == []
    assert json.loads((tmp_path / "vault.json").read_text())["secrets"] == []


def test_names_are_case_insensitive_and_keep_their_first_spelling(client: SecretClient) -> None:
    client.set_secret("Mixed-Case", "v1")
    client.set_secret("mixed-case", "v2")

    secret = client.get_secret("MIXED-CASE")

    assert (secret.name, secret.value) == ("Mixed-Case", "v2")


def test_concurrent_writers_each_get_their_own_version(emulator: KeyVaultEmulator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def write(i: int) -> int:
        with requests.Session() as session:
            return session.put(
                f"{emulator.url}/secrets/contended", params=API, headers=AUTH, json={"value": f"v{i}"},
                verify=emulator.ca_file, timeout=10,
            ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(write, range(24)))

    assert statuses == [200] * 24
    versions = requests.get(
        f"{emulator.url}/secrets/contended/versions", params=API, headers=AUTH, verify=emulator.ca_file, timeout=5
    ).json()
    assert len(versions["value"]) == 24
    assert versions["nextLink"] is None


def test_an_oversized_request_body_is_413_and_a_missing_api_version_is_400(emulator: KeyVaultEmulator) -> None:
    too_big = requests.put(
        f"{emulator.url}/secrets/huge", params=API, headers=AUTH, data=b"x" * (300 * 1024),
        verify=emulator.ca_file, timeout=10,
    )
    no_version = requests.get(f"{emulator.url}/secrets", headers=AUTH, verify=emulator.ca_file, timeout=5)

    assert too_big.status_code == 413
    assert no_version.status_code == 400 and no_version.json()["error"]["code"] == "BadParameter"


def test_run_alone_it_prints_its_url_and_ca_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    env = {
        **os.environ,
        "DEVSTACK_CERT_DIR": str(tmp_path / "certs"),
        "KEYVAULT_PORT": "0",
        "KEYVAULT_DATA_FILE": str(tmp_path / "keyvault.json"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.keyvault"],
        cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[-1]
        ca_file = process.stdout.readline().split()[-1]
        answer = requests.get(f"{url}/secrets", params=API, verify=ca_file, timeout=5)
        assert answer.status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
    assert code == 0


def test_activation_and_expiry_dates_are_kept_and_bad_ones_leave_no_trace(
    client: SecretClient, emulator: KeyVaultEmulator
) -> None:
    import datetime as dt

    not_before = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    expires = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    client.set_secret("dated", "v", not_before=not_before, expires_on=expires)

    properties = client.get_secret("dated").properties
    assert (properties.not_before, properties.expires_on) == (not_before, expires)

    refused = requests.put(
        f"{emulator.url}/secrets/badly-dated", params=API, headers=AUTH,
        json={"value": "v", "attributes": {"nbf": "soon"}}, verify=emulator.ca_file, timeout=5,
    )
    assert refused.status_code == 400
    assert [p.name for p in client.list_properties_of_secrets()] == ["dated"]
