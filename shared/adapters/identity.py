"""The Microsoft identity platform through MSAL (``shared.ports.IdentityPlatform``).

MSAL binds a token cache to a client application, while this connector keeps one cache per
account (one Key Vault secret each) and serves many accounts at once from one process. So
the process keeps a small pool of long-lived client applications (built once, sharing one
HTTP session and MSAL's HTTP cache, so OpenID discovery happens once per process); a call
leases one, attaches the account's cache for the duration of the call and detaches it
afterwards. Device-code accounts are refreshed through a ``PublicClientApplication``: the
platform refuses a client secret for their refresh tokens.

Protocol errors, which MSAL returns as data, are translated here once: ``AuthFlowError``,
``ReauthRequiredError`` or ``IdentityError`` (shared/errors.py). Nothing here logs a token,
a code or a state.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

from shared.config import Settings
from shared.errors import AuthFlowError, IdentityError, ReauthRequiredError
from shared.models import ClientKind, account_id_for
from shared.ports import TokenGrant

log = logging.getLogger(__name__)

# Applications per kind kept by one process: token refreshes of different accounts run in
# parallel up to this many, the rest wait their turn.
POOL_SIZE = 4
HTTP_TIMEOUT_SECONDS = 15.0
# Errors on redeeming a code that the user can fix by signing in again (RFC 6749 5.2;
# the identity platform's AADSTS codes come as error_description).
_USER_FIXABLE = frozenset(
    {
        "invalid_grant",
        "access_denied",
        "consent_required",
        "interaction_required",
        "login_required",
        "invalid_request",
    }
)
# Errors on a silent refresh that only the user can fix (the refresh token is dead).
_REAUTH = frozenset({"invalid_grant", "interaction_required", "consent_required", "login_required"})


def _is_microsoft_host(authority: str) -> bool:
    from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS

    return (urlparse(authority).hostname or "") in WELL_KNOWN_AUTHORITY_HOSTS


class _AppPool:
    """Long-lived MSAL applications handed out one caller at a time."""

    def __init__(self, factory: Callable[[], Any], size: int) -> None:
        self._factory = factory
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def lease(self, token_cache: Any) -> Iterator[Any]:
        import msal

        with self._slots:
            try:
                app = self._idle.get_nowait()
            except queue.Empty:
                try:
                    app = self._factory()
                except (OSError, ValueError) as exc:
                    # OpenID discovery failed: the authority is unreachable or not one.
                    raise IdentityError("authority_unavailable", type(exc).__name__) from exc
            app.token_cache = token_cache
            try:
                yield app
            except OSError as exc:  # requests' errors: the token endpoint could not be reached
                raise IdentityError("identity_unreachable", type(exc).__name__) from exc
            finally:
                app.token_cache = msal.TokenCache()
                self._idle.put(app)


class MsalIdentity:
    """One per process (``Services.identity``); thread-safe."""

    def __init__(self, settings: Settings, *, http_client: Any = None, pool_size: int = POOL_SIZE) -> None:
        self._settings = settings
        self._http_client = http_client
        self._http_cache: dict[Any, Any] = {}
        self._lock = threading.Lock()
        self._confidential = _AppPool(lambda: self._build(ClientKind.CONFIDENTIAL), pool_size)
        self._public = _AppPool(lambda: self._build(ClientKind.PUBLIC), pool_size)

    # -- authorization code flow (the browser's connect) ---------------------------------

    def start_auth_code_flow(
        self, scopes: Sequence[str], redirect_uri: str, login_hint: str | None = None
    ) -> dict[str, Any]:
        import msal

        with self._confidential.lease(msal.TokenCache()) as app:
            flow: dict[str, Any] = app.initiate_auth_code_flow(
                list(scopes),
                redirect_uri=redirect_uri,
                login_hint=login_hint or None,
                response_mode="form_post",
            )
        return flow

    def redeem_auth_code(self, flow: Mapping[str, Any], auth_response: Mapping[str, str]) -> TokenGrant:
        import msal

        cache = msal.SerializableTokenCache()
        with self._confidential.lease(cache) as app:
            try:
                result = app.acquire_token_by_auth_code_flow(dict(flow), dict(auth_response))
            except ValueError:
                # MSAL's CSRF check: the response's state is not the flow's (or is missing).
                raise AuthFlowError(
                    "the sign-in response does not belong to this sign-in", error="state_mismatch"
                ) from None
            if "error" in result:
                raise _code_error(result)
            accounts = app.get_accounts()
        return _grant(result, accounts, cache, ClientKind.CONFIDENTIAL)

    # -- device code flow (operators' CLI) ------------------------------------------------

    def start_device_flow(self, scopes: Sequence[str]) -> dict[str, Any]:
        import msal

        with self._public.lease(msal.TokenCache()) as app:
            flow: dict[str, Any] = app.initiate_device_flow(scopes=list(scopes))
        if "user_code" not in flow:
            raise IdentityError(
                str(flow.get("error", "device_flow_unavailable")), str(flow.get("error_description", ""))
            )
        return flow

    def redeem_device_flow(self, flow: Mapping[str, Any]) -> TokenGrant:
        import msal

        cache = msal.SerializableTokenCache()
        with self._public.lease(cache) as app:
            result = app.acquire_token_by_device_flow(dict(flow))
            if "error" in result:
                raise _code_error(result)
            accounts = app.get_accounts()
        return _grant(result, accounts, cache, ClientKind.PUBLIC)

    # -- silent acquisition (every Graph call) --------------------------------------------

    def acquire_silent(
        self, cache_state: str, home_account_id: str, scopes: Sequence[str], client_kind: ClientKind
    ) -> TokenGrant:
        import msal

        cache = msal.SerializableTokenCache()
        try:
            cache.deserialize(cache_state)
        except ValueError:
            raise ReauthRequiredError(home_account_id, "unreadable_token_cache") from None
        pool = self._public if client_kind == ClientKind.PUBLIC else self._confidential
        with pool.lease(cache) as app:
            accounts = [a for a in app.get_accounts() if a.get("home_account_id") == home_account_id]
            if not accounts:
                raise ReauthRequiredError(home_account_id, "no_cached_account")
            result = app.acquire_token_silent_with_error(list(scopes), accounts[0])
        if result is None:
            raise ReauthRequiredError(home_account_id, "no_refresh_token")
        if "error" in result:
            error = str(result.get("error"))
            if error in _REAUTH:
                raise ReauthRequiredError(home_account_id, error)
            raise IdentityError(error, _first_line(result.get("error_description")))
        grant = _grant(result, accounts, cache, client_kind)
        return grant

    # -- construction ---------------------------------------------------------------------

    def _build(self, kind: ClientKind) -> Any:
        import msal

        settings = self._settings
        options: dict[str, Any] = {
            "authority": settings.authority,
            "http_client": self._session(),
            "http_cache": self._http_cache,
        }
        if not _is_microsoft_host(settings.authority):
            # A local or sovereign OpenID authority (the devstack simulator): skip the
            # instance check against login.microsoftonline.com (docs/graph-notes.md "Tokens").
            options["instance_discovery"] = False
        if kind == ClientKind.PUBLIC:
            return msal.PublicClientApplication(settings.client_id, **options)
        return msal.ConfidentialClientApplication(
            settings.client_id, client_credential=settings.client_secret, **options
        )

    def _session(self) -> Any:
        with self._lock:
            if self._http_client is None:
                self._http_client = _TimeoutSession.create()
            return self._http_client


class _TimeoutSession:
    """A ``requests.Session`` whose calls always carry a timeout (MSAL sets none itself).
    TLS trust follows ``REQUESTS_CA_BUNDLE`` as requests does (the devstack's local CA)."""

    def __init__(self, session: Any) -> None:
        self._session = session

    @classmethod
    def create(cls) -> _TimeoutSession:
        import requests

        return cls(requests.Session())

    def get(self, url: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", HTTP_TIMEOUT_SECONDS)
        return self._session.get(url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", HTTP_TIMEOUT_SECONDS)
        return self._session.post(url, **kwargs)

    def close(self) -> None:
        self._session.close()


def _first_line(value: object) -> str:
    return str(value or "").strip().splitlines()[0][:300] if value else ""


def _code_error(result: Mapping[str, Any]) -> Exception:
    error = str(result.get("error"))
    description = _first_line(result.get("error_description"))
    if error in _USER_FIXABLE:
        return AuthFlowError("Microsoft did not complete the sign-in", error=error, description=description)
    return IdentityError(error, description)


def _grant(
    result: Mapping[str, Any], accounts: list[dict[str, Any]], cache: Any, kind: ClientKind
) -> TokenGrant:
    claims: Mapping[str, Any] = result.get("id_token_claims") or {}
    object_id = str(claims.get("oid") or claims.get("sub") or "")
    tenant_id = str(claims.get("tid") or "")
    account = accounts[0] if accounts else {}
    home_account_id = str(account.get("home_account_id") or "")
    if not home_account_id:
        if not object_id or not tenant_id:
            raise IdentityError("incomplete_token_response", "neither client_info nor oid/tid came back")
        home_account_id = account_id_for(object_id, tenant_id)
    if not object_id or not tenant_id:
        object_id, _, tenant_id = home_account_id.partition(".")
    username = str(claims.get("preferred_username") or account.get("username") or "")
    state = cache.serialize() if cache.has_state_changed else None
    return TokenGrant(
        home_account_id=home_account_id,
        tenant_id=tenant_id,
        object_id=object_id,
        username=username,
        access_token=str(result["access_token"]),
        expires_in=int(result.get("expires_in") or 0),
        client_kind=kind,
        display_name=str(claims.get("name") or ""),
        cache_state=state,
    )
