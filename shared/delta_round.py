"""One delta round of one mailbox folder, page by page: the part of the sync that turns
Graph's delta pages into events, ledger marks and kept progress (shared.sync runs the
rounds under the account's lease and decides when).

Each page is proved under the lease before anything is written, its events are published
before its marks are committed, and the place is kept so that the next invocation goes on
where this one stopped (docs/design.md "Processing").
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.config import MAIL_EVENT_QUEUE
from shared.errors import UpstreamError
from shared.events import CREATED, DELETED, UPDATED, encode_event, mail_event
from shared.ledger import LeaseLostError, LedgerMark, SyncProgress
from shared.mail_folders import DELETED_ITEMS, INBOX, WatchedFolders, locate
from shared.models import Account

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import GraphAuth

log = logging.getLogger(__name__)

# A holder proves its lease (a conditional write) when its last proof is older than this,
# before a Graph call and again before it publishes: an event goes out at most this long
# (plus the queue write) after the holder last proved it held the lease.
LEASE_RENEW_AFTER = dt.timedelta(seconds=10)
# Progress of pages that publish nothing (history in a first round) is kept this often.
PROGRESS_EVERY_SECONDS = 5.0


class RoundMode:
    FIRST = "first"  # no deltaLink yet: the connect's first round
    INCREMENTAL = "incremental"  # from the stored deltaLink
    FULL = "full"  # after 410 Gone: everything again, publish only what is new


@dataclass
class SyncResult:
    account_id: str
    reason: str
    created: int = 0
    updated: int = 0
    deleted: int = 0
    rounds: int = 0
    pages: int = 0
    restarted: bool = False  # the deltaLink had expired (410) and a full round ran
    resumed: bool = False  # a round left unfinished by an earlier invocation went on
    handed_over: bool = False  # the rest (of a round, or pending work) went to queue mail-sync
    # Served by a round another trigger of this process ran for the account (``join``).
    joined: bool = False
    # why nothing (more) ran: unknown_account, inactive, reauth_required, busy, lease_lost
    skipped: str | None = None

    @property
    def published(self) -> int:
        return self.created + self.updated + self.deleted


@dataclass
class SyncLease:
    holder: str
    renewed_at: dt.datetime  # the holder's last proof that it holds the lease
    deadline: float  # monotonic time after which no new page is fetched
    monotonic: Callable[[], float]
    # The last round began in this invocation and saved its deltaLink (``served_already``).
    served: bool = False

    def out_of_time(self) -> bool:
        return self.monotonic() >= self.deadline



class DeltaRound:
    """One delta round of one account, page by page."""

    def __init__(
        self,
        services: Services,
        account: Account,
        auth: GraphAuth,
        result: SyncResult,
        mode: str,
        round_id: str,
        emit_history: bool,
        lease: SyncLease,
        saved: SyncProgress | None,
        watched: WatchedFolders,
        folder: str,
    ) -> None:
        self.lease = lease
        self.watched = watched
        self.folder = folder
        self.services = services
        self.account = account
        self.auth = auth
        self.result = result
        self.mode = mode
        self.round_id = round_id
        self.emit_history = emit_history
        self.ledger = services.ledger
        self.baseline = _baseline(account)
        self.saved = saved  # the progress stored in the ledger (None: none)
        self._saved_at = lease.monotonic()
        self._pages_here = 0

    def run(self, link: str | None) -> str | None:
        """Follow the pages from ``link``; the deltaLink at the end, None when out of time."""
        while True:
            if self._pages_here and self.lease.out_of_time() and link is not None:
                self._keep_place(link, force=True)
                return None
            self.prove_lease()
            page = self.services.graph.delta_page(self.auth, link, folder=self.folder)
            self._pages_here += 1
            self.result.pages += 1
            # The call may have outlasted the lease: prove it again before anything is written.
            self.prove_lease()
            if not page.next_link and not page.delta_link:
                raise UpstreamError("delta page without nextLink or deltaLink")
            events, marks = self.prepare(page.items)
            self._emit(events)
            if page.next_link:
                self._commit(marks, SyncProgress(page.next_link, self.mode, self.round_id, self.folder))
                link = page.next_link
            else:
                # The last page: a full round keeps its place until the vanished are published.
                ending = self.saved if self.mode == RoundMode.FULL else None
                if marks or (self.saved is not None and ending is None):
                    self._commit(marks, ending, force=True)
                return page.delta_link

    def prove_lease(self, *, force: bool = False) -> None:
        """A conditional write of the lease when the last proof is old; LeaseLostError if it
        is no longer ours."""
        now = self.services.clock.now()
        if not force and now - self.lease.renewed_at < LEASE_RENEW_AFTER:
            return
        if not self.ledger.renew_lease(self.account.account_id, self.lease.holder, now):
            raise LeaseLostError(f"sync lease of account {self.account.account_id} was taken over")
        self.lease.renewed_at = now

    def _keep_place(self, link: str, *, force: bool = False) -> None:
        if self.saved is not None and self.saved.link == link:
            return
        self._commit([], SyncProgress(link, self.mode, self.round_id, self.folder), force=force)

    def _commit(self, marks: list[LedgerMark], progress: SyncProgress | None, *, force: bool = False) -> None:
        # Pages that publish nothing keep their place every few seconds, not every page.
        if not marks and not force and self.lease.monotonic() - self._saved_at < PROGRESS_EVERY_SECONDS:
            return
        now = self.services.clock.now()
        self.ledger.commit(self.account.account_id, self.lease.holder, now, marks, progress)
        self.lease.renewed_at = now
        self.saved = progress
        self._saved_at = self.lease.monotonic()

    def prepare(self, items: Iterable[dict[str, Any]]) -> tuple[list[str], list[LedgerMark]]:
        items = [item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]
        # A first or full round ignores history unpublished so far, so only messages that may
        # give an event or that a full round must see need a ledger read (the history of a
        # large mailbox's first round reads no ledger row).
        if self.mode == RoundMode.INCREMENTAL or (self.mode == RoundMode.FIRST and self.emit_history):
            wanted = items
        elif self.mode == RoundMode.FULL:
            wanted = items
        else:
            wanted = [item for item in items if "@removed" in item or self._is_new(item)]
        if not wanted:
            return [], []
        known = self.ledger.marks(self.account.account_id, [item["id"] for item in wanted])
        events: list[str] = []
        marks: dict[str, LedgerMark] = {}
        departed: list[LedgerMark] = []
        seen = self.round_id if self.mode == RoundMode.FULL else None
        for item in wanted:
            message_id = item["id"]
            mark = marks.get(message_id) or known.get(message_id)
            if "@removed" in item and mark is not None and not mark.removed and _folder_of(mark) == self.folder:
                departed.append(mark)  # where did it go? (below, for the whole page at once)
                continue
            change, previous = self.classify(item, mark)
            change_key = item.get("changeKey") if isinstance(item.get("changeKey"), str) else None
            if change is None:
                if (
                    self.mode == RoundMode.FULL
                    and mark is not None
                    and not mark.removed
                    and mark.seen_in != self.round_id
                    and _folder_of(mark) == self.folder
                ):
                    # Seen by this full round: not among the vanished at its end.
                    marks[message_id] = LedgerMark(message_id, mark.change_key, False, self.round_id, self.folder)
                continue
            version: str | None = None
            if previous is not None:  # a move: the same changeKey may have been published in the old folder
                version = f"{change_key or ''}|{self.folder}"
            elif change == CREATED and mark is not None:  # back after it left the watched folders
                version = f"again|{change_key or ''}"
            events.append(self._event(item, change, previous_folder=previous, version=version))
            marks[message_id] = LedgerMark(
                message_id, change_key, removed=change == DELETED, seen_in=seen, folder=self.folder
            )
            setattr(self.result, change, getattr(self.result, change) + 1)
        if departed:
            self._departed(departed, events, marks, seen)
        return events, list(marks.values())

    def _departed(
        self, departed: list[LedgerMark], events: list[str], marks: dict[str, LedgerMark], seen: str | None
    ) -> None:
        """Messages that left this folder: deleted, moved out of the watched folders, or
        moved to another watched one (whose round publishes the move)."""
        where = locate(self.services, self.auth, [mark.message_id for mark in departed])
        names: dict[str, str] | None = None
        for mark in departed:
            folder_id = where.get(mark.message_id)
            reason = "deleted"
            if folder_id is not None:
                if self.watched.key_of(self.services, self.auth, folder_id) is not None:
                    continue
                if names is None:
                    from shared.mail_actions import folder_names

                    names = folder_names(self.services, self.auth)
                reason = "deleted" if names.get(folder_id) == DELETED_ITEMS else "moved"
            item = {"id": mark.message_id, "@removed": {"reason": reason}}
            events.append(self._event(item, DELETED, reason=reason, version=mark.change_key or ""))
            marks[mark.message_id] = LedgerMark(mark.message_id, mark.change_key, True, seen, self.folder)
            self.result.deleted += 1

    def _event(
        self,
        item: dict[str, Any],
        change: str,
        *,
        previous_folder: str | None = None,
        reason: str | None = None,
        version: str | None = None,
    ) -> str:
        settings = self.services.settings
        return encode_event(
            mail_event(
                self.account,
                item,
                change,
                folder=self.folder,
                now=self.services.clock.now(),
                previous_folder=previous_folder,
                reason=reason,
                version=version,
                body=settings.event_body,
                body_max_bytes=settings.event_body_max_bytes,
            )
        )

    def classify(self, item: dict[str, Any], mark: LedgerMark | None) -> tuple[str | None, str | None]:
        """(change type or None, the folder a moved message came from)."""
        if "@removed" in item:
            if mark is not None:
                # Its deletion was published, or it lives in another folder now (the move
                # was published when that folder's round saw it).
                return None, None
            # Never published: a deletion is news only in an incremental round.
            return (DELETED if self.mode == RoundMode.INCREMENTAL else None), None
        if mark is not None and mark.removed:
            return CREATED, None  # it left the watched folders (or was deleted) and came back
        if mark is not None:
            previous = _folder_of(mark)
            if previous != self.folder:
                return UPDATED, previous
            change_key = item.get("changeKey")
            return (None if change_key is not None and change_key == mark.change_key else UPDATED), None
        if self._is_new(item):
            return CREATED, None
        if self.mode == RoundMode.INCREMENTAL:
            return UPDATED, None
        return (CREATED if self.mode == RoundMode.FIRST and self.emit_history else None), None

    def _is_new(self, item: dict[str, Any]) -> bool:
        if self.baseline is None:
            return self.mode != RoundMode.FIRST
        received = _parse_time(item.get("receivedDateTime"))
        return received is not None and received >= self.baseline

    def publish_vanished(self) -> None:
        """After a full round: ledger messages it did not return were deleted meanwhile."""
        gone = list(self.ledger.live_message_ids(self.account.account_id, unseen_in=self.round_id))
        for start in range(0, len(gone), 98):
            self.prove_lease()
            events, marks = self.prepare(
                {"id": mid, "@removed": {"reason": "deleted"}} for mid in gone[start : start + 98]
            )
            self._emit(events)
            self._commit(marks, self.saved, force=True)

    def _emit(self, events: list[str]) -> None:
        if events:
            self.prove_lease()
            self.services.queues.send(MAIL_EVENT_QUEUE, events)



def _folder_of(mark: LedgerMark) -> str:
    # Marks written before folders were kept belong to the inbox, the only folder then.
    return mark.folder or INBOX



def _baseline(account: Account) -> dt.datetime | None:
    # receivedDateTime has whole seconds: compare with the connect time's second.
    if account.connected_at is None:
        return None
    return account.connected_at.astimezone(dt.UTC).replace(microsecond=0)



def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed
