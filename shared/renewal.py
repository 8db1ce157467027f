"""Keeping every mailbox subscription alive: the renewal timer's core.

A Graph subscription to Outlook mail lives at most 10,080 minutes (docs/graph-notes.md
"Subscriptions"), so each one must be renewed (PATCH) before it expires. One run of
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
2. **Heals** along the way: a subscription Graph no longer knows (404) is recreated and the
   mailbox resynced by delta, so no mail is lost in between; an account whose refresh
   token is dead is marked ``reauth_required`` (by the token provider) and skipped from
   then on.
3. **Sweeps** a slice of the accounts table (``RENEWAL_SWEEP_ACCOUNTS`` per run, resumed
   from a stored continuation token): an active account with no live subscription gets
   one, and a quiet account gets a catch-up sync. With the default 15-minute schedule,
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
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.errors import (
    ConcurrencyError,
    ConnectorError,
    GraphError,
    NotFoundError,
    ReauthRequiredError,
    ThrottledError,
)
from shared.models import Account, AccountStatus, Subscription, SubscriptionStatus, SweepCheckpoint
from shared.subscriptions import (
    ensure_mailbox_subscription,
    mailbox_subscription_expiry,
    parse_graph_datetime,
)

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import CheckpointStore, GraphAuth, JsonObject

log = logging.getLogger(__name__)

# docs/graph-notes.md "Subscriptions": never a reauthorize and a PATCH of one subscription within
# 10 minutes of each other. A PATCH that recent also means somebody else just renewed it.
GRAPH_COOLDOWN = dt.timedelta(minutes=10)
# How long the run's lease (and the sweep's) keeps other runs away without being extended:
# longer than one item can take (a PATCH with the adapter's retries after Retry-After, a
# recreation, a delta sync), short enough that a crashed run's lease is free again by the
# next run. A live run extends it every HEARTBEAT.
LEASE = dt.timedelta(minutes=5)
HEARTBEAT_SECONDS = 60.0
# Throttled items are retried later in the run, at most this many times; then the next run.
MAX_ATTEMPTS = 4
# The sweep leaves alone an account connected moments ago: its connect flow may still be
# creating the subscription.
CONNECT_GRACE = dt.timedelta(minutes=10)
RUN_LEASE = "renewal-run"
SWEEP_CHECKPOINT = "renewal-account-sweep"
# Renewed subscriptions whose index entries are written together: one entity-group
# transaction per index partition (an hour's shard) and at most 100 operations; 400
# renewals spread over 16 shards make about 25 per transaction.
REINDEX_BATCH = 400
_SWEEP_PAGE = 100


Recreate = Callable[["Services", Account, "GraphAuth"], Subscription]
Resync = Callable[..., object]  # (services, account_id, *, reason)


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


@dataclass
class RenewalReport:
    """What one run did; logged as one line and returned (tests read it)."""

    renewed: int = 0
    recreated: int = 0
    failed: int = 0
    skipped: int = 0
    reauth_required: int = 0
    deferred: int = 0
    caught_up: int = 0
    subscribed: int = 0
    swept: int = 0
    throttled: int = 0
    past_due: bool = False
    another_run: bool = False  # another run held the renewal lease: renewals left to it
    stopped_early: bool = False
    duration_seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"renewed={self.renewed} recreated={self.recreated} failed={self.failed} "
            f"skipped={self.skipped} reauth_required={self.reauth_required} deferred={self.deferred} "
            f"caught_up={self.caught_up} subscribed={self.subscribed} swept={self.swept} "
            f"throttled={self.throttled} past_due={self.past_due} another_run={self.another_run} "
            f"stopped_early={self.stopped_early} "
            f"duration={self.duration_seconds:.1f}s"
        )


def renew_subscriptions(
    services: Services,
    *,
    past_due: bool = False,
    policy: RenewalPolicy | None = None,
    checkpoints: CheckpointStore | None = None,
    recreate: Recreate = ensure_mailbox_subscription,
    resync: Resync | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> RenewalReport:
    """One run of the renewal timer (see the module docstring); never raises for one item."""
    run = _RenewalRun(
        services,
        policy or RenewalPolicy.from_services(services),
        checkpoints=checkpoints or services.checkpoints,
        recreate=recreate,
        resync=resync or _sync_mailbox,
        monotonic=monotonic,
    )
    report = run.report
    report.past_due = past_due
    if past_due:
        log.warning("renewal: this run starts late (past due); catching up")
    run.execute()
    log.info("renewal run: %s", report.summary())
    return report


def _sync_mailbox(services: Services, account_id: str, *, reason: str = "renewal") -> object:
    from shared.sync import sync_mailbox  # the pipeline's delta catch-up

    return sync_mailbox(services, account_id, reason=reason)


# --- one run --------------------------------------------------------------------------------


@dataclass
class _Job:
    """One subscription being renewed, and its account once read."""

    subscription: Subscription
    account: Account | None = None
    attempts: int = 0


@dataclass
class _Retry:
    after_seconds: float


class _CannotRenew(Exception):
    """The subscription's account is gone or not active: the item is skipped."""


