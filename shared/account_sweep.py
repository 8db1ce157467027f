"""The account sweep: a paced walk over the accounts table, a slice per renewal run.

Each run reads at most ``accounts_per_run`` accounts, resumed from the continuation token
stored with the sweep's lease (``renewal-account-sweep`` in the checkpoint store). Each
resource the account's grant reaches (``shared.subscriptions.resources_of``: mail, the
drive) is tended on its own: with no live subscription it gets one (and a delta sync of
that resource, so no change is lost); a quiet one gets a catch-up sync. An account is
visited once per cycle, so "quiet" looks ahead: a resource is caught up when it would pass
``catchup_after`` of silence before the sweep's next visit (the last cycle's length plus
the gap between runs, ``shared.sweep_pace``, stored with the resume point). That keeps the
promise: no active account's mail or drive goes longer than ``catchup_after`` without a
notification or a delta sync, from the second cycle on (the first one, right after a
deployment, has no measured length yet and catches up only what is quiet already).

Silence is counted per resource. Mail's is the account's (its last notification and its
last mail sync). A drive's is its subscription's last catch-up (``caught_up_at``, before
the first one its creation or last renewal): Graph retries a drive notification for 15
minutes only (docs/graph-notes.md "Change notifications"), so each drive is caught up
every ``catchup_after`` whether notifications came or not; an unchanged drive's catch-up
is one delta request. Progress is kept page by page: a crash loses one page at most, and
the lease, extended with each page, keeps a second run from sweeping the same slice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from shared.errors import ConnectorError, ReauthRequiredError, ThrottledError
from shared.models import Account, AccountStatus, Subscription, SubscriptionStatus
from shared.renewal_report import Outcome, RenewalReport
from shared.resources import MAIL, Resource
from shared.retry import update_with_etag
from shared.runner import KeyedGates
from shared.subscription_renewal import Recreate, Resync, describe, resync_account
from shared.subscriptions import resources_of
from shared.sweep_pace import SweepPace

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.leases import CheckpointLease

log = logging.getLogger(__name__)

SWEEP_CHECKPOINT = "renewal-account-sweep"
# The sweep leaves alone an account connected moments ago: its connect flow may still be
# creating the subscription.
CONNECT_GRACE = dt.timedelta(minutes=10)
_SWEEP_PAGE = 100


class AccountSweep:
    """One run's slice of the sweep; the accounts of a page are tended on the run's pool."""

    def __init__(
        self,
        services: Services,
        *,
        accounts_per_run: int,
        catchup_after: dt.timedelta,
        recreate: Recreate,
        resync: Resync,
        gates: KeyedGates,
        report: RenewalReport,
        lease: CheckpointLease,
    ) -> None:
        self.services = services
        self.accounts_per_run = accounts_per_run
        self.catchup_after = catchup_after
        self.recreate = recreate
        self.resync = resync
        self._gates = gates
        self._report = report
        self._lease = lease
        self._lookahead = dt.timedelta(0)  # how far ahead "quiet" looks: the sweep's pace

    def sweep_accounts(self, pool: Executor, out_of_time: Callable[[], bool]) -> None:
        wanted = self.accounts_per_run
        if wanted <= 0:
            return
        lease = self._lease
        try:
            if not lease.take():
                log.info("renewal: another run is sweeping accounts")
                return
        except ConnectorError as exc:
            log.info("renewal: account sweep not started (%s)", describe(exc))
            return
        pace = SweepPace.decode(lease.continuation)
        self._lookahead = pace.start_run(self.services.clock.now())
        continuation = pace.token
        swept = 0
        try:
            while swept < wanted and not out_of_time():
                size = min(_SWEEP_PAGE, wanted - swept)
                accounts, continuation = self.services.accounts.page(size=size, continuation=continuation)
                for outcomes in pool.map(self._tend_guarded, accounts):
                    for outcome in outcomes:
                        self._report.add(outcome)
                swept += len(accounts)
                self._report.count_swept(len(accounts))
                pace.token = continuation
                if continuation is None:
                    pace.cycle_finished(self.services.clock.now(), self.catchup_after)
                    break  # a full cycle: the next run starts from the top
                # Progress is kept page by page and the lease extended: a crash loses one
                # page at most, and a long sweep is not taken over by the next run.
                lease.record(pace.encode())
                if not lease.keep(now=True):
                    return
        finally:
            lease.record(pace.encode())
            lease.give_back()

    def _tend_guarded(self, account: Account) -> list[Outcome]:
        try:
            with self._report.throttles_of(self.services.graph), self._gates.hold(account.account_id):
                return self._tend(account)
        except Exception:  # noqa: BLE001 - one bad account must not end the run
            log.exception("renewal: account %s could not be checked", account.account_id)
            return [Outcome.FAILED]

    def _tend(self, account: Account) -> list[Outcome]:
        """Each resource of an active account gets a subscription when it has none, a
        catch-up when quiet."""
        now = self.services.clock.now()
        if account.status != AccountStatus.ACTIVE:
            return []
        if account.connected_at is not None and now - account.connected_at < CONNECT_GRACE:
            return []
        # A files-only grant has no mail to keep, a mail-only one no drive (resources_of).
        recorded = self.services.subscriptions.for_account(account.account_id)
        outcomes: list[Outcome] = []
        for resource in resources_of(account):
            live = [s for s in recorded if s.status == SubscriptionStatus.ACTIVE and resource.owns_path(s.resource)]
            outcome: Outcome | None
            if not live:
                outcome = self._subscribe(account, resource)
            else:
                outcome = self._catch_up_if_quiet(account, resource, live[0], now)
            if outcome is not None:
                outcomes.append(outcome)
            if outcome is Outcome.REAUTH_REQUIRED:
                break  # the account is marked: its other resources wait for its new sign-in
        return outcomes

    def _subscribe(self, account: Account, resource: Resource) -> Outcome:
        services = self.services
        try:
            auth = services.tokens.graph_auth(account)
            created = self.recreate(services, account, auth, resource)
        except ReauthRequiredError:
            return Outcome.REAUTH_REQUIRED
        except ThrottledError:
            self._report.count_throttled_error(services.graph)
            return Outcome.DEFERRED
        except ConnectorError as exc:
            log.warning(
                "renewal: account %s has no %s subscription and none could be made: %s",
                account.account_id,
                resource.kind.value,
                describe(exc),
            )
            return Outcome.FAILED
        log.info(
            "renewal: account %s had no %s subscription; created %s",
            account.account_id,
            resource.kind.value,
            created.subscription_id,
        )
        resync_account(services, self.resync, account.account_id, "subscription_recreated", resource)
        return Outcome.SUBSCRIBED

    def _catch_up_if_quiet(
        self, account: Account, resource: Resource, live: Subscription, now: dt.datetime
    ) -> Outcome | None:
        if resource is MAIL:
            heard = [account.last_notification_at, account.last_sync_at, account.connected_at]
        else:
            heard = [live.caught_up_at or live.last_renewed_at]
        if not self._is_quiet(heard, now, self._lookahead):
            return None
        outcome = resync_account(self.services, self.resync, account.account_id, "catch_up", resource)
        if outcome == "reauth_required":
            return Outcome.REAUTH_REQUIRED
        if outcome != "synced":
            return None  # still quiet: the next visit tries again
        if resource is not MAIL:
            self._record_catch_up(live, now)
        return Outcome.CAUGHT_UP

    def _record_catch_up(self, subscription: Subscription, now: dt.datetime) -> None:
        """The drive's catch-up clock, on its subscription's record. Written alone
        (``defer_index``): the expiry index's copy keeps the old ETag, which costs the next
        renewal of it one read, not this catch-up three index writes."""
        store = self.services.subscriptions

        def change(current: Subscription) -> bool:
            current.caught_up_at = now
            return True

        try:
            update_with_etag(
                lambda: store.get(subscription.account_id, subscription.subscription_id),
                change,
                lambda current: store.save(current, defer_index=True),
                first=subscription,
                what=f"subscription {subscription.subscription_id} (caught up)",
            )
        except ConnectorError as exc:  # caught up again on the next visit: harmless
            log.warning("renewal: subscription %s catch-up not recorded: %s", subscription.subscription_id, describe(exc))

    def _is_quiet(self, heard: list[dt.datetime | None], now: dt.datetime, lookahead: dt.timedelta) -> bool:
        """Quiet: it would pass ``catchup_after`` without news before the sweep's next visit."""
        known = [t for t in heard if t]
        return not known or max(known) <= now - self.catchup_after + lookahead
