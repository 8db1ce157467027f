"""One delta round of one resource of an account, page by page: the part of a sync that turns
Graph's delta pages into events, ledger marks and kept progress, the same for every resource
(``shared.sync`` runs the mail folders' rounds, ``shared.drive_sync`` the drive's, both under
the lease of ``shared.sync_runner``).

The loop is the same for every resource: prove the lease, fetch a page, let the resource
turn its items into events and marks (``RoundItems.prepare``), publish the events, commit
the marks with the round's progress under the lease, keep the place when time runs out,
and resume from it. What an item becomes (an event, a mark, nothing), which ledger partition
it is marked in (the resource's sync key) and which queue its events go to is the
resource's part, passed in (``RoundItems``: ``shared.mail_round`` for a mail folder,
``shared.drive_round`` for the drive).

Each page is proved under the lease before anything is written, its events are published
before its marks are committed, and the place is kept so that the next invocation goes on
where this one stopped (docs/design.md "Processing").
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from shared.errors import DeltaTokenExpiredError, UpstreamError
from shared.events import Change
from shared.ledger import LeaseLostError, LedgerMark, SyncProgress
from shared.models import Account

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import DeltaPage, JsonObject

log = logging.getLogger(__name__)

# A holder proves its lease (a conditional write) when its last proof is older than this,
# before a Graph call and again before it publishes: an event goes out at most this long
# (plus the queue write) after the holder last proved it held the lease.
LEASE_RENEW_AFTER = dt.timedelta(seconds=10)
# Progress of pages that publish nothing (history in a first round) is kept this often.
PROGRESS_EVERY_SECONDS = 5.0
# Marks per vanished batch after a full round: one ledger transaction's worth.
VANISHED_BATCH = 98


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

    def add(self, changes: Iterable[Change]) -> None:
        """Count published events by the change each announced."""
        for change in changes:
            if change is Change.CREATED:
                self.created += 1
            elif change is Change.UPDATED:
                self.updated += 1
            else:
                self.deleted += 1


@dataclass
class SyncLease:
    holder: str
    renewed_at: dt.datetime  # the holder's last proof that it holds the lease
    deadline: float  # monotonic time after which no new page is fetched
    monotonic: Callable[[], float]
    # The last round began in this invocation and saved its deltaLink (``served_already``).
    served: bool = False
    # Rounds that ended under this hold (``shared.sync_runner.with_lease``): each dropped
    # its kept place, and nobody else writes the partition while the lease is ours, so the
    # next round starts with no place kept and need not read it.
    rounds_done: int = 0
    # The account as the last round under this hold read or saved it (None: read it).
    # Another writer's change since then shows as an ETag conflict on the next save, which
    # reads it again; a disconnect seizes the lease itself.
    account: Account | None = None

    def out_of_time(self) -> bool:
        return self.monotonic() >= self.deadline


def kept_place(services: Services, key: str, lease: SyncLease) -> SyncProgress | None:
    """Where an unfinished round of ``key`` resumes, read from the ledger; None without a
    read in a further round of one hold (the last round dropped its place, and nobody else
    writes the partition while the lease is ours)."""
    return None if lease.rounds_done else services.ledger.progress(key)


@dataclass
class PageWork:
    """What one page (or one batch of vanished items) comes to: the encoded events in the
    order they are published, the change each announces, and the ledger marks committed
    once they are out (by item id: the last mark of an item wins)."""

    events: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    marks: dict[str, LedgerMark] = field(default_factory=dict)

    def publish(self, event: str, change: Change, mark: LedgerMark) -> None:
        self.events.append(event)
        self.changes.append(change)
        self.marks[mark.message_id] = mark

    def keep(self, mark: LedgerMark) -> None:
        """A mark without an event: a baseline, or an item a full round saw unchanged."""
        self.marks[mark.message_id] = mark


class RoundItems(Protocol):
    """The part of a delta round that differs per resource."""

    @property
    def queue(self) -> str:
        """The queue the resource's events go to."""
        ...

    def fetch(self, link: str | None) -> DeltaPage:
        """One delta page: the round's first (``link`` None) or the one a link names."""
        ...

    def prepare(self, round_: DeltaRound, items: list[JsonObject]) -> PageWork:
        """The events and marks of one page's items (``round_.marks`` reads the ledger)."""
        ...

    def vanished(self, round_: DeltaRound, item_ids: list[str]) -> PageWork:
        """After a full round: items of the ledger it did not return, deleted meanwhile."""
        ...


