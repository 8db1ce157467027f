"""What more than one benchmark needs from a running local stack."""

from __future__ import annotations

import json

from devstack.stack import LocalStack
from shared.adapters.keyvault import KeyVaultSecretStore
from shared.tokens import token_cache_secret_name


def access_token(stack: LocalStack, account_id: str) -> str:
    """The account's access token, from its MSAL cache in the Key Vault emulator."""
    vault = KeyVaultSecretStore(stack.keyvault_url, ca_bundle=str(stack.ca_file))
    cache = json.loads(vault.get(token_cache_secret_name(account_id)) or "{}")
    tokens = sorted(cache.get("AccessToken", {}).values(), key=lambda t: int(t.get("expires_on", 0)))
    if not tokens:
        raise SystemExit("no access token in the account's cache")
    return str(tokens[-1]["secret"])