class _AccountGates:
    """One request at a time per mailbox from this run; entries vanish when unused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, account_id: str) -> Iterator[None]:
        with self._lock:
            gate, users = self._gates.get(account_id, (threading.Lock(), 0))
            self._gates[account_id] = (gate, users + 1)
        try:
            with gate:
                yield
        finally:
            with self._lock:
                gate, users = self._gates[account_id]
                if users <= 1:
                    del self._gates[account_id]
                else:
                    self._gates[account_id] = (gate, users - 1)


class _Lease:
    """A named lease in the checkpoint store (the run's, the sweep's): taken under its
    ETag, extended every heartbeat while held, given back at the end. The sweep's resume
    point (``continuation``) travels with it."""

    def __init__(
        self, name: str, services: Services, store: CheckpointStore, monotonic: Callable[[], float]
    ) -> None:
        self._name, self._services, self._store, self._monotonic = name, services, store, monotonic
        self._held: SweepCheckpoint | None = None
        self._extended_at = 0.0
        # The holder before us did not give the lease back cleanly (a crash, a stall, work
        # it could not finish): what it wrote may need checking.
        self.left_unfinished = False

    def take(self) -> bool:
        """False when another run holds it; ``ConnectorError`` when the store is unreachable."""
        now = self._services.clock.now()
        try:
            lease = self._store.get(self._name) or SweepCheckpoint(self._name)
            if lease.leased_until is not None and lease.leased_until > now:
                return False
            unfinished = lease.leased_until is not None
            lease.leased_until = now + LEASE
            self._held = self._store.save(lease)
        except ConcurrencyError:
            return False  # taken by the other run between our read and our write
        self.left_unfinished = unfinished
        self._extended_at = self._monotonic()
        return True

    @property
    def continuation(self) -> str | None:
        return None if self._held is None else self._held.continuation

    def record(self, continuation: str | None) -> None:
        """Where the work resumes; stored with the next extension or the give-back."""
        if self._held is not None:
            self._held.continuation = continuation

    def keep(self, *, now: bool = False) -> bool:
        """Extends the lease when a heartbeat is due (or ``now``); False once it is lost."""
        if self._held is None:
            return False
        if not now and self._monotonic() - self._extended_at < HEARTBEAT_SECONDS:
            return True
        self._held.leased_until = self._services.clock.now() + LEASE
        try:
            self._held = self._store.save(self._held)
        except ConcurrencyError:
            log.warning("renewal: another run took over the lease %s; stopping", self._name)
            self._held = None
            return False
        except ConnectorError as exc:
            # Not lost yet: it holds until leased_until; tried again at the next heartbeat.
            log.warning("renewal: the lease %s could not be extended (%s)", self._name, _describe(exc))
            return True
        self._extended_at = self._monotonic()
        return True

    def give_back(self, *, finished: bool = True) -> None:
        """Free for the next run; one that did not finish its work gives the lease back
        expired rather than cleared, and the next holder sees ``left_unfinished``."""
        if self._held is None:
            return
        self._held.leased_until = None if finished else self._services.clock.now()
        try:
            self._store.save(self._held)
        except ConnectorError as exc:
            log.warning("renewal: the lease %s is left to expire (%s)", self._name, _describe(exc))
        self._held = None


class _RenewalRun:
    def __init__(
        self,
        services: Services,
        policy: RenewalPolicy,
        *,
        checkpoints: CheckpointStore,
        recreate: Recreate,
        resync: Callable[..., object],
        monotonic: Callable[[], float],
    ) -> None:
        self.services = services
        self.policy = policy
        self.checkpoints = checkpoints
        self.recreate = recreate
        self.resync = resync
        self.monotonic = monotonic
        self.report = RenewalReport()
        self._counts_lock = threading.Lock()
        self._gates = _AccountGates()
        self._started = monotonic()
        self._stop_at = self._started + policy.time_budget_seconds
        self._lease = _Lease(RUN_LEASE, services, checkpoints, monotonic)
        self._reindex_lock = threading.Lock()
        self._to_reindex: list[Subscription] = []
        self._index_behind = False  # some renewed subscriptions' index entries were not written
        self._lookahead = dt.timedelta(0)  # how far ahead "quiet" looks: the sweep's pace

    # bookkeeping

    def count(self, name: str, by: int = 1) -> None:
        with self._counts_lock:
            setattr(self.report, name, getattr(self.report, name) + by)

    def _graph_throttles(self) -> int | None:
        """429/503 answers the Graph client met on this thread, retried by it or not (None
        when the client does not count them: then each ThrottledError counts one)."""
        counter = getattr(self.services.graph, "throttle_count", None)
        return counter() if callable(counter) else None

    def _count_throttled(self, before: int | None) -> None:
        after = self._graph_throttles()
        if before is not None and after is not None and after > before:
            self.count("throttled", after - before)

    def _throttled_error(self) -> None:
        if self._graph_throttles() is None:
            self.count("throttled")

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
                log.warning("renewal: renewals not started, the lease is unreachable (%s)", _describe(exc))
                taken = False
            else:
                if not taken:
                    self.report.another_run = True
                    log.info("renewal: another run holds the renewal lease; leaving the renewals to it")
            if taken:
                try:
                    self._renew_expiring(pool)
                finally:
                    self._reindex(everything=True)
                    self._lease.give_back(finished=not self._index_behind)
            if not self.out_of_time():
                self._sweep_accounts(pool)
        self.report.duration_seconds = self.monotonic() - self._started

    # phase 1: the expiry index

    def _renew_expiring(self, pool: ThreadPoolExecutor) -> None:
        now = self.services.clock.now()
        # After a run that did not finish, index copies it left stale would cost a PATCH
        # each before their stale ETag showed: this run reads the records instead.
        recheck = self._lease.left_unfinished
        if recheck:
            log.warning("renewal: the last run did not finish; checking the index against the records")
        candidates = iter(self.services.subscriptions.expiring_before(now + self.policy.window, recheck=recheck))
        # At most 4x the pool in flight: enough queued that the workers keep busy while this
        # thread reads the next page of candidates; read lazily, memory stays flat.
        capacity = 4 * self.policy.concurrency
        pending: dict[Future[str | _Retry], _Job] = {}
        # Finished items arrive here, one at a time: waiting on all pending futures at once
        # (concurrent.futures.wait) would cost work in proportion to how many are pending.
        finished: queue.SimpleQueue[Future[str | _Retry]] = queue.SimpleQueue()
        retries: list[tuple[float, int, _Job]] = []  # (ready at, tie-breaker, job)
        order = itertools.count()
        exhausted = False

        def submit(job: _Job) -> None:
            future = pool.submit(self._renew_guarded, job)
            pending[future] = job
            future.add_done_callback(finished.put)

        while True:
            if self.out_of_time():
                break
            if not self._lease.keep():
                self.report.stopped_early = True
                break
            clock = self.monotonic()
            while retries and retries[0][0] <= clock and len(pending) < capacity:
                submit(heapq.heappop(retries)[2])
            if not exhausted and len(pending) < capacity:
                subscription = next(candidates, None)
                if subscription is None:
                    exhausted = True
                else:
                    submit(_Job(subscription))
                continue
            if exhausted and not pending and not retries:
                break
            timeout = max(0.0, min(retries[0][0] - clock, self._stop_at - clock)) if retries else None
            if not pending:
                time.sleep(timeout or 0.0)
                continue
            if timeout is None:
                timeout = HEARTBEAT_SECONDS
            try:
                future = finished.get(timeout=timeout)
            except queue.Empty:
                continue
            job = pending.pop(future)
            outcome = future.result()
            if isinstance(outcome, _Retry):
                heapq.heappush(retries, (self.monotonic() + outcome.after_seconds, next(order), job))
            else:
                self.count(outcome)
        # Out of time (or lease): what is in flight finishes; throttled items wait for the
        # next run, which finds them in the expiry index.
        for future in list(pending):
            outcome = future.result()
            pending.pop(future)
            self.count("deferred" if isinstance(outcome, _Retry) else outcome)
        self.count("deferred", len(retries))
        if not exhausted:
            close = getattr(candidates, "close", None)
            if close is not None:
                close()

    def _renew_guarded(self, job: _Job) -> str | _Retry:
        subscription = job.subscription
        before = self._graph_throttles()
        try:
            with self._gates.hold(subscription.account_id):
                return self._renew(job)
        except Exception:  # noqa: BLE001 - one bad item must not end the run
            log.exception(
                "renewal: account %s subscription %s failed unexpectedly",
                subscription.account_id,
                subscription.subscription_id,
            )
            return "failed"
        finally:
            self._count_throttled(before)

    def _renew(self, job: _Job) -> str | _Retry:
        now = self.services.clock.now()
        sub = job.subscription
        if job.attempts == 0:
            reason = self._not_due(sub, now)
            if reason:
                log.debug("renewal: subscription %s skipped: %s", sub.subscription_id, reason)
                return "skipped"
        job.attempts += 1
        try:
            if sub.status != SubscriptionStatus.ACTIVE:
                return self._recreate(job)
            expires_at = mailbox_subscription_expiry(now)
            try:
                answer = self._patch(job, expires_at)
            except NotFoundError:
                log.info(
                    "renewal: account %s subscription %s is gone from Graph; recreating",
                    sub.account_id,
                    sub.subscription_id,
                )
                return self._recreate(job)
        except _CannotRenew:
            return "skipped"
        except ReauthRequiredError:
            # The token provider has marked the account; it is skipped until reconnected.
            return "reauth_required"
        except ThrottledError as exc:
            self._throttled_error()
            if job.attempts >= MAX_ATTEMPTS:
                return "deferred"
            return _Retry(max(exc.retry_after, 0.0))
        except ConnectorError as exc:
            log.warning(
                "renewal: account %s subscription %s not renewed: %s",
                sub.account_id,
                sub.subscription_id,
                _describe(exc),
            )
            return "failed"
        new_expiry = parse_graph_datetime(answer.get("expirationDateTime"), expires_at)
        self._store_renewed(sub, new_expiry, now)
        return "renewed"

    def _account(self, job: _Job) -> Account:
        """The subscription's account, read once per job; ``_CannotRenew`` when there is no
        active account to renew for (gone, disconnected, waiting for a new sign-in)."""
        if job.account is None:
            sub = job.subscription
            account = self.services.accounts.get(sub.account_id)
            if account is None or account.status != AccountStatus.ACTIVE:
                self._skip_inactive(sub, account, self.services.clock.now())
                raise _CannotRenew
            job.account = account
        return job.account

    def _patch(self, job: _Job, expires_at: dt.datetime) -> JsonObject:
        graph, tokens = self.services.graph, self.services.tokens
        sub = job.subscription
        # An access token at hand is all a PATCH needs: the account is read only when its
        # token must be refreshed (the refresh needs it). An account marked for a new sign-in
        # forgets its token here; one marked by another instance is renewed while the token
        # we hold lives (an hour at most), which keeps its mail flowing meanwhile.
        auth = tokens.cached_auth(sub.account_id) or tokens.graph_auth(self._account(job))
        try:
            return graph.renew_subscription(auth, sub.subscription_id, expires_at)
        except GraphError as exc:
            if exc.status != 401:
                raise
        # The token was refused (revoked, say): once more with a fresh one, whose refresh
        # tells a dead refresh token (ReauthRequiredError) from a passing problem.
        tokens.forget(sub.account_id)
        return graph.renew_subscription(tokens.graph_auth(self._account(job)), sub.subscription_id, expires_at)

    def _not_due(self, sub: Subscription, now: dt.datetime) -> str:
        if sub.status != SubscriptionStatus.ACTIVE:
            return ""  # to be recreated: neither a PATCH nor a reauthorize
        if sub.expires_at >= now + self.policy.window:
            return "not expiring yet"
        if sub.last_renewed_at is not None and now - sub.last_renewed_at < GRAPH_COOLDOWN:
            return "renewed less than 10 minutes ago"
        if sub.last_reauthorized_at is not None and now - sub.last_reauthorized_at < GRAPH_COOLDOWN:
            return "reauthorized less than 10 minutes ago"
        return ""

    def _skip_inactive(self, sub: Subscription, account: Account | None, now: dt.datetime) -> str:
        # No token to renew with. Once expired, Graph has dropped it: forget the record so
        # the expiry index does not offer it again; a reconnect creates a new one.
        if account is None or sub.expires_at <= now:
            self.services.subscriptions.delete(sub.account_id, sub.subscription_id)
        return "skipped"

    def _recreate(self, job: _Job) -> str | _Retry:
        services = self.services
        store = services.subscriptions
        # Rare, and it replaces the record: it starts from the record, not the index's copy.
        current = store.reread(job.subscription)
        if current is None:
            return "skipped"  # deleted meanwhile (a disconnect): nothing to recreate
        job.subscription = sub = current
        account = self._account(job)
        auth = services.tokens.graph_auth(account)
        if sub.status == SubscriptionStatus.ACTIVE:
            # Recorded as removed first: should recreation fail, the record stays in the
            # expiry index and the next run tries again.
            sub.status = SubscriptionStatus.REMOVED
            job.subscription = sub = store.save(sub)
        try:
            created = self.recreate(services, account, auth)
        except ConnectorError:
            self._keep_in_index(sub)
            raise
        log.info(
            "renewal: account %s subscription %s replaced by %s",
            sub.account_id,
            sub.subscription_id,
            created.subscription_id,
        )
        self._resync(account.account_id, "subscription_recreated")
        return "recreated"

    def _keep_in_index(self, sub: Subscription) -> None:
        """After a failed recreation: the old record may be deleted already (recreation
        starts by discarding it). Recorded again as removed, unless a live one exists, it
        stays in the expiry index and the next run tries again sooner than the sweep."""
        store = self.services.subscriptions
        try:
            if store.get(sub.account_id, sub.subscription_id) is not None:
                return
            if any(s.status == SubscriptionStatus.ACTIVE for s in store.for_account(sub.account_id)):
                return
            sub.etag, sub.indexed_expires_at = None, None
            store.save(sub)
        except ConnectorError as exc:
            log.warning(
                "renewal: subscription %s not recorded again (%s); the sweep will replace it",
                sub.subscription_id,
                _describe(exc),
            )

    def _store_renewed(self, sub: Subscription, expires_at: dt.datetime, now: dt.datetime) -> None:
        store = self.services.subscriptions
        current: Subscription | None = sub
        for _ in range(3):
            if current is None:
                return  # deleted meanwhile (a disconnect): nothing to keep
            current.expires_at = max(current.expires_at, expires_at)
            current.last_renewed_at = now
            current.status = SubscriptionStatus.ACTIVE
            try:
                saved = store.save(current, defer_index=True)
            except ConcurrencyError:
                # Somebody else wrote (the lifecycle handling, say), or the index's copy was
                # stale: their record it is, with its changes kept.
                current = store.reread(current)
                continue
            with self._reindex_lock:
                self._to_reindex.append(saved)
            self._reindex()  # in this worker, when a batch is full: the loop never waits on it
            return
        log.warning("renewal: subscription %s renewed but its new expiry was not stored", sub.subscription_id)

    def _reindex(self, *, everything: bool = False) -> None:
        """Writes the index entries of renewed subscriptions, a batch at a time. Until then
        the old entry, with its old copy, still offers the subscription: should this run
        not get to write them, it gives its lease back unfinished and the next run rechecks."""
        with self._reindex_lock:
            if not self._to_reindex or (len(self._to_reindex) < REINDEX_BATCH and not everything):
                return
            batch, self._to_reindex = self._to_reindex, []
        try:
            self.services.subscriptions.reindex(batch)
        except ConnectorError as exc:
            self._index_behind = True
            log.warning("renewal: %d index entries not written yet (%s)", len(batch), _describe(exc))

    # delta syncs (a recreated subscription, a quiet account found by the sweep)

    def _is_quiet(self, account: Account, now: dt.datetime, lookahead: dt.timedelta) -> bool:
        """Quiet: it would pass ``catchup_after`` without news before the sweep's next visit."""
        heard = [t for t in (account.last_notification_at, account.last_sync_at, account.connected_at) if t]
        return not heard or max(heard) <= now - self.policy.catchup_after + lookahead

    def _resync(self, account_id: str, reason: str) -> str:
        """"synced", "reauth_required" (the sync found the refresh token dead and marked the
        account) or "failed"."""
        try:
            result = self.resync(self.services, account_id, reason=reason)
        except ReauthRequiredError:
            return "reauth_required"
        except ConnectorError as exc:
            # Not lost: the account stays quiet, so the sweep tries again.
            log.warning("renewal: account %s delta sync (%s) failed: %s", account_id, reason, _describe(exc))
            return "failed"
        if getattr(result, "skipped", None) == "reauth_required":
            return "reauth_required"
        return "synced"

    # phase 2: the account sweep

    def _sweep_accounts(self, pool: ThreadPoolExecutor) -> None:
        wanted = self.policy.sweep_accounts
        if wanted <= 0:
            return
        lease = _Lease(SWEEP_CHECKPOINT, self.services, self.checkpoints, self.monotonic)
        try:
            if not lease.take():
                log.info("renewal: another run is sweeping accounts")
                return
        except ConnectorError as exc:
            log.info("renewal: account sweep not started (%s)", _describe(exc))
            return
        pace = _SweepPace.decode(lease.continuation)
        now = self.services.clock.now()
        self._lookahead = pace.lookahead(now, self.policy.catchup_after)
        pace.last_run_at = now
        if pace.cycle_started_at is None:
            pace.cycle_started_at = now
        continuation = pace.token
        try:
            while self.report.swept < wanted and not self.out_of_time():
                size = min(_SWEEP_PAGE, wanted - self.report.swept)
                accounts, continuation = self.services.accounts.page(size=size, continuation=continuation)
                for outcome in pool.map(self._tend_guarded, accounts):
                    if outcome:
                        self.count(outcome)
                self.count("swept", len(accounts))
                pace.token = continuation
                if continuation is None:
                    pace.cycle_finished(self.services.clock.now(), self.policy.catchup_after)
                    break  # a full cycle: the next run starts from the top
                # Progress is kept page by page and the lease extended: a crash loses one
                # page at most, and a long sweep is not taken over by the next run.
                lease.record(pace.encode())
                if not lease.keep(now=True):
                    return
        finally:
            lease.record(pace.encode())
            lease.give_back()

    def _tend_guarded(self, account: Account) -> str:
        before = self._graph_throttles()
        try:
            with self._gates.hold(account.account_id):
                return self._tend(account)
        except Exception:  # noqa: BLE001 - one bad account must not end the run
            log.exception("renewal: account %s could not be checked", account.account_id)
            return "failed"
        finally:
            self._count_throttled(before)

    def _tend(self, account: Account) -> str:
        """An active account gets a subscription when it has none, a catch-up when quiet."""
        services = self.services
        now = services.clock.now()
        if account.status != AccountStatus.ACTIVE:
            return ""
        if account.connected_at is not None and now - account.connected_at < CONNECT_GRACE:
            return ""
        recorded = services.subscriptions.for_account(account.account_id)
        if not any(s.status == SubscriptionStatus.ACTIVE for s in recorded):
            try:
                auth = services.tokens.graph_auth(account)
                created = self.recreate(services, account, auth)
            except ReauthRequiredError:
                return "reauth_required"
            except ThrottledError:
                self._throttled_error()
                return "deferred"
            except ConnectorError as exc:
                log.warning(
                    "renewal: account %s has no subscription and none could be made: %s",
                    account.account_id,
                    _describe(exc),
                )
                return "failed"
            log.info(
                "renewal: account %s had no subscription; created %s",
                account.account_id,
                created.subscription_id,
            )
            self._resync(account.account_id, "subscription_recreated")
            return "subscribed"
        if self._is_quiet(account, now, self._lookahead):
            outcome = self._resync(account.account_id, "catch_up")
            if outcome == "synced":
                return "caught_up"
            if outcome == "reauth_required":
                return "reauth_required"
        return ""


