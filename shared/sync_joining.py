"""Burst bookkeeping of one process: triggers a finished round served already, and
triggers that join a round running in this process instead of running one each.

Both are in-process only (no storage write is added), kept in the process's ``Services``
(``Services.bursts``, one ``BurstBook``), and keyed by the sync key of an account's resource
(``shared.resources.Resource.sync_key``): the mail of an account and its drive are bookkept
apart.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.delta_round import SyncResult

if TYPE_CHECKING:
    from shared.bootstrap import Services

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
_SERVED_SIZE = 65_536


class BurstBook:
    """One process's burst bookkeeping, by sync key: when its last round that saved a
    deltaLink began, and the rounds running with the triggers that wait for them."""

    def __init__(self) -> None:
        self.served_since: dict[str, dt.datetime] = {}
        self.served_lock = threading.Lock()
        self.joiners: dict[str, Joiners] = {}
        self.joiners_lock = threading.Lock()


def mark_served(services: Services, sync_key: str, began: dt.datetime) -> None:
    """A round of this process that began at ``began`` ended with its deltaLink saved."""
    book = services.bursts
    with book.served_lock:
        known = book.served_since.get(sync_key)
        if known is None or began > known:
            if known is None and len(book.served_since) >= _SERVED_SIZE:
                book.served_since.clear()
            book.served_since[sync_key] = began


def served_already(services: Services, sync_key: str, received_at: dt.datetime, *, same_clock: bool) -> bool:
    """Whether a round of this process that began after ``received_at`` has ended with its
    deltaLink saved: then the changes a trigger received at that time announces are out."""
    book = services.bursts
    with book.served_lock:
        since = book.served_since.get(sync_key)
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

# Rounds one call leads before it hands the lead to a waiting trigger (as many as one lease
# covers, shared.sync_runner.MAX_ROUNDS_PER_LEASE).
_MAX_ROUNDS_LED = 20


class Joiners:
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


def joined(
    services: Services,
    sync_key: str,
    account_id: str,
    reason: str,
    notified_at: dt.datetime | None,
    run_once: Callable[[Joiners], SyncResult],
) -> SyncResult:
    """Wait for the next round a call of this process runs for ``sync_key``, or, when none
    is running, lead: ``run_once`` runs a sync with this state until no trigger waits."""
    book = services.bursts
    with book.joiners_lock:
        state = book.joiners.setdefault(sync_key, Joiners())
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
                result = run_once(state)
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
        with book.joiners_lock:
            with state.cond:
                idle = not state.leading and state.wanted <= max(state.ok, state.failed)
            if idle and book.joiners.get(sync_key) is state:
                del book.joiners[sync_key]
