"""The connector's domain records: accounts, subscriptions, pending OAuth flows.

Plain dataclasses; the table adapter maps them to entities and back. ``etag`` is the
storage version seen when the record was read: writes that can race pass it back
(optimistic concurrency, docs/design.md "State").
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    REAUTH_REQUIRED = "reauth_required"
    DISCONNECTED = "disconnected"
    ERROR = "error"


class ClientKind(enum.StrEnum):
    """Which kind of client redeemed the account's refresh token.

    Device code is a public-client flow: the platform refuses a client secret when such a
    refresh token is redeemed, so the account remembers which kind must refresh it.
    """

    CONFIDENTIAL = "confidential"
    PUBLIC = "public"


class SubscriptionStatus(enum.StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"
    FAILED = "failed"


def account_id_for(object_id: str, tenant_id: str) -> str:
    """The account's id: MSAL's ``home_account_id`` (``{oid}.{tid}``), stable across reconnects."""
    return f"{object_id}.{tenant_id}"


@dataclass
class Account:
    account_id: str
    tenant_id: str
    user_id: str  # the user's object id (oid)
    user_principal_name: str
    display_name: str = ""
    status: AccountStatus = AccountStatus.ACTIVE
    scopes: tuple[str, ...] = ()
    client_kind: ClientKind = ClientKind.CONFIDENTIAL
    delta_link: str | None = None
    last_sync_at: dt.datetime | None = None
    last_notification_at: dt.datetime | None = None
    last_error: str | None = None
    connected_at: dt.datetime | None = None
    # The product's user the account belongs to (a connect session's ownerId); None for an
    # account connected without a session.
    owner_id: str | None = None
    etag: str | None = field(default=None, compare=False)


@dataclass
class Subscription:
    subscription_id: str
    account_id: str
    resource: str
    change_type: str
    expires_at: dt.datetime
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE
    last_renewed_at: dt.datetime | None = None
    last_reauthorized_at: dt.datetime | None = None
    # The nonce and key id inside the clientState it was created with (shared.client_state):
    # processing accepts only notifications that carry this nonce. None for a subscription
    # recorded before nonces were kept: its notifications are accepted on the HMAC alone.
    client_state_nonce: str | None = None
    client_state_key_id: str | None = None
    # Created with ``Prefer: IdType="ImmutableId"``: its notifications carry immutable ids.
    # False for one recorded before the connector asked for them (it is re-issued).
    immutable_ids: bool = False
    # When the renewal's sweep last caught up the subscription's resource by delta: a drive's
    # catch-up is timed from it (shared.account_sweep); None until the first one.
    caught_up_at: dt.datetime | None = None
    etag: str | None = field(default=None, compare=False)
    # The expiry the store's expiry index holds for this record (as read or last indexed):
    # lets a save that keeps the expiry's bucket skip the index, and a renewal saved with
    # ``defer_index`` find its old entry when its index entries are moved.
    indexed_expires_at: dt.datetime | None = field(default=None, compare=False, repr=False)


@dataclass
class PendingAuthFlow:
    """An MSAL auth-code flow dict waiting for its callback, keyed by its ``state``."""

    state: str
    flow: dict[str, Any]
    expires_at: dt.datetime
    client_kind: ClientKind = ClientKind.CONFIDENTIAL
    # SHA-256 (hex) of the browser-binding cookie set when the flow started: the callback
    # completes only from the browser that carries it (RFC 9700 §4.7, login CSRF).
    browser_binding: str = field(default="", repr=False)
    # The connect session the flow was started from, if any.
    session_id: str | None = field(default=None, repr=False)


class ConnectSessionStatus(enum.StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"  # never stored: a pending session past its time


@dataclass
class ConnectSession:
    """A product's request to connect one of its users' Microsoft accounts: single use,
    opened once (by one browser) before ``expires_at``."""

    session_id: str = field(repr=False)
    owner_id: str
    expires_at: dt.datetime
    created_at: dt.datetime
    return_url: str | None = None
    login_hint: str | None = None
    status: ConnectSessionStatus = ConnectSessionStatus.PENDING
    opened_at: dt.datetime | None = None
    account_id: str | None = None
    error: str | None = None
    reconnected: bool = False
    etag: str | None = field(default=None, compare=False)


@dataclass
class SweepCheckpoint:
    """A named lease with a resume point: where a paced sweep (the renewal's walk over all
    accounts) resumes, the accounts table's continuation token, and until when a run holds
    it (``leased_until``), so that a second, overlapping run keeps off. The renewal run's
    own lease is one too, without a continuation."""

    name: str
    continuation: str | None = None
    leased_until: dt.datetime | None = None
    etag: str | None = field(default=None, compare=False)


# A mail command's record in the command log (``shared.mail_ports.MailCommandLog``).


class CommandState:
    CLAIMED = "claimed"  # taken by a worker; it may or may not have run
    FINISHED = "finished"  # ran (or was refused); its result is kept until published
    PUBLISHED = "published"  # its result is on the results queue


@dataclass
class CommandRecord:
    command_id: str
    state: str
    claimed_at: dt.datetime
    account_id: str = ""
    result: str | None = None  # the encoded result CloudEvent
    etag: str | None = field(default=None, compare=False)


# --- values the ports carry (``shared.ports``) -------------------------------------------

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class GraphAuth:
    """An access token for one account's mailbox. ``account_id`` lets the Graph adapter keep
    to Outlook's 4 concurrent requests per app per mailbox (docs/graph-notes.md "Throttling")."""

    account_id: str
    access_token: str = field(repr=False)