class DeltaRound:
    """One delta round of one resource of an account, page by page.

    ``key`` is the resource's sync key (``Resource.sync_key``): the ledger partition its
    marks, progress and lease live in. ``place`` names the round in its kept progress (a
    mail folder's key; None where a resource has a single round)."""

    def __init__(
        self,
        services: Services,
        key: str,
        items: RoundItems,
        result: SyncResult,
        mode: str,
        round_id: str,
        lease: SyncLease,
        saved: SyncProgress | None,
        place: str | None = None,
    ) -> None:
        self.services = services
        self.key = key
        self.items = items
        self.result = result
        self.mode = mode
        self.round_id = round_id
        self.lease = lease
        self.place = place
        self.ledger = services.ledger
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
            page = self.items.fetch(link)
            self._pages_here += 1
            self.result.pages += 1
            # The call may have outlasted the lease: prove it again before anything is written.
            self.prove_lease()
            if not page.next_link and not page.delta_link:
                raise UpstreamError("delta page without nextLink or deltaLink")
            items = [item for item in page.items if isinstance(item, dict) and isinstance(item.get("id"), str)]
            work = self.items.prepare(self, items)
            self._emit(work)
            marks = list(work.marks.values())
            if page.next_link:
                self._commit(marks, SyncProgress(page.next_link, self.mode, self.round_id, self.place))
                link = page.next_link
            else:
                # The last page: a full round keeps its place until the vanished are published.
                ending = self.saved if self.mode == RoundMode.FULL else None
                if marks or (self.saved is not None and ending is None):
                    self._commit(marks, ending, force=True)
                return page.delta_link

    def marks(self, item_ids: list[str]) -> dict[str, LedgerMark]:
        """The ledger marks of those items that have one, in the resource's partition."""
        return self.ledger.marks(self.key, item_ids) if item_ids else {}

    def prove_lease(self, *, force: bool = False) -> None:
        """A conditional write of the lease when the last proof is old; LeaseLostError if it
        is no longer ours."""
        now = self.services.clock.now()
        if not force and now - self.lease.renewed_at < LEASE_RENEW_AFTER:
            return
        if not self.ledger.renew_lease(self.key, self.lease.holder, now):
            raise LeaseLostError(f"sync lease of {self.key} was taken over")
        self.lease.renewed_at = now

    def finish(self) -> None:
        """Drop the round's kept place once its deltaLink is saved."""
        if self.saved is not None:
            self.ledger.commit(self.key, self.lease.holder, self.services.clock.now(), [], None)

    def _keep_place(self, link: str, *, force: bool = False) -> None:
        if self.saved is not None and self.saved.link == link:
            return
        self._commit([], SyncProgress(link, self.mode, self.round_id, self.place), force=force)

    def _commit(self, marks: list[LedgerMark], progress: SyncProgress | None, *, force: bool = False) -> None:
        # Pages that publish nothing keep their place every few seconds, not every page.
        if not marks and not force and self.lease.monotonic() - self._saved_at < PROGRESS_EVERY_SECONDS:
            return
        now = self.services.clock.now()
        self.ledger.commit(self.key, self.lease.holder, now, marks, progress)
        self.lease.renewed_at = now
        self.saved = progress
        self._saved_at = self.lease.monotonic()

    def publish_vanished(self) -> None:
        """After a full round: ledger items it did not return were deleted meanwhile."""
        gone = list(self.ledger.live_message_ids(self.key, unseen_in=self.round_id))
        for start in range(0, len(gone), VANISHED_BATCH):
            self.prove_lease()
            work = self.items.vanished(self, gone[start : start + VANISHED_BATCH])
            self._emit(work)
            self._commit(list(work.marks.values()), self.saved, force=True)

    def _emit(self, work: PageWork) -> None:
        if work.events:
            self.prove_lease()
            self.services.queues.send(self.items.queue, work.events)
        self.result.add(work.changes)


def run_round(
    services: Services,
    key: str,
    items: RoundItems,
    result: SyncResult,
    lease: SyncLease,
    *,
    link: str | None,
    resumed: SyncProgress | None,
    saved: SyncProgress | None,
    place: str | None = None,
) -> tuple[DeltaRound, str | None]:
    """One round of a resource to its deltaLink: from the place an earlier invocation kept
    (``resumed``), else from ``link`` (None: a first round). After ``410 Gone`` a full round
    from the start, which ends by publishing the vanished. Returns the round that ran and
    its deltaLink, None when it stopped for time (its place kept). The lease is proved last,
    so the caller saves the deltaLink within ``LEASE_RENEW_AFTER`` of a proof: no other
    holder can have saved a newer one."""
    if resumed is not None:
        result.resumed = True
        mode, link, round_id = resumed.mode, resumed.link, resumed.round_id
    else:
        mode, round_id = (RoundMode.INCREMENTAL if link else RoundMode.FIRST), uuid.uuid4().hex
    round_ = DeltaRound(services, key, items, result, mode, round_id, lease, saved, place)
    try:
        delta_link = round_.run(link)
    except DeltaTokenExpiredError:
        log.warning("delta link of %s%s expired (410): full round", key, f", {place}" if place else "")
        result.restarted = True
        # From what the failed round left stored: the full round's end replaces it.
        round_ = DeltaRound(services, key, items, result, RoundMode.FULL, uuid.uuid4().hex, lease, round_.saved, place)
        delta_link = round_.run(None)
    if delta_link is None:
        return round_, None
    if round_.mode == RoundMode.FULL:
        round_.publish_vanished()
    result.rounds += 1
    round_.prove_lease()
    return round_, delta_link


# --- what the resources share when they tell history from news --------------------------


def connect_baseline(account: Account) -> dt.datetime | None:
    """The account's connect time to the second (Graph's times have whole seconds): what was
    there before it is history."""
    if account.connected_at is None:
        return None
    return account.connected_at.astimezone(dt.UTC).replace(microsecond=0)


def parse_graph_time(value: object) -> dt.datetime | None:
    """A Graph ``DateTimeOffset`` (``2026-11-20T12:00:00Z``) as an aware datetime; None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed
