"""Mailbox sync: run the delta query of each watched folder and publish one event per
changed message.

Notifications only say "something changed" (and may be dropped, doubled or reordered);
the delta query is the source of truth (docs/graph-notes.md "Mail delta query"). A round
starts from the account's stored deltaLink, follows ``@odata.nextLink`` pages and ends
with a new deltaLink, saved with the account's ETag. Events of a page are published
before the page is marked in the ledger, and the deltaLink is saved last: a crash anywhere
means the round runs again from its last saved place and the ledger filters what was
already published. At most one page of events can be published twice (a crash between
publish and mark), with the same CloudEvent ids.

One account runs one round at a time: the ledger's sync lease. The lease also fences
every write of a round (``MailLedger.commit``): marks and progress are written in one
transaction with the lease under its ETag, the lease is proved again after every Graph
call and before every publish, and the deltaLink is saved only right after such a proof.
A holder whose lease went stale during a long call (another worker took over) or was
seized by a disconnect stops there and writes nothing. Each Graph call is bounded below
the lease's staleness (``shared.adapters.graph.MAX_CALL_SECONDS``, retries and waits on
429 included), so a healthy worker keeps its lease.

A round that does not fit in one invocation (``SYNC_TIME_BUDGET_SECONDS``: a large
mailbox's first round, a full round after 410) keeps its place (the next page's link, in
the ledger) and hands the rest to the next invocation through queue ``mail-sync``; a
resumed round ends with one more incremental round for the mail that came meanwhile.
Triggers that arrive while a round runs leave a pending mark; the holder runs one more
round for all of them, and hands pending work to the queue rather than dropping it when it
has run ``MAX_ROUNDS_PER_LEASE`` rounds or is out of time.

Folders (``MAIL_FOLDERS``, ``shared.mail_folders``): one sync runs one round per watched
folder, the inbox first, each from its own deltaLink (the inbox's on the account record,
the others' in ``FolderDeltaLinks``); a round's place names its folder. Ids are immutable,
so the ledger mark of a message remembers the folder it was last published in:
- a message seen in folder B whose mark says folder A moved: one ``updated`` event with
  ``folder`` B and ``previousFolder`` A (whichever folder's round comes first);
- ``@removed`` in the mark's own folder: where the message is now is read from Graph
  (``locate``): gone -> ``deleted`` (reason ``deleted``); in another watched folder ->
  nothing here (that folder's round publishes the move); elsewhere -> ``deleted`` with
  reason ``moved`` (Deleted Items: ``deleted``);
- ``@removed`` in another folder than the mark's: the move was published already.

created / updated / deleted (delta does not say which):
- a message with no ledger mark is ``created`` when it was received after the account
  connected (``connected_at``); an older one is history: ``updated`` when it shows up in
  an incremental round (it changed), ignored in a first or full round (where no ledger
  row is read for it);
- a mark with another ``changeKey`` is ``updated``; the same ``changeKey`` is a replay;
- ``@removed`` is ``deleted``, once; after ``410 Gone`` a full round runs and the messages
  of the ledger it no longer returns are ``deleted``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.config import MAIL_EVENT_QUEUE, MAIL_SYNC_QUEUE
from shared.errors import (
    DeltaTokenExpiredError,
    InvalidInputError,
    ReauthRequiredError,
    UpstreamError,
)
from shared.events import CREATED, DELETED, UPDATED, encode_event, mail_event
from shared.ledger import LeaseLostError, LedgerMark, SyncProgress
from shared.mail_folders import DELETED_ITEMS, INBOX, WatchedFolders, locate, watched_folders
from shared.models import Account, AccountStatus
from shared.retry import update_with_etag, with_fresh_token

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import GraphAuth

log = logging.getLogger(__name__)

FOLDER = INBOX
LEASE_STALE_AFTER = dt.timedelta(seconds=60)
# A holder proves its lease (a conditional write) when its last proof is older than this,
# before a Graph call and again before it publishes: an event goes out at most this long
# (plus the queue write) after the holder last proved it held the lease.
LEASE_RENEW_AFTER = dt.timedelta(seconds=10)
# How long a disconnect waits after seizing the lease from a running round, counted from
# that round's last proof: by then the round can no longer publish (LEASE_RENEW_AFTER plus
# a queue write's time).
PUBLISH_FENCE = LEASE_RENEW_AFTER + dt.timedelta(seconds=5)
MAX_ROUNDS_PER_LEASE = 20
# Progress of pages that publish nothing (history in a first round) is kept this often.
PROGRESS_EVERY_SECONDS = 5.0
_SAVE_ATTEMPTS = 5
_JOB_VERSION = 1
_monotonic = time.monotonic  # the budget's clock (tests replace it)

__all__ = [
    "LEASE_STALE_AFTER",
    "LeaseLostError",
    "SyncResult",
    "record_initial_delta",
    "served_already",
    "sync_mailbox",
]


class _Mode:
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


# --- entry points ----------------------------------------------------------------------


def request_sync(services: Services, account_id: str, *, reason: str) -> None:
    """Queue a delta round for the account (queue ``mail-sync``): the first round after a
    connect, or the rest of a round that did not fit in one invocation."""
    body = json.dumps({"v": _JOB_VERSION, "accountId": account_id, "reason": reason})
    services.queues.send(MAIL_SYNC_QUEUE, [body])


def parse_sync_job(body: bytes | str) -> tuple[str, str]:
    """(account id, reason) of a ``mail-sync`` message; ``InvalidInputError`` if malformed."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInputError("sync job is not JSON") from None
    if not isinstance(document, dict) or document.get("v") != _JOB_VERSION:
        raise InvalidInputError("sync job is not a version 1 object")
    account_id, reason = document.get("accountId"), document.get("reason", "requested")
    if not isinstance(account_id, str) or not account_id or not isinstance(reason, str):
        raise InvalidInputError("sync job has no accountId")
    return account_id, reason[:40]


def record_initial_delta(
    services: Services, account: Account, auth: GraphAuth, *, emit_history: bool
) -> Account:
    """The connect's first delta round, in this invocation: follow the pages, store the
    deltaLink (or keep the place and hand the rest to the queue when it does not fit).

    History (mail received before ``account.connected_at``) is published only with
    ``emit_history``; mail that arrived since the connect started is published as created.
    Returns the saved account (unchanged when another round holds the lease)."""
    result = SyncResult(account.account_id, "connect")

    def run(lease: _Lease) -> bool:
        current = services.accounts.get(account.account_id) or account
        return _rounds(services, current, auth, result, emit_history, lease)

    _with_lease(services, account.account_id, result, run)
    return services.accounts.get(account.account_id) or account


def sync_mailbox(
    services: Services,
    account_id: str,
    *,
    reason: str,
    notified_at: dt.datetime | None = None,
    monotonic: Callable[[], float] | None = None,
    join: bool = False,
) -> SyncResult:
    """Bring the account's events up to date with its inbox (processing, lifecycle, renewal
    catch-up, operator resync, queued rounds). Returns what was published, or why nothing ran.

    ``ReauthRequiredError`` is absorbed (the token provider marked the account), as is a
    lost lease (its new holder does the work); Graph and storage failures propagate so
    that the queue retries.

    With ``join`` (a change notification's trigger), a call that finds a round of the
    account running in this process waits for the next round it runs instead of running
    one of its own (``_Joiners``): a burst of one mailbox's mail costs a few rounds, not
    one each.
    """
    if join:
        return _joined(services, account_id, reason, notified_at, monotonic)
    return _sync_once(services, account_id, reason, notified_at, monotonic, None)


def _sync_once(
    services: Services,
    account_id: str,
    reason: str,
    notified_at: dt.datetime | None,
    monotonic: Callable[[], float] | None,
    joiners: _Joiners | None,
) -> SyncResult:
    result = SyncResult(account_id, reason)
    emit_history = services.settings.emit_history_on_connect

    def run(lease: _Lease) -> bool:
        # Read under the lease: the deltaLink is the one the previous holder saved.
        account = services.accounts.get(account_id)
        if account is None:
            result.skipped = "unknown_account"
            return True
        if account.status is not AccountStatus.ACTIVE:
            result.skipped = "inactive"
            return True
        tried: list[Account] = []
        at = joiners.notified_at(notified_at) if joiners is not None else notified_at

        def rounds(auth: GraphAuth) -> bool:
            # Once more after a refused token: from the account as it is now.
            current = services.accounts.get(account_id) or account if tried else account
            tried.append(current)
            return _rounds(services, current, auth, result, emit_history, lease, notified_at=at)

        return with_fresh_token(services.tokens, account_id, rounds, lambda: services.tokens.graph_auth(account))

    try:
        _with_lease(services, account_id, result, run, monotonic=monotonic, joiners=joiners)
    except ReauthRequiredError:
        log.warning("sync of account %s skipped: it must sign in again", account_id)
        result.skipped = "reauth_required"
        if joiners is not None:
            joiners.done(result)
        return result
    except LeaseLostError:
        log.warning("sync of account %s stopped: its lease was taken over; nothing more written", account_id)
        result.skipped = "lease_lost"
        if joiners is not None:
            joiners.done(result)  # the new holder's round began after the joined triggers came
        return result
    except UpstreamError as error:
        _note_error(services, account_id, f"{type(error).__name__}: {error}")
        raise
    log.info(
        "sync of account %s (%s): %d created, %d updated, %d deleted in %d page(s)%s%s%s%s",
        account_id,
        reason,
        result.created,
        result.updated,
        result.deleted,
        result.pages,
        ", after 410 a full round" if result.restarted else "",
        ", resumed" if result.resumed else "",
        ", the rest queued" if result.handed_over else "",
        ", busy: the running round takes it" if result.skipped == "busy" else "",
    )
    return result


# --- the lease and the rounds it covers ------------------------------------------------


@dataclass
class _Lease:
    holder: str
    renewed_at: dt.datetime  # the holder's last proof that it holds the lease
    deadline: float  # monotonic time after which no new page is fetched
    monotonic: Callable[[], float]
    # The last round began in this invocation and saved its deltaLink (``served_already``).
    served: bool = False

    def out_of_time(self) -> bool:
        return self.monotonic() >= self.deadline


def _with_lease(
    services: Services,
    account_id: str,
    result: SyncResult,
    run: Callable[[_Lease], bool],
    *,
    monotonic: Callable[[], float] | None = None,
    joiners: _Joiners | None = None,
) -> None:
    """Run rounds under the account's lease: ``run`` returns False when it stopped for time
    with its place kept. Pending work is never dropped: it runs here, or goes to the queue.

    ``joiners`` (triggers of this process waiting for a round) learn when a round that
    began after they arrived has ended: ``begin`` comes before the lease is taken and
    before each further round, ``done`` once the round saved its deltaLink, found the
    lease busy (its holder runs one more round for the pending mark) or handed its rest
    to the queue."""
    ledger = services.ledger
    holder = uuid.uuid4().hex
    now = services.clock.now()
    if joiners is not None:
        joiners.begin()
    if not ledger.acquire_lease(account_id, holder, now, LEASE_STALE_AFTER):
        result.skipped = "busy"
        if joiners is not None:
            joiners.done(result)
        return
    budget = float(getattr(services.settings, "sync_time_budget_seconds", 120))
    clock = monotonic or _monotonic
    lease = _Lease(holder, now, clock() + budget, clock)
    try:
        extra_round = False
        for number in range(MAX_ROUNDS_PER_LEASE):
            if number and joiners is not None:
                joiners.begin()
            resumed_before = result.resumed
            began = services.clock.now()
            if not run(lease):
                # Let go first: the queued round must find the lease free, not mark it pending.
                ledger.release_lease(account_id, holder, abandon=True)
                _hand_over(services, result, "continue")
                if joiners is not None:
                    joiners.done(result)
                return
            if joiners is not None:
                joiners.done(result)
            if result.skipped is not None:
                ledger.release_lease(account_id, holder, abandon=True)
                return
            if lease.served:
                _served(services, account_id, began)
            # A round that went on from an earlier invocation took long: one more, for the
            # mail that arrived meanwhile and whose triggers may have been dropped with it.
            if result.resumed and not resumed_before and not extra_round:
                extra_round = True
            elif joiners is not None and joiners.waiting():
                pass  # triggers of this process came during the round: one more, same lease
            elif ledger.release_lease(account_id, holder):
                return
            if lease.out_of_time():
                break
        # Work is pending (another trigger marked the lease) but this invocation has run
        # its share: the queue runs it, rather than the pending mark being dropped.
        ledger.release_lease(account_id, holder, abandon=True)
        if joiners is not None:
            joiners.begin()
        _hand_over(services, result, "pending")
        if joiners is not None:
            joiners.done(result)
    except LeaseLostError:
        raise  # not ours any more: nothing to give back
    except BaseException:
        try:
            ledger.release_lease(account_id, holder, abandon=True)
        except Exception:  # noqa: BLE001 - the original error matters more; the lease goes stale
            log.exception("could not release the sync lease of account %s", account_id)
        raise


