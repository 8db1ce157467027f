"""Graph access tokens per account: MSAL silent acquisition over the account's token cache.

Each account's MSAL ``SerializableTokenCache`` is one Key Vault secret (docs/design.md "State");
nothing else holds a refresh token. ``CachedTokenProvider.graph_auth(account)`` answers
from an in-process cache of access tokens while they have more than a few minutes to live;
otherwise it loads the account's cache from Key Vault, asks the identity platform for a
token silently (which refreshes and may rotate the refresh token), and writes the cache back
only when MSAL says it changed (docs/graph-notes.md "Tokens"). A dead refresh token
(``invalid_grant``) marks the account ``reauth_required`` and raises
``ReauthRequiredError``; the account stays visible to operators.

The identity platform is reached through ``IdentityPlatform`` (MSAL in
``shared/adapters/identity.py``), so this module is tested with a fake.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.accounts import mark_reauth_required
from shared.errors import NotFoundError, ReauthRequiredError
from shared.models import Account, AccountStatus
from shared.ports import GraphAuth, TokenGrant

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

# An access token is handed out only while it has at least this long to live: a Graph
# call (with its retries after Retry-After) must not start with a token about to expire.
ACCESS_TOKEN_MARGIN = dt.timedelta(minutes=5)
# Upper bound of the in-process cache; the least recently used tokens go first.
MAX_CACHED_ACCESS_TOKENS = 10_000
# Per-account serialisation uses a fixed set of striped locks: bounded memory for any
# number of accounts, and never two refreshes of one account's refresh token at once in
# this process (the platform may rotate it on every use).
_LOCK_STRIPES = 64

_SECRET_PREFIX = "tokencache-"
_NOT_NAME_CHARS = re.compile(r"[^A-Za-z0-9-]+")


def token_cache_secret_name(account_id: str) -> str:
    """The Key Vault secret holding the account's MSAL token cache.

    Key Vault names are 1-127 letters, digits and dashes (docs/graph-notes.md "Key Vault"). The
    readable part replaces everything else by dashes; a digest of the exact id keeps two
    ids that differ only there (``a.b`` and ``a-b``) apart.
    """
    readable = _NOT_NAME_CHARS.sub("-", account_id).strip("-")[:90]
    digest = hashlib.sha256(account_id.encode("utf-8")).hexdigest()[:16]
    return f"{_SECRET_PREFIX}{readable}-{digest}" if readable else f"{_SECRET_PREFIX}{digest}"


@dataclass(frozen=True)
class _CachedToken:
    access_token: str = field(repr=False)
    usable_until: dt.datetime


class CachedTokenProvider:
    """``ports.TokenProvider``: thread-safe, one per process (``Services.tokens``)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._lock = threading.Lock()
        self._tokens: OrderedDict[str, _CachedToken] = OrderedDict()
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def cached_auth(self, account_id: str) -> GraphAuth | None:
        cached = self._cached(account_id)
        return None if cached is None else GraphAuth(account_id, cached)

    def graph_auth(self, account: Account) -> GraphAuth:
        account_id = account.account_id
        cached = self._cached(account_id)
        if cached is not None:
            return GraphAuth(account_id, cached)
        with self._stripe(account_id):
            cached = self._cached(account_id)  # another thread may have refreshed meanwhile
            if cached is not None:
                return GraphAuth(account_id, cached)
            try:
                grant = self._acquire(account)
            except ReauthRequiredError as exc:
                self.forget(account_id)
                if exc.reason != "disconnected":
                    mark_reauth_required(self._services, account_id, exc.reason)
                raise
            self.remember(account_id, grant.access_token, grant.expires_in)
            return GraphAuth(account_id, grant.access_token)

    def remember(self, account_id: str, access_token: str, expires_in: int) -> None:
        """Keep a freshly issued access token (also used right after a connect)."""
        usable_until = self._services.clock.now() + dt.timedelta(seconds=expires_in) - ACCESS_TOKEN_MARGIN
        with self._lock:
            self._tokens[account_id] = _CachedToken(access_token, usable_until)
            self._tokens.move_to_end(account_id)
            while len(self._tokens) > MAX_CACHED_ACCESS_TOKENS:
                self._tokens.popitem(last=False)

    def forget(self, account_id: str) -> None:
        """Drop the account's access token (disconnect, reconnect, a 401 from Graph)."""
        with self._lock:
            self._tokens.pop(account_id, None)

    def _cached(self, account_id: str) -> str | None:
        now = self._services.clock.now()
        with self._lock:
            entry = self._tokens.get(account_id)
            if entry is None:
                return None
            if entry.usable_until <= now:
                del self._tokens[account_id]
                return None
            self._tokens.move_to_end(account_id)
            return entry.access_token

    def _stripe(self, account_id: str) -> threading.Lock:
        digest = hashlib.blake2b(account_id.encode("utf-8"), digest_size=2).digest()
        return self._stripes[int.from_bytes(digest, "big") % _LOCK_STRIPES]

    def _acquire(self, account: Account) -> TokenGrant:
        services = self._services
        if account.status == AccountStatus.DISCONNECTED:
            raise ReauthRequiredError(account.account_id, "disconnected")
        secret_name = token_cache_secret_name(account.account_id)
        cache_state = services.secrets.get(secret_name)
        if cache_state is None:
            raise ReauthRequiredError(account.account_id, "no_token_cache")
        grant = services.identity.acquire_silent(
            cache_state, account.account_id, services.settings.scopes, account.client_kind
        )
        if grant.cache_state is not None:
            # The refresh token may have rotated: the new one must be kept, or the next
            # refresh fails. Written only when MSAL reports a change, and never onto a cache a
            # disconnect deleted meanwhile (that would bring the refresh token back).
            try:
                services.secrets.set(secret_name, grant.cache_state, recover=False)
            except NotFoundError:
                raise ReauthRequiredError(account.account_id, "disconnected") from None
        return grant
