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
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.config import MAIL_SYNC_QUEUE
from shared.delta_round import LEASE_RENEW_AFTER, DeltaRound, RoundMode, SyncLease, SyncResult
from shared.errors import (
    DeltaTokenExpiredError,
    InvalidInputError,
    ReauthRequiredError,
    UpstreamError,
)
from shared.ledger import LeaseLostError, SyncProgress
from shared.mail_folders import INBOX, WatchedFolders, watched_folders
from shared.models import Account, AccountStatus
from shared.retry import update_with_etag, with_fresh_token

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import GraphAuth

log = logging.getLogger(__name__)

FOLDER = INBOX
LEASE_STALE_AFTER = dt.timedelta(seconds=60)
# How long a disconnect waits after seizing the lease from a running round, counted from
# that round's last proof: by then the round can no longer publish (LEASE_RENEW_AFTER plus
# a queue write's time).
PUBLISH_FENCE = LEASE_RENEW_AFTER + dt.timedelta(seconds=5)
MAX_ROUNDS_PER_LEASE = 20
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

    def run(lease: SyncLease) -> bool:
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

    def run(lease: SyncLease) -> bool:
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




def _with_lease(
    services: Services,
    account_id: str,
    result: SyncResult,
    run: Callable[[SyncLease], bool],
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
    lease = SyncLease(holder, now, clock() + budget, clock)
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
    lease: SyncLease,
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
    lease: SyncLease,
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
        mode, round_id = RoundMode.FIRST, uuid.uuid4().hex
    else:
        mode, round_id = RoundMode.INCREMENTAL, uuid.uuid4().hex

    def new_round(mode: str, round_id: str) -> DeltaRound:
        return DeltaRound(services, account, auth, result, mode, round_id, emit_history, lease, saved, watched, folder)

    round_ = new_round(mode, round_id)
    try:
        delta_link = round_.run(link)
    except DeltaTokenExpiredError:
        log.warning("delta link of account %s, folder %s expired (410): full round", account.account_id, folder)
        result.restarted = True
        round_ = new_round(RoundMode.FULL, uuid.uuid4().hex)
        delta_link = round_.run(None)
    if delta_link is None:
        return None
    if round_.mode == RoundMode.FULL:
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
