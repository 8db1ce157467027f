"""Ports: what the core needs from the outside world, as small Protocols.

Real adapters live in ``shared/adapters/`` (Table Storage, Queue Storage, Key Vault,
Graph over requests, the identity platform through MSAL). Unit tests pass fakes built
on the same Protocols through ``shared.bootstrap``; integration tests run the real
adapters against Azurite and the devstack emulators.

Here: the stores, Key Vault, queues, health, tokens, Graph's subscriptions and delta, the
identity platform. The mail side's ports (Graph's mail API, the mail ledger, the folders'
delta links, the command log) are defined in ``shared.mail_ports``, the OneDrive's in
``shared.drive_ports``; every port is named here too, so the core imports them all from
``shared.ports``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from shared.drive_ports import DriveApi as DriveApi
from shared.mail_ports import MAX_BATCH_REQUESTS as MAX_BATCH_REQUESTS
from shared.mail_ports import FolderDeltaLinks as FolderDeltaLinks
from shared.mail_ports import GraphMail as GraphMail
from shared.mail_ports import MailCommandLog as MailCommandLog
from shared.mail_ports import MailLedger as MailLedger
from shared.models import Account, ClientKind, ConnectSession, PendingAuthFlow, Subscription, SweepCheckpoint
from shared.models import AttachmentContent as AttachmentContent
from shared.models import BatchRequest as BatchRequest
from shared.models import BatchResponse as BatchResponse

# Records the ports carry (the command log's, Graph's answers, grants, drive content, the
# token of a Graph call) live with the other records in shared.models; named here for the
# ports' readers.
from shared.models import CommandRecord as CommandRecord
from shared.models import CommandState as CommandState
from shared.models import DeltaPage as DeltaPage
from shared.models import DriveChildrenPage as DriveChildrenPage
from shared.models import DriveContent as DriveContent
from shared.models import GraphAuth as GraphAuth
from shared.models import JsonObject as JsonObject
from shared.models import LedgerMark as LedgerMark
from shared.models import MessagePage as MessagePage
from shared.models import SyncProgress as SyncProgress
from shared.models import TokenGrant as TokenGrant
from shared.models import UploadProgress as UploadProgress
from shared.models import UploadSession as UploadSession


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""
        ...


class AccountStore(Protocol):
    """Table ``accounts``: one entity per connected account."""

    def get(self, account_id: str) -> Account | None: ...

    def save(self, account: Account) -> Account:
        """Insert or replace. With ``account.etag`` set, the write happens only if the stored
        entity still has that ETag (else ``ConcurrencyError``); without it, only if no
        entity exists yet (else ``ConcurrencyError``). Returns the account with its new ETag."""
        ...

    def page(self, *, size: int = 100, continuation: str | None = None) -> tuple[list[Account], str | None]:
        """One page of accounts and the continuation token of the next one (None at the end)."""
        ...


class SubscriptionStore(Protocol):
    """Table ``subscriptions`` (+ an expiry index: no full scan to find expiring ones)."""

    def get(self, account_id: str, subscription_id: str) -> Subscription | None: ...

    def save(self, subscription: Subscription, *, defer_index: bool = False) -> Subscription:
        """Same ETag rules as ``AccountStore.save``; keeps the expiry index in step. With
        ``defer_index`` the index is left as it is and the caller hands the subscription to
        ``reindex`` soon after (many at once); until then its old entry still finds it."""
        ...

    def reindex(self, subscriptions: Sequence[Subscription]) -> None:
        """Writes the expiry index entries of subscriptions saved with ``defer_index``."""
        ...

    def delete(self, account_id: str, subscription_id: str) -> None:
        """Idempotent."""
        ...

    def for_account(self, account_id: str) -> list[Subscription]: ...

    def expiring_before(self, when: dt.datetime, *, recheck: bool = False) -> Iterator[Subscription]:
        """Subscriptions whose expiry is before ``when`` (expired ones included), each with
        the ETag of the record it shows. They may come from the index's copy of the
        record, which a crash between two writes can leave stale: the ETag then refuses
        the next write, and ``reread`` tells the truth. ``recheck`` reads every record
        instead (after a run that may have left many copies stale)."""
        ...

    def reread(self, offered: Subscription) -> Subscription | None:
        """The record behind a subscription ``expiring_before`` offered (None when deleted);
        the index entry that offered it is dropped when it no longer names the record."""
        ...


class CheckpointStore(Protocol):
    """Table ``checkpoints``: one small entity per named checkpoint, same ETag rules."""

    def get(self, name: str) -> SweepCheckpoint | None: ...

    def save(self, checkpoint: SweepCheckpoint) -> SweepCheckpoint:
        """With ``etag`` set, only if unchanged; without, only if absent (else ConcurrencyError)."""
        ...


class AuthFlowStore(Protocol):
    """Table ``authflows``: pending OAuth flows by state, single use."""

    def put(self, flow: PendingAuthFlow) -> None: ...

    def take(self, state: str) -> PendingAuthFlow | None:
        """Remove and return the flow; None when unknown or already taken (even by a
        concurrent caller: exactly one taker wins)."""
        ...


class ConnectSessionStore(Protocol):
    """Table ``connectsessions``: connect sessions by id, same ETag rules as the accounts."""

    def get(self, session_id: str) -> ConnectSession | None: ...

    def save(self, session: ConnectSession) -> ConnectSession:
        """Insert (no ``etag``) or replace if unchanged (``etag``), else ``ConcurrencyError``."""
        ...


class AccountOwnerIndex(Protocol):
    """Table ``accountowners``: which accounts belong to an owner, without a table scan."""

    def add(self, owner_id: str, account_id: str) -> None: ...

    def remove(self, owner_id: str, account_id: str) -> None:
        """Idempotent."""
        ...

    def page(
        self, owner_id: str, *, size: int = 100, continuation: str | None = None
    ) -> tuple[list[str], str | None]:
        """One page of the owner's account ids and the continuation of the next one."""
        ...