# --- triggers a finished round served already ---------------------------------------------
#
# A trigger says only "the mailbox changed before I was received": a delta round that began
# (took its first delta page) after that and saved its deltaLink has published the change.
# This process keeps, per account, when the last such round of its own began; a trigger
# received before then is served, and costs no storage operation or Graph call. Its queue
# message is deleted after that round's deltaLink was saved, so a crash loses nothing.
# The trigger's receivedAt is compared on one clock only: a trigger stamped by another
# process is taken as received ``OTHER_CLOCK_ALLOWANCE`` later than it says.

OTHER_CLOCK_ALLOWANCE = dt.timedelta(seconds=2)
_served_since: dict[tuple[int, str], dt.datetime] = {}
_served_lock = threading.Lock()
_SERVED_SIZE = 65_536


def _served(services: Services, account_id: str, began: dt.datetime) -> None:
    key = (id(services), account_id)
    with _served_lock:
        known = _served_since.get(key)
        if known is None or began > known:
            if known is None and len(_served_since) >= _SERVED_SIZE:
                _served_since.clear()
            _served_since[key] = began


def served_already(services: Services, account_id: str, received_at: dt.datetime, *, same_clock: bool) -> bool:
    """Whether a round of this process that began after ``received_at`` has ended with its
    deltaLink saved: then the changes a trigger received at that time announces are out."""
    with _served_lock:
        since = _served_since.get((id(services), account_id))
    if since is None:
        return False
    return (received_at if same_clock else received_at + OTHER_CLOCK_ALLOWANCE) < since


# --- triggers of one process joining a running round -------------------------------------
#
# Why a joined trigger loses nothing: its queue message is deleted only when its function
# returns, and it returns only once a round numbered after its arrival has ended (``done``),
# or with that round's error (the message goes back to the queue). A round's number is
# taken (``begin``) under the same lock the trigger registers under, before the round takes
# the lease or makes its first delta call; Graph notifies after the change is in the
# mailbox, so a delta query begun after the trigger arrived returns the change. "Ended" is
# one of: the deltaLink was saved (the change is published and marked); the lease was busy
# (the pending mark was left, or found, after the trigger arrived, and the holder runs one
# more round before it lets go, as for any trigger of another instance); the rest was
# handed to queue mail-sync (a durable message written after the trigger arrived); the
# lease was taken over during the round (its new holder's round began after the trigger
# arrived). A crash of the process before that leaves the trigger's message in the queue,
# to be delivered again. No storage write is added: waiting is in-process.

_MAX_ROUNDS_LED = MAX_ROUNDS_PER_LEASE  # then the leader hands the lead to a waiting trigger


