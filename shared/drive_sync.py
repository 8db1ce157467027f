"""OneDrive sync: run the drive delta from its stored deltaLink and publish one event per
changed item on ``drive-events`` (docs/design.md "Resources", "Drive events").

A change notification of the drive says only "something changed" (drive notifications
carry no resource data, and are coalesced); the delta query is the truth, as for mail. A
round runs under the lease of the drive's sync key (``DRIVE.sync_key``: ``{account}|drive``,
so mail and drive of one account sync independently), from the stored deltaLink, page by
page through the same loop as the mail folders (``shared.delta_round``; the drive's part
of it in ``shared.drive_round``): events of a page are published before its marks are
committed, the deltaLink is saved last, a round too long for one invocation keeps its
place and goes on from queue ``mail-sync`` (``shared.sync_runner``).

- **First round** (no deltaLink: the account was just connected): the whole drive, from
  ``GET /me/drive/root/delta``; it publishes what was created since the connect and writes a
  baseline mark for everything else.
- **Incremental round**: from the deltaLink.
- **410 Gone** (``resyncRequired``): a full round, from the start again; ledger items it
  no longer returns are published as ``deleted``.

The deltaLink is one row of ``FolderDeltaLinks`` in the drive's own ledger partition
(``{account}|drive``, folder key ``drive``: no mail folder's link lives in that partition),
with the ``connected_at`` of the connection it belongs to, so a reconnect after a
disconnect starts afresh. ``forget_drive_state`` (the disconnect) seizes the drive's lease
and drops its partition: marks, progress, lease and link.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.delta_round import SyncLease, SyncResult, kept_place, run_round
from shared.drive_round import DriveItems
from shared.models import Account
from shared.resources import DRIVE
from shared.sync_runner import SyncTarget, seize_lease

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import GraphAuth

log = logging.getLogger(__name__)

# The drive's deltaLink in ``FolderDeltaLinks``, in the drive's partition.
DRIVE_LINK_KEY = "drive"


def sync_drive(services: Services, account_id: str, **options: Any) -> SyncResult:
    """Bring the account's drive events up to date: ``shared.resource_sync.sync_resource``
    for the drive, with its options (``reason``, ``notified_at``, ``monotonic``, ``join``).
    ``ReauthRequiredError`` and a lost lease are absorbed, Graph and storage failures
    propagate so that the queue retries."""
    from shared.resource_sync import sync_resource

    return sync_resource(services, account_id, DRIVE, **options)


def drive_delta_link(services: Services, account: Account) -> str | None:
    """The drive's stored deltaLink for the account's present connection."""
    key = DRIVE.sync_key(account.account_id)
    return services.folder_deltas.links(key, account.connected_at).get(DRIVE_LINK_KEY)


def _rounds(
    services: Services,
    account: Account,
    auth: GraphAuth,
    result: SyncResult,
    emit_history: bool,
    lease: SyncLease,
    notified_at: dt.datetime | None,
) -> bool:
    """The drive's round: from the place an earlier invocation kept, or from the deltaLink.
    True when it ended with the deltaLink saved, False when it stopped for time (place kept).
    ``emit_history`` is the mail's setting: a drive's first round never publishes history."""
    key = DRIVE.sync_key(account.account_id)
    progress = kept_place(services, key, lease)
    lease.served = False
    link = None if progress is not None else drive_delta_link(services, account)
    items = DriveItems(services, account, auth)
    round_, delta_link = run_round(services, key, items, result, lease, link=link, resumed=progress, saved=progress)
    if delta_link is None:
        return False
    # A link saved for a connection that has ended is never read (``connected_at``).
    services.folder_deltas.save(key, DRIVE_LINK_KEY, delta_link, account.connected_at)
    round_.finish()
    lease.served = progress is None
    return True


SYNC_TARGET = SyncTarget(DRIVE, _rounds)  # what shared.resource_sync runs for the drive


def forget_drive_state(
    services: Services, account_id: str, *, sleep: Callable[[float], None] = time.sleep
) -> None:
    """A disconnect's part for the drive: seize the drive's sync lease (a running round's
    next fenced write fails, so it writes no mark, no progress), wait until that round can
    no longer publish (its last proof plus ``PUBLISH_FENCE``), then drop the drive's ledger
    partition: marks, progress, lease and deltaLink. A reconnect starts with a first round.
    Idempotent."""
    key = DRIVE.sync_key(account_id)
    seize_lease(services, key, sleep=sleep)
    # The deltaLink is a row of that partition (``FolderDeltaLinks``), dropped with it; one
    # left by a round that ended meanwhile belongs to the ended connection and is never read.
    services.ledger.forget_account(key)