class ExpiredRowPurger(Protocol):
    """Deletes what anonymous and abandoned connects leave behind."""

    def purge_expired(self, now: dt.datetime) -> dict[str, int]:
        """Delete pending OAuth flows expired before ``now`` and connect sessions whose
        retention ended; the number deleted per table."""
        ...


class SecretStore(Protocol):
    """Key Vault secrets (names: 1-127 letters, digits and dashes)."""

    def get(self, name: str) -> str | None:
        """The latest version's value, None when there is no such (live) secret."""
        ...

    def set(self, name: str, value: str, *, recover: bool = True) -> None:
        """Write a new version; a soft-deleted secret of that name is recovered first, unless
        ``recover`` is False: then it stays deleted and ``NotFoundError`` is raised (a token
        refresh writing back must not bring back the cache a disconnect deleted)."""
        ...

    def delete(self, name: str) -> None:
        """Delete (soft delete where the vault has it); idempotent."""
        ...


class QueueSender(Protocol):
    def send(self, queue: str, messages: Sequence[str], *, delay_seconds: int = 0) -> None:
        """Put each message on the queue (base64, as the Functions host reads them), visible
        to receivers after ``delay_seconds`` (Put Message's ``visibilitytimeout``)."""
        ...


class HealthProbe(Protocol):
    def check(self) -> None:
        """Raise if the dependency cannot be reached."""
        ...


class TokenProvider(Protocol):
    """Gives "a Graph token for account X": MSAL silent acquisition from the account's
    token cache in Key Vault, with an in-process cache of access tokens."""

    def graph_auth(self, account: Account) -> GraphAuth:
        """Raises ``ReauthRequiredError`` when the refresh token is dead."""
        ...

    def cached_auth(self, account_id: str) -> GraphAuth | None:
        """The account's access token when this process holds one with time to live (no
        I/O, no account needed); None otherwise."""
        ...

    def remember(self, account_id: str, access_token: str, expires_in: int) -> None:
        """Keep a freshly issued access token (right after a connect)."""
        ...

    def forget(self, account_id: str) -> None:
        """Drop the account's access token (disconnect, reconnect, a 401 from Graph)."""
        ...


class GraphApi(Protocol):
    """Microsoft Graph, as the connector uses it. One client, one retry policy: 429/503 are
    retried after ``Retry-After`` a bounded number of times, then ``ThrottledError``; OData
    errors become ``GraphError`` (404 -> ``NotFoundError``, 410 -> ``DeltaTokenExpiredError``)."""

    def get_me(self, auth: GraphAuth) -> JsonObject: ...

    def create_subscription(
        self,
        auth: GraphAuth,
        *,
        resource: str,
        change_type: str,
        notification_url: str,
        lifecycle_notification_url: str,
        expires_at: dt.datetime,
        client_state: str,
    ) -> JsonObject: ...

    def renew_subscription(self, auth: GraphAuth, subscription_id: str, expires_at: dt.datetime) -> JsonObject: ...

    def reauthorize_subscription(self, auth: GraphAuth, subscription_id: str) -> None: ...

    def delete_subscription(self, auth: GraphAuth, subscription_id: str) -> None:
        """Idempotent: an already-gone subscription is not an error."""
        ...

    def delta_page(self, auth: GraphAuth, link: str | None, *, folder: str = "inbox") -> DeltaPage:
        """``link`` None starts a new round for ``folder``; otherwise a nextLink or deltaLink."""
        ...


class IdentityPlatform(Protocol):
    """The Microsoft identity platform, as the connector uses it (MSAL behind it).

    Protocol errors come back translated: ``AuthFlowError`` for what the user or the
    browser can fix (state mismatch, denied consent, a stale code), ``ReauthRequiredError``
    for a dead refresh token, ``IdentityError`` for anything else the platform refused.
    """

    def start_auth_code_flow(
        self, scopes: Sequence[str], redirect_uri: str, login_hint: str | None = None
    ) -> dict[str, Any]:
        """A new auth-code flow with PKCE (MSAL's flow dict, ``auth_uri`` and ``state`` in it)."""
        ...

    def redeem_auth_code(self, flow: Mapping[str, Any], auth_response: Mapping[str, str]) -> TokenGrant:
        """Redeem the callback's code; the grant carries a brand-new cache for the account."""
        ...

    def start_device_flow(self, scopes: Sequence[str]) -> dict[str, Any]:
        """A device-code flow (``message`` tells the user where to enter ``user_code``)."""
        ...

    def redeem_device_flow(self, flow: Mapping[str, Any]) -> TokenGrant:
        """Wait until the user finished the device-code sign-in; a public-client grant."""
        ...

    def acquire_silent(
        self, cache_state: str, home_account_id: str, scopes: Sequence[str], client_kind: ClientKind
    ) -> TokenGrant:
        """An access token from the cache or by refresh; ``cache_state`` of the grant is None
        when the cache did not change."""
        ...