class _Joiners:
    """The rounds one process runs for one account, and the triggers waiting for them."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.leading = False  # a call of this process is running the account's rounds
        self.started = 0  # number of the last round begun
        self.ok = 0  # number of the last round that ended without an error
        self.failed = 0  # number of the last round that raised
        self.error: BaseException | None = None
        self.wanted = 0  # the highest round number a waiting trigger needs
        self.skipped: str | None = None
        self._notified_at: dt.datetime | None = None

    def begin(self) -> None:
        with self.cond:
            self.started += 1

    def done(self, result: SyncResult) -> None:
        with self.cond:
            self.ok = self.started
            self.skipped = result.skipped
            self.cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self.cond:
            self.failed = self.started
            self.error = error
            self.cond.notify_all()

    def waiting(self) -> bool:
        """Whether a trigger needs a round not begun yet."""
        with self.cond:
            return self.wanted > self.started

    def notified_at(self, own: dt.datetime | None) -> dt.datetime | None:
        with self.cond:
            latest, self._notified_at = self._notified_at, None
        if latest is None or (own is not None and own >= latest):
            return own
        return latest


_joiners: dict[tuple[int, str], _Joiners] = {}
_joiners_lock = threading.Lock()


def _joined(
    services: Services,
    account_id: str,
    reason: str,
    notified_at: dt.datetime | None,
    monotonic: Callable[[], float] | None,
) -> SyncResult:
    key = (id(services), account_id)
    with _joiners_lock:
        state = _joiners.setdefault(key, _Joiners())
    with state.cond:
        if state.leading:
            need = state.started + 1
            state.wanted = max(state.wanted, need)
            if notified_at is not None and (state._notified_at is None or notified_at > state._notified_at):
                state._notified_at = notified_at
            while state.leading and state.ok < need and state.failed < need:
                state.cond.wait()
            if state.ok >= need:
                skipped = state.skipped if state.skipped in ("unknown_account", "inactive") else None
                return SyncResult(account_id, reason, joined=True, skipped=skipped)
            if state.failed >= need and state.error is not None:
                raise state.error
            # The leader stopped before our round: lead it ourselves.
        state.leading = True
    led = 0
    try:
        while True:
            led += 1
            try:
                result = _sync_once(services, account_id, reason, notified_at, monotonic, state)
            except BaseException as error:
                state.fail(error)
                raise
            with state.cond:
                if state.wanted > state.ok and led < _MAX_ROUNDS_LED:
                    continue  # triggers came after the last round began
                return result
    finally:
        with state.cond:
            state.leading = False
            state.cond.notify_all()
        with _joiners_lock:
            with state.cond:
                idle = not state.leading and state.wanted <= max(state.ok, state.failed)
            if idle and _joiners.get(key) is state:
                del _joiners[key]


def _hand_over(services: Services, result: SyncResult, reason: str) -> None:
    request_sync(services, result.account_id, reason=reason)
    result.handed_over = True


def _rounds(
    services: Services,
    account: Account,
    auth: GraphAuth,
    result: SyncResult,
    emit_history: bool,
    lease: _Lease,
    *,
    notified_at: dt.datetime | None = None,
) -> bool:
    """One round per watched folder, from the place an earlier invocation kept (its
    folder first) or from each folder's deltaLink. True when every folder ended with a saved
    deltaLink, False when a round stopped for time (place kept)."""
    progress = services.ledger.progress(account.account_id)
    lease.served = False
    watched = watched_folders(services, auth)
    links: dict[str, str] = {}
    if any(key != INBOX for key in watched.keys):
        links = services.folder_deltas.links(account.account_id, account.connected_at)
    links[INBOX] = account.delta_link or ""
    first = 0
    stale: SyncProgress | None = None
    # The round serves the triggers that came before it began (shared.sync._Joiners) only
    # when it walked every folder from its link and each link was kept.
    fresh, kept_all = progress is None, True
    if progress is not None:
        if (progress.folder or INBOX) in watched.keys:
            first = watched.keys.index(progress.folder or INBOX)
        else:  # its folder is no longer watched: the place is dropped by the next write
            stale, progress = progress, None
    for index in range(first, len(watched.keys)):
        folder = watched.keys[index]
        resumed = progress if index == first else None
        done = _folder_round(
            services, account, auth, result, emit_history, lease, watched, folder,
            links.get(folder) or None, resumed, stale, notified_at=notified_at,
        )
        if done is None:
            return False
        kept_all = kept_all and done
        stale = None
    if INBOX not in watched.keys:
        kept_all = _save_delta_link(services, account, None, notified_at) and kept_all
    lease.served = fresh and kept_all
    return True


def _folder_round(
    services: Services,
    account: Account,
    auth: GraphAuth,
    result: SyncResult,
    emit_history: bool,
    lease: _Lease,
    watched: WatchedFolders,
    folder: str,
    link: str | None,
    resumed: SyncProgress | None,
    stale: SyncProgress | None,
    *,
    notified_at: dt.datetime | None = None,
) -> bool | None:
    """One folder's round: None when it stopped for time (its place kept), else whether the
    deltaLink it ended with was kept (False: the account was disconnected meanwhile)."""
    saved = resumed or stale
    if resumed is not None:
        result.resumed = True
        mode, link, round_id = resumed.mode, resumed.link, resumed.round_id
    elif link is None:
        mode, round_id = _Mode.FIRST, uuid.uuid4().hex
    else:
        mode, round_id = _Mode.INCREMENTAL, uuid.uuid4().hex

    def new_round(mode: str, round_id: str) -> _Round:
        return _Round(services, account, auth, result, mode, round_id, emit_history, lease, saved, watched, folder)

    round_ = new_round(mode, round_id)
    try:
        delta_link = round_.run(link)
    except DeltaTokenExpiredError:
        log.warning("delta link of account %s, folder %s expired (410): full round", account.account_id, folder)
        result.restarted = True
        round_ = new_round(_Mode.FULL, uuid.uuid4().hex)
        delta_link = round_.run(None)
    if delta_link is None:
        return None
    if round_.mode == _Mode.FULL:
        round_.publish_vanished()
    result.rounds += 1
    # Saved within LEASE_RENEW_AFTER of a proof: no other holder can have saved a newer one.
    round_.prove_lease()
    if folder == INBOX:
        kept = _save_delta_link(services, account, delta_link, notified_at)
    else:
        services.folder_deltas.save(account.account_id, folder, delta_link, account.connected_at)
        kept = True
    if round_.saved is not None:
        services.ledger.commit(account.account_id, lease.holder, services.clock.now(), [], None)
    return kept


class _Round:
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
        lease: _Lease,
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
                ending = self.saved if self.mode == _Mode.FULL else None
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
        if self.mode == _Mode.INCREMENTAL or (self.mode == _Mode.FIRST and self.emit_history):
            wanted = items
        elif self.mode == _Mode.FULL:
            wanted = items
        else:
            wanted = [item for item in items if "@removed" in item or self._is_new(item)]
        if not wanted:
            return [], []
        known = self.ledger.marks(self.account.account_id, [item["id"] for item in wanted])
        events: list[str] = []
        marks: dict[str, LedgerMark] = {}
        departed: list[LedgerMark] = []
        seen = self.round_id if self.mode == _Mode.FULL else None
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
                    self.mode == _Mode.FULL
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
            return (DELETED if self.mode == _Mode.INCREMENTAL else None), None
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
        if self.mode == _Mode.INCREMENTAL:
            return UPDATED, None
        return (CREATED if self.mode == _Mode.FIRST and self.emit_history else None), None

    def _is_new(self, item: dict[str, Any]) -> bool:
        if self.baseline is None:
            return self.mode != _Mode.FIRST
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


def _save_delta_link(
    services: Services, account: Account, delta_link: str | None, notified_at: dt.datetime | None
) -> bool:
    """Store the new deltaLink with the account's ETag; on a conflict (another writer changed
    another field) reload and apply again: we hold the sync lease, our link is the latest,
    unless the account was disconnected or connected anew meanwhile (then the link belongs
    to a past connection and is dropped)."""

    def change(current: Account) -> bool:
        if current.status is AccountStatus.DISCONNECTED or current.connected_at != account.connected_at:
            log.info("account %s was disconnected or reconnected during its round: deltaLink dropped", account.account_id)
            return False
        if delta_link is not None:  # None: the inbox is not watched, only the sync's time is kept
            current.delta_link = delta_link
        current.last_sync_at = services.clock.now()
        current.last_error = None
        if notified_at is not None and (
            current.last_notification_at is None or notified_at > current.last_notification_at
        ):
            current.last_notification_at = notified_at
        return True

    saved = update_with_etag(
        lambda: services.accounts.get(account.account_id),
        change,
        services.accounts.save,
        first=account,
        attempts=_SAVE_ATTEMPTS,
        what=f"account {account.account_id} (its deltaLink)",
    )
    if saved is None:
        log.info("account %s was disconnected or reconnected during its round: deltaLink dropped", account.account_id)
        return False
    return True


def _note_error(services: Services, account_id: str, message: str) -> None:
    """Record the failure on the account for operators; best effort."""
    try:
        account = services.accounts.get(account_id)
        if account is not None and account.status is not AccountStatus.DISCONNECTED:
            account.last_error = message[:500]
            services.accounts.save(account)
    except Exception:  # noqa: BLE001 - the sync error is what gets raised
        log.warning("could not record the last error of account %s", account_id)
