"""The account sweep: a paced walk over the accounts table, a slice per renewal run.

Each run reads at most ``accounts_per_run`` accounts, resumed from the continuation token
stored with the sweep's lease (``renewal-account-sweep`` in the checkpoint store). An
active account with no live subscription gets one (and a delta sync, so no mail is lost);
a quiet one gets a catch-up sync. An account is visited once per cycle, so "quiet" looks
ahead: it is caught up when it would pass ``catchup_after`` of silence before the sweep's
next visit (the last cycle's length plus the gap between runs, ``shared.sweep_pace``,
stored with the resume point). That keeps the promise: no active account goes longer than
``catchup_after`` without a notification or a delta sync, from the second cycle on (the
first one, right after a deployment, has no measured length yet and catches up only what
is quiet already). Progress is kept page by page: a crash loses one page at most, and the
lease, extended with each page, keeps a second run from sweeping the same slice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from shared.errors import ConnectorError, ReauthRequiredError, ThrottledError
from shared.models import Account, AccountStatus, SubscriptionStatus
from shared.renewal_report import Outcome, RenewalReport
from shared.runner import KeyedGates
from shared.subscription_renewal import Recreate, Resync, describe, resync_account
from shared.subscriptions import grants_mail
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
                for outcome in pool.map(self._tend_guarded, accounts):
                    if outcome is not None:
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

    def _tend_guarded(self, account: Account) -> Outcome | None:
        try:
            with self._report.throttles_of(self.services.graph), self._gates.hold(account.account_id):
                return self._tend(account)
        except Exception:  # noqa: BLE001 - one bad account must not end the run
            log.exception("renewal: account %s could not be checked", account.account_id)
            return Outcome.FAILED

    def _tend(self, account: Account) -> Outcome | None:
        """An active account gets a subscription when it has none, a catch-up when quiet."""
        services = self.services
        now = services.clock.now()
        if account.status != AccountStatus.ACTIVE:
            return None
        if account.connected_at is not None and now - account.connected_at < CONNECT_GRACE:
            return None
        if account.scopes and not grants_mail(account.scopes):
            return None  # a files-only grant: no mail subscription to keep, no mail to catch up
        recorded = services.subscriptions.for_account(account.account_id)
        if not any(s.status == SubscriptionStatus.ACTIVE for s in recorded):
            try:
                auth = services.tokens.graph_auth(account)
                created = self.recreate(services, account, auth)
            except ReauthRequiredError:
                return Outcome.REAUTH_REQUIRED
            except ThrottledError:
                self._report.count_throttled_error(services.graph)
                return Outcome.DEFERRED
            except ConnectorError as exc:
                log.warning(
                    "renewal: account %s has no subscription and none could be made: %s",
                    account.account_id,
                    describe(exc),
                )
                return Outcome.FAILED
            log.info(
                "renewal: account %s had no subscription; created %s",
                account.account_id,
                created.subscription_id,
            )
            resync_account(services, self.resync, account.account_id, "subscription_recreated")
            return Outcome.SUBSCRIBED
        if self._is_quiet(account, now, self._lookahead):
            outcome = resync_account(services, self.resync, account.account_id, "catch_up")
            if outcome == "synced":
                return Outcome.CAUGHT_UP
            if outcome == "reauth_required":
                return Outcome.REAUTH_REQUIRED
        return None

    def _is_quiet(self, account: Account, now: dt.datetime, lookahead: dt.timedelta) -> bool:
        """Quiet: it would pass ``catchup_after`` without news before the sweep's next visit."""
        heard = [t for t in (account.last_notification_at, account.last_sync_at, account.connected_at) if t]
        return not heard or max(heard) <= now - self.catchup_after + lookahead
