"""Fixtures: a Key Vault emulator per test on a free port, under a per-session local CA."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.keyvault import KeyVaultEmulator


class AnyTokenCredential:
    """The emulator accepts any well-formed bearer token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("test-token", int(time.time()) + 3600)


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("certs")


@pytest.fixture
def emulator(cert_dir: Path) -> Iterator[KeyVaultEmulator]:
    with KeyVaultEmulator(port=0, cert_dir=cert_dir) as running:
        yield running


@pytest.fixture
def client(emulator: KeyVaultEmulator) -> Iterator[Any]:
    from azure.keyvault.secrets import SecretClient

    secret_client = SecretClient(
        emulator.url,
        AnyTokenCredential(),
        verify_challenge_resource=False,
        connection_verify=str(emulator.ca_file),
        retry_total=0,
    )
    yield secret_client
    secret_client.close()