@dataclass
class _SweepPace:
    """The sweep's resume point and pace, kept in its checkpoint's continuation: the
    accounts table's continuation token, when the current cycle began, how long the last
    full cycle took, and when the last sweep ran."""

    token: str | None = None
    cycle_started_at: dt.datetime | None = None
    last_cycle: dt.timedelta | None = None
    last_run_at: dt.datetime | None = None

    _PREFIX = "pace1:"

    @classmethod
    def decode(cls, raw: str | None) -> _SweepPace:
        if not raw:
            return cls()
        if not raw.startswith(cls._PREFIX):
            return cls(token=raw)  # a resume point written before the pace was kept
        try:
            data = json.loads(raw[len(cls._PREFIX) :])
            return cls(
                token=data.get("token") or None,
                cycle_started_at=_parse_time(data.get("cycleStartedAt")),
                last_cycle=dt.timedelta(seconds=float(data["lastCycleSeconds"]))
                if data.get("lastCycleSeconds") is not None
                else None,
                last_run_at=_parse_time(data.get("lastRunAt")),
            )
        except (ValueError, TypeError, AttributeError, KeyError):
            log.warning("renewal: the sweep's stored pace is unreadable; starting a new cycle")
            return cls()

    def encode(self) -> str:
        return self._PREFIX + json.dumps(
            {
                "token": self.token,
                "cycleStartedAt": self.cycle_started_at.isoformat() if self.cycle_started_at else None,
                "lastCycleSeconds": self.last_cycle.total_seconds() if self.last_cycle is not None else None,
                "lastRunAt": self.last_run_at.isoformat() if self.last_run_at else None,
            }
        )

    def lookahead(self, now: dt.datetime, catchup_after: dt.timedelta) -> dt.timedelta:
        """How long until the sweep is back at the accounts it meets now: the last cycle's
        length plus the gap between two sweeps. Unknown (no full cycle yet, right after a
        deployment): none, so the first cycle catches up only what is quiet already."""
        if self.last_cycle is None:
            return dt.timedelta(0)
        gap = now - self.last_run_at if self.last_run_at is not None else dt.timedelta(0)
        return self.last_cycle + max(gap, dt.timedelta(0))

    def cycle_finished(self, now: dt.datetime, catchup_after: dt.timedelta) -> None:
        if self.cycle_started_at is not None:
            self.last_cycle = now - self.cycle_started_at
            if self.last_cycle >= catchup_after:
                log.warning(
                    "renewal: the account sweep takes %s per cycle, longer than the catch-up period %s: "
                    "every quiet account is caught up at each visit, and still some go longer; "
                    "raise RENEWAL_SWEEP_ACCOUNTS",
                    self.last_cycle,
                    catchup_after,
                )
        self.cycle_started_at = None  # the next run starts the next cycle


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    return dt.datetime.fromisoformat(value)


def _describe(exc: Exception) -> str:
    if isinstance(exc, GraphError):
        return f"Graph {exc.status} {exc.code}"
    return type(exc).__name__
