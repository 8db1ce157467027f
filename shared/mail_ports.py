"""Ports of the mail side: Graph's mail API as the mail actions use it, the mail ledger
and the watched folders' delta links (what a delta round keeps), the mail command log.

Defined here and named in ``shared.ports`` too, where the core imports them from. This
module imports records only (``shared.models``), so that ``shared.ports`` can name its
ports without an import circle; a record these ports carry goes to ``shared.models``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Protocol

from shared.models import (
    AttachmentContent,
    BatchRequest,
    BatchResponse,
    CommandRecord,
    GraphAuth,
    JsonObject,
    LedgerMark,
    MessagePage,
    SyncProgress,
)


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

    def prune(self, claimed_before: dt.datetime) -> int:
        """Delete the records of every account claimed before ``claimed_before``, whatever
        their state; the answer is how many went."""
        ...
