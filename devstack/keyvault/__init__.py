"""Key Vault emulator of the devstack: the secrets REST API behind challenge authentication.

``KeyVaultEmulator`` serves it over HTTPS with a certificate of the local CA
(``devstack.certs``), so the real ``azure.keyvault.secrets.SecretClient`` talks to it
unchanged. ``python -m devstack.keyvault`` runs it alone.
"""

from __future__ import annotations

from devstack.keyvault.server import KeyVaultEmulator
from devstack.keyvault.store import SecretVault, VaultError

__all__ = ["KeyVaultEmulator", "SecretVault", "VaultError"]
