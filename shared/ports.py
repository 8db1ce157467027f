"""Ports: what the core needs from the outside world, as small Protocols.

Real adapters live in ``shared/adapters/`` (Table Storage, Queue Storage, Key Vault,
Graph over requests, the identity platform through MSAL). Unit tests pass fakes built
on the same Protocols through ``shared.bootstrap``; integration tests run the real
adapters against Azurite and the devstack emulators.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.models import Account, ClientKind, ConnectSession, PendingAuthFlow, Subscription, SweepCheckpoint
from shared.models import AttachmentContent as AttachmentContent
from shared.models import BatchRequest as BatchRequest
from shared.models import BatchResponse as BatchResponse

# Records the ports carry (the command log's, Graph's answers, grants, drive content) live
# with the other records in shared.models; named here for the ports' readers.
from shared.models import CommandRecord as CommandRecord
from shared.models import CommandState as CommandState
from shared.models import DriveChildrenPage as DriveChildrenPage
from shared.models import DriveContent as DriveContent
from shared.models import JsonObject as JsonObject
from shared.models import LedgerMark as LedgerMark
from shared.models import MessagePage as MessagePage
from shared.models import SyncProgress as SyncProgress
from shared.models import TokenGrant as TokenGrant
from shared.models import UploadProgress as UploadProgress


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
    def send(self, queue: str, messages: Sequence[str]) -> None:
        """Put each message on the queue (base64, as the Functions host reads them)."""
        ...


class HealthProbe(Protocol):
    def check(self) -> None:
        """Raise if the dependency cannot be reached."""
        ...


@dataclass(frozen=True)
class GraphAuth:
    """An access token for one account's mailbox. ``account_id`` lets the Graph adapter keep
    to Outlook's 4 concurrent requests per app per mailbox (docs/graph-notes.md "Throttling")."""

    account_id: str
    access_token: str = field(repr=False)


@dataclass(frozen=True)
class DeltaPage:
    """One page of a mail delta round: changed items, then either a nextLink or a deltaLink."""

    items: list[JsonObject]
    next_link: str | None = None
    delta_link: str | None = None


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


class GraphMail(Protocol):
    """Graph's mail API as the mail actions use it (``Mail.Read`` to read, ``Mail.ReadWrite``
    to act). Every call asks for immutable ids (``Prefer: IdType="ImmutableId"``), so a
    message keeps its id when it is moved. Same error rules as ``GraphApi``; a 403 is a
    ``GraphError`` with status 403."""

    def get_message(self, auth: GraphAuth, message_id: str, *, body_type: str = "html") -> JsonObject:
        """The message with its body as ``body_type`` (``text`` or ``html``)."""
        ...

    def list_attachments(self, auth: GraphAuth, message_id: str) -> list[JsonObject]:
        """The attachments' metadata (id, name, contentType, size), never their content."""
        ...

    def get_attachment_content(
        self, auth: GraphAuth, message_id: str, attachment_id: str, *, max_bytes: int
    ) -> AttachmentContent:
        """The attachment's bytes; ``PayloadTooLargeError`` when it is over ``max_bytes``
        (told by its size before anything is downloaded, and checked while reading)."""
        ...

    def list_messages(
        self,
        auth: GraphAuth,
        *,
        folder: str = "inbox",
        since: dt.datetime | None = None,
        top: int = 50,
        link: str | None = None,
    ) -> MessagePage:
        """Newest first; ``link`` (a nextLink of an earlier page) continues a listing."""
        ...

    def list_folders(self, auth: GraphAuth, parent_id: str | None = None) -> list[JsonObject]:
        """The top-level folders, or the child folders of ``parent_id``; every page."""
        ...

    def move_message(self, auth: GraphAuth, message_id: str, destination: str) -> JsonObject: ...

    def update_message(self, auth: GraphAuth, message_id: str, changes: JsonObject) -> JsonObject: ...

    def delete_message(self, auth: GraphAuth, message_id: str, *, permanent: bool = False) -> None:
        """To Deleted Items, or with ``permanent`` for good (``permanentDelete``)."""
        ...

    def batch(self, auth: GraphAuth, requests: Sequence[BatchRequest]) -> list[BatchResponse]:
        """At most ``MAX_BATCH_REQUESTS`` requests of one mailbox in one ``$batch``; the answer
        to each, in the order asked. Inner 429s are sent again after their Retry-After a
        bounded number of times; what is still throttled comes back with ``retry_after``."""
        ...


# JSON batching takes at most 20 requests (learn.microsoft.com/graph/json-batching).
MAX_BATCH_REQUESTS = 20


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


# --- the mail ledger (see shared/ledger.py for why it exists) ---------------------------


class FolderDeltaLinks(Protocol):
    """The deltaLink of each watched folder but the inbox (whose link is the account's),
    keyed by (account, folder); each remembers the connection (``connected_at``) it belongs
    to, so a reconnect starts every folder afresh."""

    def links(self, account_id: str, connected_at: dt.datetime | None) -> dict[str, str]:
        """Folder key -> deltaLink, for the connection that began at ``connected_at``."""
        ...

    def save(self, account_id: str, folder: str, link: str, connected_at: dt.datetime | None) -> None: ...

    def forget_account(self, account_id: str) -> None: ...


