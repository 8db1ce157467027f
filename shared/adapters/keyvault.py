"""Azure Key Vault adapter of ``SecretStore``: one secret per account holds its token cache.

``KeyVaultSecretStore`` is what ``shared.bootstrap`` builds from ``KEY_VAULT_URL``:

- In Azure it authenticates with ``DefaultAzureCredential`` (the Function App's managed
  identity; it needs get, set, delete, recover and list on secrets, e.g. the role
  "Key Vault Secrets Officer").
- When the vault URL is on loopback (127.0.0.1, localhost, ::1) it is the devstack
  emulator (``devstack.keyvault``): a static local token answers the challenge, and the
  challenge's resource (``vault.azure.net``) is not checked against the host
  (``verify_challenge_resource=False``, docs/graph-notes.md "Key Vault").
- TLS trust comes from ``ca_bundle`` when given, else from the environment
  (``REQUESTS_CA_BUNDLE`` points at the devstack CA locally).

Soft delete is always on in Key Vault, so a disconnect-then-reconnect of one account
finds its secret "deleted but recoverable" (409 ``ObjectIsDeletedButRecoverable``):
``set`` recovers it, waits for the recovery to complete, and writes the new version. A
token refresh's write-back passes ``recover=False``: a secret deleted by a disconnect
stays deleted (``NotFoundError``) instead of coming back with its refresh token.

The Azure SDK modules are imported inside the methods that use them, never at module
import: the webhook's cold path imports ``shared`` but must not pay for them. Errors come
out as ``shared.errors`` types whose messages name the secret and the Key Vault error
code, never the value.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from shared.errors import (
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
    PersistenceError,
    ThrottledError,
    UpstreamError,
)

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, TokenCredential
    from azure.core.exceptions import HttpResponseError
    from azure.keyvault.secrets import SecretClient

log = logging.getLogger(__name__)

# Key Vault's limits (https://learn.microsoft.com/azure/key-vault/secrets/about-secrets).
_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
MAX_VALUE_BYTES = 25 * 1024

# 409 inner codes: the name is soft-deleted, or a delete / recovery is still under way.
_DELETED_BUT_RECOVERABLE = "ObjectIsDeletedButRecoverable"
_IN_TRANSITION = {"ObjectIsBeingDeleted", "ObjectIsBeingRecovered"}

HEALTH_PROBE_NAME = "connector-health-probe"
RECOVERY_TIMEOUT_SECONDS = 60.0
SET_ATTEMPTS = 5
TRANSITION_BACKOFF_SECONDS = 1.0
_LOOPBACK_NAMES = {"localhost"}
_LOCAL_TOKEN = "devstack-local-token"  # noqa: S105 - the emulator accepts any token


def is_loopback_url(url: str) -> bool:
    """True when ``url`` points at this machine: the devstack emulator, not Azure."""
    host = (urlsplit(url).hostname or "").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalStaticTokenCredential:
    """A ``TokenCredential`` for the devstack emulator, which accepts any bearer token.

    Only ever used for a loopback vault URL; it reaches no identity service.
    """

    def __init__(self, token: str = _LOCAL_TOKEN, lifetime_seconds: int = 3600) -> None:
        self._token = token
        self._lifetime = lifetime_seconds

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + self._lifetime)

    def close(self) -> None:
        """Nothing to release; part of the credential protocol."""


def _error_code(error: HttpResponseError) -> tuple[str, str]:
    """(code, inner code) of a Key Vault error document; empty strings when absent."""
    odata = getattr(error, "error", None)
    code = getattr(odata, "code", None) or ""
    inner = getattr(odata, "innererror", None) or {}
    inner_code = inner.get("code", "") if isinstance(inner, dict) else ""
    return str(code), str(inner_code)


def _retry_after(error: HttpResponseError) -> float:
    response = getattr(error, "response", None)
    raw = response.headers.get("Retry-After") if response is not None else None
    try:
        return max(float(raw), 0.0) if raw is not None else 5.0
    except ValueError:
        return 5.0


class KeyVaultSecretStore:
    """``SecretStore`` and ``HealthProbe`` over one Key Vault, with one reused ``SecretClient``."""

    def __init__(
        self,
        vault_url: str,
        credential: TokenCredential | None = None,
        *,
        ca_bundle: str | None = None,
    ) -> None:
        parts = urlsplit(vault_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigurationError("setting KEY_VAULT_URL must be an https URL")
        self.vault_url = vault_url.rstrip("/")
        self.is_local = is_loopback_url(vault_url)
        self._credential = credential
        self._ca_bundle = ca_bundle
        self._client: SecretClient | None = None
        self._owned_credential: Any = None  # built here, so closed here
        self._client_lock = threading.Lock()

    # -- SecretStore ---------------------------------------------------------------------
    def get(self, name: str) -> str | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        _check_name(name)
        try:
            return self._secret_client().get_secret(name).value
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            _raise_upstream("get", name, error)

    def set(self, name: str, value: str, *, recover: bool = True) -> None:
        from azure.core.exceptions import AzureError, ResourceExistsError

        _check_name(name)
        size = len(value.encode("utf-8"))
        if size > MAX_VALUE_BYTES:
            raise PersistenceError(
                f"secret {name}: a value of {size} bytes is over Key Vault's {MAX_VALUE_BYTES}-byte limit"
            )
        client = self._secret_client()
        for attempt in range(1, SET_ATTEMPTS + 1):
            try:
                client.set_secret(name, value)
                return
            except ResourceExistsError as conflict:
                code, inner = _error_code(conflict)
                if attempt == SET_ATTEMPTS:
                    # Still deleting or recovering: worth another try later, so transient.
                    raise UpstreamError(
                        f"Key Vault set of secret {name}: still 409 {inner or code} after {attempt} attempts"
                    ) from None
                if inner == _DELETED_BUT_RECOVERABLE or code == _DELETED_BUT_RECOVERABLE:
                    if not recover:
                        raise NotFoundError(f"Key Vault secret {name} is deleted; not recovered") from None
                    log.info("secret %s is soft-deleted: recovering it before writing", name)
                    self._recover(name)
                elif inner in _IN_TRANSITION or code in _IN_TRANSITION:
                    time.sleep(TRANSITION_BACKOFF_SECONDS * attempt)
                else:
                    _raise_upstream("set", name, conflict)
            except AzureError as error:
                _raise_upstream("set", name, error)

    def delete(self, name: str) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        _check_name(name)
        try:
            # Not waiting on the poller: deletion completes in the vault on its own, and a
            # later set of the same name copes with a delete still under way.
            self._secret_client().begin_delete_secret(name)
        except ResourceNotFoundError:
            return
        except AzureError as error:
            _raise_upstream("delete", name, error)

    # -- HealthProbe ---------------------------------------------------------------------
    def check(self) -> None:
        """Read a sentinel secret: 404 proves the vault answers and our token is accepted."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            self._secret_client().get_secret(HEALTH_PROBE_NAME, retry_total=0)
        except ResourceNotFoundError:
            return
        except AzureError as error:
            _raise_upstream("health check", HEALTH_PROBE_NAME, error)

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
            credential, self._owned_credential = self._owned_credential, None
        if client is not None:
            client.close()
        if credential is not None:
            credential.close()

    # -- internals -----------------------------------------------------------------------
    def _recover(self, name: str) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            poller = self._secret_client().begin_recover_deleted_secret(name)
            poller.wait(timeout=RECOVERY_TIMEOUT_SECONDS)
        except ResourceNotFoundError:
            return  # recovered (or purged) by a concurrent writer meanwhile: set again
        except AzureError as error:
            _raise_upstream("recovery", name, error)
        if not poller.done():
            raise UpstreamError(f"Key Vault recovery of secret {name} did not complete in time")

    def _secret_client(self) -> SecretClient:
        client = self._client
        if client is not None:
            return client
        with self._client_lock:
            if self._client is None:
                self._client = self._build_client()
            return self._client

    def _build_client(self) -> SecretClient:
        from azure.keyvault.secrets import SecretClient

        credential = self._credential
        if credential is None:
            if self.is_local:
                credential = LocalStaticTokenCredential()
            else:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            self._owned_credential = credential
        options: dict[str, Any] = {
            # A dead vault should fail a request within seconds, not minutes of retries.
            "connection_timeout": 5,
            "read_timeout": 30,
            "retry_total": 3,
        }
        if self.is_local:
            options["verify_challenge_resource"] = False
        if self._ca_bundle is not None:
            options["connection_verify"] = self._ca_bundle
        return SecretClient(self.vault_url, credential, **options)


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise InvalidInputError("a Key Vault secret name is 1-127 letters, digits and dashes")


def _raise_upstream(operation: str, name: str, error: Exception) -> NoReturn:
    """Translate an Azure SDK error once, here; the message never holds a value or token."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    if isinstance(error, HttpResponseError) and error.status_code is not None:
        status = error.status_code
        code, inner = _error_code(error)
        detail = f"Key Vault {operation} of secret {name} failed: {status} {code or 'error'}"
        if inner:
            detail += f" ({inner})"
        response: Any = error.response
        if status == 429 or (status == 503 and response is not None and "Retry-After" in response.headers):
            raise ThrottledError(detail, _retry_after(error)) from None
        if operation == "set" and 400 <= status < 500 and status not in (401, 403, 408):
            raise PersistenceError(detail) from None
        upstream = UpstreamError(detail)
        upstream.transient = status >= 500 or status == 408
        raise upstream from None
    if isinstance(error, ClientAuthenticationError):
        upstream = UpstreamError(f"Key Vault {operation} of secret {name}: no token for the vault")
        upstream.transient = False
        raise upstream from None
    raise UpstreamError(f"Key Vault {operation} of secret {name} failed: {type(error).__name__}") from None