@dataclass(frozen=True)
class MessagePage:
    """One page of a message list and Graph's link to the next one (None on the last)."""

    items: list[JsonObject]
    next_link: str | None = None


@dataclass(frozen=True)
class BatchRequest:
    """One request of a JSON batch: ``url`` relative to the version root (``/me/messages/x``)."""

    id: str
    method: str
    url: str
    body: JsonObject | None = None


@dataclass(frozen=True)
class BatchResponse:
    """Graph's answer to one request of a batch; ``retry_after`` on a 429 or 503 that the
    adapter stopped retrying."""

    id: str
    status: int
    body: JsonObject | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class AttachmentContent:
    name: str
    content_type: str
    content: bytes = field(repr=False)


@dataclass(frozen=True)
class TokenGrant:
    """What the identity platform gave for one account.

    ``home_account_id`` is MSAL's ``{oid}.{tid}`` of the home tenant (the account id);
    ``tenant_id`` and ``object_id`` are the id token's ``tid`` and ``oid``.
    ``cache_state`` is the account's serialised MSAL cache after the grant, or None when it
    did not change (then there is nothing to write back).
    """

    home_account_id: str
    tenant_id: str
    object_id: str
    username: str
    access_token: str = field(repr=False)
    expires_in: int
    client_kind: ClientKind = ClientKind.CONFIDENTIAL
    display_name: str = ""
    cache_state: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DeltaPage:
    """One page of a delta round (a mail folder's or the drive's): changed items, then
    either a nextLink or a deltaLink."""

    items: list[JsonObject]
    next_link: str | None = None
    delta_link: str | None = None


@dataclass(frozen=True)
class DriveChildrenPage:
    """One page of a folder's children and Graph's ``@odata.nextLink`` (None at the end)."""

    items: list[JsonObject]
    next_link: str | None = None


@dataclass(frozen=True)
class UploadSession:
    """A Graph upload session: ``url`` takes the file's byte ranges with no Authorization
    header (it is a credential for this one upload: never logged), until ``expires_at``
    (Graph's ``expirationDateTime``, as it gave it; each fragment pushes it on)."""

    url: str
    expires_at: str | None = None


@dataclass(frozen=True)
class UploadProgress:
    """What Graph answered to one fragment of an upload session: the item once the last
    byte is in (``created`` tells a new file from a replaced one), else the ranges it still
    expects (``nextExpectedRanges``, e.g. ``["3276800-"]``)."""

    item: JsonObject | None = None
    created: bool = False
    next_expected_ranges: tuple[str, ...] = ()


@dataclass
class DriveContent:
    """The bytes of a file as Graph's download URL serves them, not yet read: ``chunks``
    yields them in order; ``close`` gives the connection back (also after a partial read).
    ``status`` is 200, or 206 for a ``Range`` request (``content_range`` then says which)."""

    status: int
    size: int | None
    content_type: str
    chunks: Iterator[bytes]
    close: Callable[[], None]
    content_range: str | None = None


# --- the mail ledger's records (the port: shared.mail_ports.MailLedger) -----------------


@dataclass(frozen=True)
class LedgerMark:
    message_id: str
    change_key: str | None
    removed: bool = False
    seen_in: str | None = None  # the full round (after 410) that last returned the message
    # The watched folder (its key: shared.mail_folders) the message was last published in;
    # None for marks written before folders were kept: the inbox.
    folder: str | None = None
    # What says the content changed, for resources that tell content from metadata (a
    # drive item's cTag): a mark whose change_key (eTag) differs but content_tag is the
    # same is a rename or another metadata change.
    content_tag: str | None = None
    # What a deletion can still tell of the item, as it was last published or baselined (a
    # drive item's name and path): Graph's delta gives no more than the ids of a deleted item.
    name: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class SyncProgress:
    """Where an unfinished delta round of an account resumes: the next page's link, the
    round's kind (first, incremental, full) and its id (a full round tags what it saw)."""

    link: str
    mode: str
    round_id: str
    folder: str | None = None  # the watched folder whose round it is; None: the inbox