class MailLedger(Protocol):
    def marks(self, account_id: str, message_ids: Sequence[str]) -> dict[str, LedgerMark]:
        """The marks of those messages that have one."""
        ...

    def record(self, account_id: str, marks: Sequence[LedgerMark]) -> None:
        """Insert or replace the marks."""
        ...

    def live_message_ids(self, account_id: str, *, unseen_in: str | None = None) -> Iterator[str]:
        """Ids of the messages published and not (yet) published as deleted; with
        ``unseen_in``, only those the full round of that id did not return."""
        ...

    def commit(
        self,
        account_id: str,
        holder: str,
        now: dt.datetime,
        marks: Sequence[LedgerMark],
        progress: SyncProgress | None,
    ) -> None:
        """Write the marks and the round's progress (None: the round is over) only while
        ``holder`` holds the sync lease, renewing it: each entity-group transaction carries
        the lease under its ETag, so a holder that lost it writes nothing
        (``LeaseLostError``)."""
        ...

    def progress(self, account_id: str) -> SyncProgress | None:
        """The unfinished round's progress, None when no round is under way."""
        ...

    def seize_lease(self, account_id: str, holder: str, now: dt.datetime) -> dt.datetime | None:
        """Take the sync lease whoever holds it (a disconnect); the running holder's next
        lease write fails. Returns when that holder last proved it held it (None: free)."""
        ...

    def forget_account(self, account_id: str) -> None:
        """Drop the account's marks and lease (on disconnect); idempotent."""
        ...

    def acquire_lease(
        self, account_id: str, holder: str, now: dt.datetime, stale_after: dt.timedelta
    ) -> bool:
        """Take the account's sync lease; when someone else holds a live one, mark work as
        pending for them and return False."""
        ...

    def renew_lease(self, account_id: str, holder: str, now: dt.datetime) -> bool:
        """Keep the lease; False when it was taken over (stop without writing)."""
        ...

    def release_lease(self, account_id: str, holder: str, *, abandon: bool = False) -> bool:
        """Let go of the lease. False (lease kept, pending cleared) when work arrived in the
        meantime and another round must run, unless ``abandon`` (after a failure)."""
        ...


# --- the mail command log (see shared/mail_commands.py) ----------------------------------


class MailCommandLog(Protocol):
    """Table ``mailcommands``: one record per command id ever seen for an account, so that a
    command runs at most once however often it is delivered. The commands of one account
    share a partition: a batch's records are written in one transaction."""

    def claim(self, account_id: str, command_ids: Sequence[str], now: dt.datetime) -> dict[str, CommandRecord]:
        """Record the commands as claimed; the answer holds those claimed now, an id missing
        from it was known already (of concurrent claimers of one id exactly one gets it)."""
        ...

    def get(self, account_id: str, command_id: str) -> CommandRecord | None: ...

    def save(self, records: Sequence[CommandRecord]) -> list[CommandRecord]:
        """Write each record (all of one account) under its ETag; the answer holds the ones
        written, with their new ETags: a record someone else wrote first is left out."""
        ...

    def release(self, records: Sequence[CommandRecord]) -> None:
        """Forget claims whose commands certainly did not run (Graph throttled them before
        they started), so that the same ids may be sent again."""
        ...
# --- OneDrive files (see shared/drive_files.py) ------------------------------------------


class DriveApi(Protocol):
    """A user's OneDrive through Microsoft Graph (``/me/drive``), on the same retry policy as
    ``GraphApi``: 429/503 retried after ``Retry-After`` a bounded number of times, then
    ``ThrottledError``; 404 -> ``NotFoundError``; 409 ``nameAlreadyExists`` -> ``ConflictError``;
    other OData errors ``GraphError``. ``path`` arguments are drive paths below the root,
    already validated (``shared.drive_files.drive_path``)."""

    def get_item(self, auth: GraphAuth, item_id: str) -> JsonObject: ...

    def get_item_by_path(self, auth: GraphAuth, path: str) -> JsonObject: ...

    def list_children(
        self, auth: GraphAuth, item_id: str, *, page_size: int, next_link: str | None = None
    ) -> DriveChildrenPage:
        """``next_link`` None: the first page; otherwise a link an earlier page gave."""
        ...

    def upload_small(self, auth: GraphAuth, path: str, content: bytes, conflict: str) -> tuple[JsonObject, bool]:
        """A simple upload (``PUT .../content``); the item and whether it was created."""
        ...

    def create_upload_session(self, auth: GraphAuth, path: str, conflict: str) -> str:
        """A new upload session for ``path``; its pre-authenticated ``uploadUrl``."""
        ...

    def upload_fragment(self, upload_url: str, fragment: bytes, start: int, total: int) -> UploadProgress:
        """One ``PUT`` of bytes ``start`` .. ``start + len(fragment) - 1`` of ``total``, sent
        once (no retry: the caller resumes from ``upload_status``). A failure raises
        ``UpstreamError`` (``ThrottledError`` with the fragment's ``Retry-After``)."""
        ...

    def upload_status(self, upload_url: str) -> tuple[str, ...]:
        """The session's ``nextExpectedRanges``."""
        ...

    def cancel_upload_session(self, upload_url: str) -> None:
        """Idempotent."""
        ...

    def open_content(self, auth: GraphAuth, item_id: str, *, byte_range: str | None = None) -> DriveContent:
        """The file's bytes from its download URL (Graph's 302), unread; ``byte_range`` is a
        ``Range`` header value (``bytes=0-1023``) passed on as it is."""
        ...

    def create_link(self, auth: GraphAuth, item_id: str, *, link_type: str, scope: str) -> JsonObject:
        """The sharing permission (``link.webUrl``)."""
        ...

    def delete_item(self, auth: GraphAuth, item_id: str) -> None: ...

    def drive_delta_page(self, auth: GraphAuth, link: str | None) -> DeltaPage:
        """A page of ``/me/drive/root/delta`` (``link`` None: a new round of the whole drive);
        410 Gone (``resyncRequired``) raises ``DeltaTokenExpiredError``."""
        ...

    def get_items(self, auth: GraphAuth, item_ids: Sequence[str]) -> dict[str, JsonObject | None]:
        """The items as they are now (``$batch``es of 20 reads); None for one gone (404)."""
        ...
