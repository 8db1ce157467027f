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

The rounds run under the account's sync lease (``shared.sync_runner``: the lease, the
time budget and the hand-over to queue ``mail-sync``, pending work; ``shared.sync_joining``:
the triggers of one process that join a running round, and those a finished round served
already). Each Graph call is bounded below the lease's staleness
(``shared.adapters.graph.MAX_CALL_SECONDS``, retries and waits on 429 included), so a
healthy worker keeps its lease.

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
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.delta_round import LEASE_RENEW_AFTER, SyncLease, SyncResult, kept_place, run_round
from shared.ledger import LeaseLostError, SyncProgress
from shared.mail_folders import INBOX, WatchedFolders, watched_folders
from shared.mail_round import MailItems
from shared.models import Account, AccountStatus
from shared.resources import MAIL
from shared.retry import update_with_etag
from shared.sync_joining import OTHER_CLOCK_ALLOWANCE, served_already
from shared.sync_runner import (
    LEASE_STALE_AFTER,
    MAX_ROUNDS_PER_LEASE,
    PUBLISH_FENCE,
    SyncTarget,
    parse_sync_job,
    request_sync,
    run_sync,
    with_lease,
)

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import GraphAuth

log = logging.getLogger(__name__)

FOLDER = INBOX
_SAVE_ATTEMPTS = 5

__all__ = [
    "LEASE_RENEW_AFTER",
    "LEASE_STALE_AFTER",
    "MAX_ROUNDS_PER_LEASE",
    "OTHER_CLOCK_ALLOWANCE",
    "PUBLISH_FENCE",
    "LeaseLostError",
    "SyncResult",
    "parse_sync_job",
    "record_initial_delta",
    "request_sync",
    "served_already",
    "sync_mailbox",
]


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
        return _rounds(services, current, auth, result, emit_history, lease, None)

    with_lease(services, MAIL, result, run)
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
    one of its own (``shared.sync_joining``): a burst of one mailbox's mail costs a few rounds, not
    one each.
    """
    return run_sync(
        services, account_id, MAIL_SYNC, reason=reason, notified_at=notified_at, monotonic=monotonic, join=join
    )


# --- the mail rounds ------------------------------------------------------------------------


def _rounds(
    services: Services,
    account: Account,
    auth: GraphAuth,
    result: SyncResult,
    emit_history: bool,
    lease: SyncLease,
    notified_at: dt.datetime | None,
) -> bool:
    """One round per watched folder, from the place an earlier invocation kept (its
    folder first) or from each folder's deltaLink. True when every folder ended with a saved
    deltaLink, False when a round stopped for time (place kept)."""
    progress = kept_place(services, account.account_id, lease)
    lease.served = False
    watched = watched_folders(services, auth)
    links: dict[str, str] = {}
    if any(key != INBOX for key in watched.keys):
        links = services.folder_deltas.links(account.account_id, account.connected_at)
    links[INBOX] = account.delta_link or ""
    first = 0
    stale: SyncProgress | None = None
    # The round serves the triggers that came before it began (shared.sync_joining) only
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
        saved = _save_delta_link(services, account, None, notified_at)
        lease.account = saved
        kept_all = saved is not None and kept_all
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
    items = MailItems(services, account, auth, emit_history, watched, folder)
    key = MAIL.sync_key(account.account_id)
    round_, delta_link = run_round(
        services, key, items, result, lease, link=link, resumed=resumed, saved=resumed or stale, place=folder
    )
    if delta_link is None:
        return None
    if folder == INBOX:
        saved = _save_delta_link(services, account, delta_link, notified_at)
        lease.account = saved
        kept = saved is not None
    else:
        services.folder_deltas.save(account.account_id, folder, delta_link, account.connected_at)
        kept = True
    round_.finish()
    return kept


def _save_delta_link(
    services: Services, account: Account, delta_link: str | None, notified_at: dt.datetime | None
) -> Account | None:
    """Store the new deltaLink with the account's ETag; on a conflict (another writer changed
    another field) reload and apply again: we hold the sync lease, our link is the latest,
    unless the account was disconnected or connected anew meanwhile (then the link belongs
    to a past connection and is dropped). Returns the account as saved, None when dropped."""
    dropped = False

    def change(current: Account) -> bool:
        nonlocal dropped
        dropped = current.status is AccountStatus.DISCONNECTED or current.connected_at != account.connected_at
        if dropped:
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
    if saved is None or dropped:
        log.info("account %s was disconnected or reconnected during its round: deltaLink dropped", account.account_id)
        return None
    return saved



MAIL_SYNC = SyncTarget(MAIL, _rounds)
SYNC_TARGET = MAIL_SYNC  # what shared.resource_sync runs for mail
