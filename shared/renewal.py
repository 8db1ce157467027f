"""Keeping every subscription alive, mail's and drives': the renewal timer's core.

A Graph subscription to Outlook mail lives at most 10,080 minutes, one to a drive 42,300
(docs/graph-notes.md "Subscriptions", ``shared.resources``), so each one must be renewed
(PATCH) before it expires, to its own resource's lifetime. One run of
``renew_subscriptions``:

1. **Renews** what expires within ``RENEWAL_WINDOW_MINUTES``. The candidates come from the
   store's expiry index (``SubscriptionStore.expiring_before``: a range query over expiry
   buckets, never a scan of the table, whose entries carry a copy of their subscription
   and its ETag, so no record is read per candidate). One run at a time renews: the run
   holds a lease (``renewal-run`` in the checkpoint store, an ETag-conditional write,
   extended while the run lasts); a second, overlapping run (another instance, a past-due
   start) finds it held and leaves the renewals to the first. A lease per run rather than
   a claim per subscription saves a table write per renewal, and the Functions host runs
   a timer on one instance at a time anyway. A PATCH needs an access token, not the
   account: the account is read only when its token must be refreshed (or the
   subscription recreated). The renewed expiry is written under the ETag of the copy (a
   stale copy is refused there, and the record read then); the index entries are written
   in batches (``SubscriptionStore.reindex``). A run that could not write them all gives
   its lease back marked unfinished, and the next run reads the records instead of the
   copies (``recheck``).
2. **Heals** along the way: a subscription Graph no longer knows (404) is recreated for
   the same resource and that resource resynced by delta, so no change is lost in between;
   a due one signed with a retired clientState key or without a nonce, or made for
   another resource path, is replaced the same way instead of PATCHed (``reissued``): a
   PATCH cannot change either, and a mailbox that gets no mail has no notification to
   re-issue it; an account whose refresh token is dead is marked ``reauth_required`` (by the token
   provider) and skipped from then on.
3. **Sweeps** a slice of the accounts table (``RENEWAL_SWEEP_ACCOUNTS`` per run, resumed
   from a stored continuation token): an active account with no live subscription of a
   resource its grant reaches gets one, and a quiet resource gets a catch-up sync
   (``shared.account_sweep``: mail when the account heard nothing, the drive on a timer of
   its own, since Graph retries a drive notification for 15 minutes only). With the default 15-minute schedule,
   5,000 accounts per run cover 100,000 accounts in 5 hours, and no run reads more than its
   slice. An account is visited once per cycle, so "quiet" looks ahead: it is caught up
   when it would pass ``CATCHUP_AFTER_MINUTES`` of silence before the sweep's next visit
   (the last cycle's length plus the gap between runs, stored with the sweep's resume
   point). That keeps the promise: no active account goes longer than
   ``CATCHUP_AFTER_MINUTES`` without a notification or a delta sync, from the second
   cycle on (the first one, right after a deployment, has no measured length yet and
   catches up only what is quiet already).

Graph's rules are kept: no PATCH within 10 minutes of a reauthorize (or of another PATCH)
of the same subscription; at most one request at a time per mailbox from this run (the
Graph adapter caps a process at Outlook's 4); a ``ThrottledError`` puts the item back
until its ``Retry-After`` has passed. A run stops picking new work after
``RENEWAL_TIME_BUDGET_SECONDS``: what is left is picked up by the next run, as it is
still in the expiry index.

The parts: ``shared.runner`` schedules the work (bounded, with a deadline and retry
times), ``shared.subscription_renewal`` renews one subscription, ``shared.account_sweep``
is the sweep (``shared.sweep_pace`` its pace), ``shared.leases`` the leases, ``shared.renewal_report`` what a run counts.
This module holds the run together.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.account_sweep import SWEEP_CHECKPOINT, AccountSweep
from shared.errors import ConnectorError
from shared.leases import CheckpointLease
from shared.models import SweepCheckpoint
from shared.renewal_report import Outcome, RenewalReport
from shared.runner import BoundedRunner, KeyedGates
from shared.subscription_renewal import (
    Recreate,
    ReindexBatches,
    RenewalJob,
    Resync,
    SubscriptionRenewal,
    describe,
)
from shared.subscriptions import ensure_subscription
from shared.sweep_pace import SweepPace

# The sweep's stored pace, under the name it had here before the run was split in parts.
_SweepPace = SweepPace

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import CheckpointStore
    from shared.resources import Resource

__all__ = [
    "LEASE",
    "RUN_LEASE",
    "SWEEP_CHECKPOINT",
    "Outcome",
    "RenewalPolicy",
    "RenewalReport",
    "SweepCheckpoint",
    "renew_subscriptions",
]

log = logging.getLogger(__name__)

# How long the run's lease (and the sweep's) keeps other runs away without being extended:
# longer than one item can take (a PATCH with the adapter's retries after Retry-After, a
# recreation, a delta sync), short enough that a crashed run's lease is free again by the
# next run. A live run extends it every HEARTBEAT.
LEASE = dt.timedelta(minutes=5)
HEARTBEAT_SECONDS = 60.0
RUN_LEASE = "renewal-run"


@dataclass(frozen=True)
class RenewalPolicy:
    window: dt.timedelta
    catchup_after: dt.timedelta
    concurrency: int = 32
    time_budget_seconds: float = 420.0
    sweep_accounts: int = 5000

    @classmethod
    def from_services(cls, services: Services) -> RenewalPolicy:
        s = services.settings
        return cls(
            window=dt.timedelta(minutes=s.renewal_window_minutes),
            catchup_after=dt.timedelta(minutes=s.catchup_after_minutes),
            concurrency=s.renewal_concurrency,
            time_budget_seconds=float(s.renewal_time_budget_seconds),
            sweep_accounts=s.renewal_sweep_accounts,
        )


def renew_subscriptions(
    services: Services,
    *,
    past_due: bool = False,
    policy: RenewalPolicy | None = None,
    checkpoints: CheckpointStore | None = None,
    recreate: Recreate = ensure_subscription,
    resync: Resync | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> RenewalReport:
    """One run of the renewal timer (see the module docstring); never raises for one item."""
    run = _RenewalRun(
        services,
        policy or RenewalPolicy.from_services(services),
        checkpoints=checkpoints or services.checkpoints,
        recreate=recreate,
        resync=resync or _sync_resource,
        monotonic=monotonic,
    )
    report = run.report
    report.past_due = past_due
    if past_due:
        log.warning("renewal: this run starts late (past due); catching up")
    run.execute()
    log.info("renewal run: %s", report.summary())
    return report


def _sync_resource(services: Services, account_id: str, resource: Resource, *, reason: str = "renewal") -> object:
    from shared.resource_sync import sync_resource  # the pipeline's delta catch-up, of any resource

    return sync_resource(services, account_id, resource, reason=reason)


class _RenewalRun:
    """One run: the renewals under the run's lease, then the sweep's slice, on one pool."""

    def __init__(
        self,
        services: Services,
        policy: RenewalPolicy,
        *,
        checkpoints: CheckpointStore,
        recreate: Recreate,
        resync: Resync,
        monotonic: Callable[[], float],
    ) -> None:
        self.services = services
        self.policy = policy
        self.monotonic = monotonic
        self.report = RenewalReport()
        self._started = monotonic()
        self._stop_at = self._started + policy.time_budget_seconds
        self._lease = self._lease_named(RUN_LEASE, checkpoints)
        self._index = ReindexBatches(services.subscriptions)
        gates = KeyedGates()  # one request at a time per mailbox from this run
        self._renewal = SubscriptionRenewal(
            services,
            window=policy.window,
            recreate=recreate,
            resync=resync,
            gates=gates,
            report=self.report,
            index=self._index,
        )
        self._sweep = AccountSweep(
            services,
            accounts_per_run=policy.sweep_accounts,
            catchup_after=policy.catchup_after,
            recreate=recreate,
            resync=resync,
            gates=gates,
            report=self.report,
            lease=self._lease_named(SWEEP_CHECKPOINT, checkpoints),
        )

    def _lease_named(self, name: str, checkpoints: CheckpointStore) -> CheckpointLease:
        return CheckpointLease(
            name,
            checkpoints,
            clock=self.services.clock,
            monotonic=self.monotonic,
            duration=LEASE,
            heartbeat_seconds=HEARTBEAT_SECONDS,
        )

    def out_of_time(self) -> bool:
        if self.monotonic() >= self._stop_at:
            self.report.stopped_early = True
            return True
        return False

    def execute(self) -> None:
        with ThreadPoolExecutor(max_workers=self.policy.concurrency, thread_name_prefix="renewal") as pool:
            try:
                taken = self._lease.take()
            except ConnectorError as exc:
                log.warning("renewal: renewals not started, the lease is unreachable (%s)", describe(exc))
                taken = False
            else:
                if not taken:
                    self.report.another_run = True
                    log.info("renewal: another run holds the renewal lease; leaving the renewals to it")
            if taken:
                try:
                    self._renew_expiring(pool)
                finally:
                    self._index.flush()
                    self._lease.give_back(finished=not self._index.behind)
            if not self.out_of_time():
                self._sweep.sweep_accounts(pool, self.out_of_time)
        self.report.duration_seconds = self.monotonic() - self._started

    def _renew_expiring(self, pool: ThreadPoolExecutor) -> None:
        now = self.services.clock.now()
        # After a run that did not finish, index copies it left stale would cost a PATCH
        # each before their stale ETag showed: this run reads the records instead.
        recheck = self._lease.left_unfinished
        if recheck:
            log.warning("renewal: the last run did not finish; checking the index against the records")
        candidates = self.services.subscriptions.expiring_before(now + self.policy.window, recheck=recheck)
        runner: BoundedRunner[RenewalJob, Outcome] = BoundedRunner(
            pool,
            # At most 4x the pool in flight: enough queued that the workers keep busy while
            # this thread reads the next page of candidates; read lazily, memory stays flat.
            capacity=4 * self.policy.concurrency,
            deadline=self._stop_at,
            monotonic=self.monotonic,
            keep_alive=self._lease.keep,
            keep_alive_every=HEARTBEAT_SECONDS,
        )
        try:
            end = runner.run(
                map(RenewalJob, candidates),
                self._renewal.renew_guarded,
                lambda _job, outcome: self.report.add(outcome),
            )
        finally:
            close = getattr(candidates, "close", None)
            if close is not None:
                close()  # a partly read index query: its reads stop here
        # Out of time (or lease): throttled items wait for the next run, which finds them
        # in the expiry index.
        if end.stopped:
            self.report.stopped_early = True
        if end.left:
            self.report.add(Outcome.DEFERRED, len(end.left))
