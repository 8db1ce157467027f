"""The renewal timer's core (shared/renewal.py and its parts) over in-memory fakes and a fixed clock."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
from typing import Any

import pytest

from shared.client_state import key_id, read_client_state
from shared.errors import GraphError, GraphUnauthorizedError, ThrottledError
from shared.models import AccountStatus, SubscriptionStatus
from shared.renewal import (
    LEASE,
    RUN_LEASE,
    SWEEP_CHECKPOINT,
    Outcome,
    RenewalPolicy,
    RenewalReport,
    SweepCheckpoint,
    renew_subscriptions,
)
from shared.resources import DRIVE_ROOT_RESOURCE
from shared.subscriptions import MAILBOX_RESOURCE, MAX_MAIL_SUBSCRIPTION_LIFETIME, mailbox_subscription_expiry
from tests.fakes import EPOCH, FakeCheckpointStore, FakeGraphApi, make_services
from tests.unit.renewal_fakes import (
    RecordingResync,
    SlowGraphApi,
    add_subscription,
    connect_account,
    connect_bare_account,
    give_token_cache,
)

WINDOW = dt.timedelta(hours=24)


def policy(**changes: Any) -> RenewalPolicy:
    values: dict[str, Any] = {
        "window": WINDOW,
        "catchup_after": dt.timedelta(hours=6),
        "concurrency": 8,
        "time_budget_seconds": 60.0,
        "sweep_accounts": 0,
    }
    values.update(changes)
    return RenewalPolicy(**values)


@pytest.fixture
def resync() -> RecordingResync:
    return RecordingResync()


@pytest.fixture
def services() -> Any:
    return make_services(real_tokens=False)


def run(services: Any, resync: RecordingResync, **kwargs: Any) -> Any:
    return renew_subscriptions(services, policy=kwargs.pop("policy", policy()), resync=resync, **kwargs)


def patches(services: Any) -> int:
    return sum(1 for method, _ in services.graph.calls if method == "renew_subscription")


# --- renewal --------------------------------------------------------------------------------


def test_an_expiring_subscription_is_renewed_to_the_longest_lifetime_and_stored(services, resync):
    account, sub = connect_account(services, 1, expires_in=dt.timedelta(hours=3))

    report = run(services, resync)

    stored = services.subscriptions.get(account.account_id, sub.subscription_id)
    assert report.renewed == 1 and report.failed == 0
    assert stored.expires_at == mailbox_subscription_expiry(EPOCH)
    assert stored.expires_at - EPOCH <= MAX_MAIL_SUBSCRIPTION_LIFETIME
    assert stored.expires_at - EPOCH > MAX_MAIL_SUBSCRIPTION_LIFETIME - dt.timedelta(hours=1)
    assert stored.last_renewed_at == EPOCH
    assert services.graph.subscriptions[sub.subscription_id].expires_at == stored.expires_at


def test_an_expired_subscription_still_known_to_graph_is_renewed(services, resync):
    account, sub = connect_account(services, 1, expires_in=dt.timedelta(minutes=-5))

    report = run(services, resync)

    assert report.renewed == 1
    assert services.subscriptions.get(account.account_id, sub.subscription_id).expires_at > EPOCH


def test_a_subscription_expiring_after_the_window_is_not_touched(services, resync):
    connect_account(services, 1, expires_in=WINDOW + dt.timedelta(hours=1))

    report = run(services, resync)

    assert report.renewed == 0
    assert patches(services) == 0


def test_a_subscription_graph_no_longer_knows_is_recreated_and_the_mailbox_resynced(services, resync):
    account, sub = connect_account(services, 1)
    del services.graph.subscriptions[sub.subscription_id]  # Graph dropped it silently

    report = run(services, resync)

    assert report.recreated == 1 and report.failed == 0
    recorded = services.subscriptions.for_account(account.account_id)
    live = services.graph.for_account(account.account_id)
    assert [s.subscription_id for s in recorded] == [s.id for s in live]
    assert recorded[0].subscription_id != sub.subscription_id
    assert recorded[0].status == SubscriptionStatus.ACTIVE
    assert recorded[0].resource == MAILBOX_RESOURCE
    assert resync.calls == [(account.account_id, "subscription_recreated")]


RETIRED_KEY = b"the clientState key before the rotation, 32+ bytes"


def reissued_in_place_of(services: Any, account: Any, old: Any) -> Any:
    """The account's one subscription, recorded and live in Graph, once ``old`` is gone."""
    [recorded] = services.subscriptions.for_account(account.account_id)
    [live] = services.graph.for_account(account.account_id)
    assert recorded.subscription_id == live.id != old.subscription_id
    assert old.subscription_id not in services.graph.subscriptions
    return recorded, live


def test_a_due_subscription_signed_with_a_retired_key_is_reissued_under_the_current_one(services, resync):
    account = connect_bare_account(services, 1)
    old = add_subscription(services, account, expires_in=dt.timedelta(hours=3), key=RETIRED_KEY)

    report = run(services, resync)

    assert report.reissued == 1 and report.renewed == 0 and report.failed == 0
    assert patches(services) == 0  # a PATCH would keep the old clientState another week
    recorded, live = reissued_in_place_of(services, account, old)
    current = services.settings.client_state_key
    claim = read_client_state(current, live.client_state)
    assert claim is not None and claim.account_id == account.account_id
    assert read_client_state(RETIRED_KEY, live.client_state) is None
    assert recorded.client_state_key_id == key_id(current) and recorded.client_state_nonce == claim.nonce
    assert recorded.expires_at == mailbox_subscription_expiry(EPOCH)
    # What arrived between the old subscription's deletion and the new one's creation.
    assert resync.calls == [(account.account_id, "subscription_recreated")]


def test_a_due_subscription_made_before_nonces_were_kept_is_reissued_with_one(services, resync):
    account = connect_bare_account(services, 1)
    old = add_subscription(services, account, expires_in=dt.timedelta(hours=3), nonce=None)

    report = run(services, resync)

    assert report.reissued == 1
    recorded, live = reissued_in_place_of(services, account, old)
    claim = read_client_state(services.settings.client_state_key, live.client_state)
    assert claim is not None and recorded.client_state_nonce == claim.nonce


def test_a_subscription_of_a_retired_key_is_left_alone_until_it_is_due(services, resync):
    account = connect_bare_account(services, 1)
    old = add_subscription(services, account, expires_in=WINDOW + dt.timedelta(hours=1), key=RETIRED_KEY)
    calls = len(services.graph.calls)  # its creation

    report = run(services, resync)

    assert report.reissued == 0 and len(services.graph.calls) == calls
    assert [s.subscription_id for s in services.subscriptions.for_account(account.account_id)] == [old.subscription_id]


def test_a_reissue_whose_creation_failed_is_done_by_the_next_run(services, resync):
    account = connect_bare_account(services, 1)
    old = add_subscription(services, account, expires_in=dt.timedelta(hours=3), key=RETIRED_KEY)
    services.graph.fail["create_subscription"] = [GraphError(500, "InternalServerError", "boom")]

    first = run(services, resync)
    second = run(services, resync)

    assert first.failed == 1 and second.recreated == 1
    recorded, _ = reissued_in_place_of(services, account, old)
    assert recorded.client_state_key_id == key_id(services.settings.client_state_key)


def test_a_failed_recreation_leaves_the_subscription_for_the_next_run(services, resync):
    account, sub = connect_account(services, 1)
    del services.graph.subscriptions[sub.subscription_id]
    services.graph.fail["create_subscription"] = [GraphError(500, "InternalServerError", "boom")]

    first = run(services, resync)
    second = run(services, resync)

    assert first.failed == 1
    assert second.recreated == 1
    assert len(services.graph.for_account(account.account_id)) == 1


def test_an_account_whose_refresh_token_died_becomes_reauth_required_and_is_then_skipped(resync):
    services: Any = make_services()  # the real token provider over the fake identity
    account, sub = connect_account(services, 1)
    give_token_cache(services, account)
    services.identity.revoke(account.account_id)

    first = run(services, resync)
    second = run(services, resync)

    assert first.reauth_required == 1 and first.failed == 0
    assert services.accounts.get(account.account_id).status == AccountStatus.REAUTH_REQUIRED
    assert second.skipped == 1 and second.reauth_required == 0
    assert patches(services) == 0


def test_an_expired_subscription_of_an_account_that_must_sign_in_again_is_forgotten(services, resync):
    account, sub = connect_account(services, 1, expires_in=dt.timedelta(minutes=-1))
    account.status = AccountStatus.REAUTH_REQUIRED
    services.accounts.save(account)

    report = run(services, resync)

    assert report.skipped == 1
    assert services.subscriptions.for_account(account.account_id) == []


def test_no_patch_within_ten_minutes_of_a_reauthorize(services, resync):
    account, sub = connect_account(services, 1)
    sub.last_reauthorized_at = EPOCH - dt.timedelta(minutes=9)
    services.subscriptions.save(sub)

    soon = run(services, resync)
    services.clock.advance(minutes=2)
    later = run(services, resync)

    assert soon.skipped == 1 and soon.renewed == 0
    assert later.renewed == 1
    assert patches(services) == 1


def test_a_subscription_renewed_moments_ago_is_not_patched_again(services, resync):
    account, sub = connect_account(services, 1)
    sub.last_renewed_at = EPOCH - dt.timedelta(minutes=3)
    services.subscriptions.save(sub)

    report = run(services, resync)

    assert report.skipped == 1
    assert patches(services) == 0


def test_a_run_leaves_the_renewals_to_another_run_holding_the_lease_until_it_ends(services, resync):
    account, sub = connect_account(services, 1)
    services.checkpoints.save(SweepCheckpoint(RUN_LEASE, leased_until=EPOCH + dt.timedelta(minutes=2)))

    during = run(services, resync)
    services.clock.advance(minutes=3)  # the other run died without giving it back
    after = run(services, resync)

    assert during.another_run and during.renewed == 0
    assert patches(services) == 1
    assert after.renewed == 1 and not after.another_run
    assert services.checkpoints.get(RUN_LEASE).leased_until is None  # given back at the end


def test_two_runs_started_together_renew_each_subscription_once(resync):
    services: Any = make_services(real_tokens=False, graph=SlowGraphApi(latency=0.01))
    subs = [connect_account(services, n)[1] for n in range(40)]
    reports: list[Any] = []

    def one_run() -> None:
        reports.append(run(services, resync, policy=policy(concurrency=4)))

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(services.graph.renewed_ids) == sorted(s.subscription_id for s in subs)
    assert sum(r.renewed for r in reports) == 40
    assert sum(r.failed for r in reports) == 0


def test_requests_are_bounded_overall_and_one_at_a_time_per_mailbox(resync):
    services: Any = make_services(real_tokens=False, graph=SlowGraphApi(latency=0.02))
    for n in range(30):
        account, _ = connect_account(services, n)
        # Mail and drive: two subscriptions per mailbox.
        add_subscription(services, account, expires_in=dt.timedelta(hours=1), resource=DRIVE_ROOT_RESOURCE)

    report = run(services, resync, policy=policy(concurrency=6))

    assert report.renewed == 60
    assert services.graph.peak_per_mailbox == 1
    assert 1 < services.graph.peak_overall <= 6


def test_a_throttled_renewal_is_retried_after_retry_after_within_the_run(services, resync):
    account, sub = connect_account(services, 1)
    services.graph.fail["renew_subscription"] = [ThrottledError("429", 0.05), ThrottledError("429", 0.05)]

    report = run(services, resync)

    assert report.renewed == 1 and report.throttled == 2 and report.failed == 0
    assert patches(services) == 3
    assert services.subscriptions.get(account.account_id, sub.subscription_id).last_renewed_at == EPOCH


def test_a_subscription_throttled_again_and_again_waits_for_the_next_run(services, resync):
    account, sub = connect_account(services, 1)
    services.graph.fail["renew_subscription"] = [ThrottledError("429", 0.0) for _ in range(4)]

    report = run(services, resync)
    stored = services.subscriptions.get(account.account_id, sub.subscription_id)
    services.clock.advance(minutes=15)
    next_run = run(services, resync)

    assert report.deferred == 1 and report.failed == 0 and report.renewed == 0
    assert stored.expires_at == sub.expires_at
    assert next_run.renewed == 1


def test_a_run_stops_picking_new_work_when_its_time_budget_is_spent(services, resync):
    for n in range(20):
        connect_account(services, n)
    ticks = iter(range(10_000))

    report = run(
        services, resync, policy=policy(time_budget_seconds=8, concurrency=1), monotonic=lambda: next(ticks)
    )

    assert report.stopped_early
    assert 0 < report.renewed < 20
    leftovers = [s for s in services.subscriptions.expiring_before(EPOCH + WINDOW)]
    assert len(leftovers) == 20 - report.renewed
    after = run(services, resync)
    assert after.renewed == 20 - report.renewed


def test_a_lost_final_write_keeps_the_concurrent_change_and_the_new_expiry(resync):
    class InterferingGraph(FakeGraphApi):
        def renew_subscription(self, auth: Any, subscription_id: str, expires_at: dt.datetime) -> Any:
            answer = super().renew_subscription(auth, subscription_id, expires_at)
            stored = store.get(auth.account_id, subscription_id)
            stored.last_reauthorized_at = EPOCH - dt.timedelta(minutes=30)  # the lifecycle handling writes
            store.save(stored)
            return answer

    services: Any = make_services(real_tokens=False, graph=InterferingGraph())
    store = services.subscriptions
    account, sub = connect_account(services, 1)

    report = run(services, resync)

    stored = store.get(account.account_id, sub.subscription_id)
    assert report.renewed == 1
    assert stored.expires_at == mailbox_subscription_expiry(EPOCH)
    assert stored.last_reauthorized_at == EPOCH - dt.timedelta(minutes=30)


def test_an_unexpected_graph_error_counts_as_failed_and_the_next_run_tries_again(services, resync):
    account, sub = connect_account(services, 1)
    services.graph.fail["renew_subscription"] = [GraphError(400, "BadRequest", "nope")]

    report = run(services, resync)
    services.clock.advance(minutes=15)
    next_run = run(services, resync)

    assert report.failed == 1 and report.renewed == 0
    assert next_run.renewed == 1


def test_every_renewed_subscription_has_its_index_entry_moved(services, resync):
    subs = [connect_account(services, n)[1] for n in range(250)]

    report = run(services, resync)

    assert report.renewed == 250
    assert sorted(services.subscriptions.reindexed) == sorted(s.subscription_id for s in subs)


# --- catch-up -------------------------------------------------------------------------------


def test_a_renewal_leaves_catch_up_to_the_sweep_which_resyncs_the_quiet_account(services, resync):
    quiet, _ = connect_account(services, 1, heard_ago=dt.timedelta(hours=7))
    connect_account(services, 2, heard_ago=dt.timedelta(hours=1))

    renewals_only = run(services, resync)
    calls_after_renewals = list(resync.calls)
    services.clock.advance(minutes=15)
    with_sweep = run(services, resync, policy=policy(sweep_accounts=100), checkpoints=services.checkpoints)

    assert renewals_only.renewed == 2 and renewals_only.caught_up == 0
    assert calls_after_renewals == []
    assert with_sweep.caught_up == 1
    assert resync.calls == [(quiet.account_id, "catch_up")]


# --- the account sweep ----------------------------------------------------------------------


def test_the_sweep_gives_an_account_without_subscription_one_and_resyncs_it(services, resync):
    bare = connect_bare_account(services, 1)
    connect_account(services, 2, expires_in=dt.timedelta(days=5))
    checkpoints = FakeCheckpointStore()

    report = run(services, resync, policy=policy(sweep_accounts=100), checkpoints=checkpoints)

    assert report.subscribed == 1 and report.swept == 2
    assert len(services.subscriptions.for_account(bare.account_id)) == 1
    assert len(services.graph.for_account(bare.account_id)) == 1
    assert resync.calls == [(bare.account_id, "subscription_recreated")]


def test_the_sweep_gives_an_account_granted_no_mail_its_drive_subscription_and_no_mail_one(services, resync):
    files_only = connect_bare_account(services, 1, heard_ago=dt.timedelta(days=2))
    files_only.scopes = ("User.Read", "Files.ReadWrite.All")
    services.accounts.save(files_only)

    report = run(services, resync, policy=policy(sweep_accounts=100), checkpoints=FakeCheckpointStore())

    assert report.swept == 1 and report.subscribed == 1 and report.caught_up == 0 and report.failed == 0
    assert [s.resource for s in services.graph.for_account(files_only.account_id)] == ["/me/drive/root"]
    assert resync.calls == [(files_only.account_id, "subscription_recreated", "drive")]


def test_the_sweep_catches_up_quiet_accounts_only(services, resync):
    quiet, _ = connect_account(services, 1, expires_in=dt.timedelta(days=5), heard_ago=dt.timedelta(hours=8))
    connect_account(services, 2, expires_in=dt.timedelta(days=5), heard_ago=dt.timedelta(hours=1))

    report = run(services, resync, policy=policy(sweep_accounts=100), checkpoints=FakeCheckpointStore())

    assert report.caught_up == 1
    assert resync.calls == [(quiet.account_id, "catch_up")]


def test_the_sweep_leaves_accounts_that_must_sign_in_again_and_fresh_connects_alone(services, resync):
    waiting = connect_bare_account(services, 1, heard_ago=dt.timedelta(days=2))
    waiting.status = AccountStatus.REAUTH_REQUIRED
    services.accounts.save(waiting)
    fresh = connect_bare_account(services, 2)
    fresh.connected_at = EPOCH - dt.timedelta(minutes=2)
    services.accounts.save(fresh)

    report = run(services, resync, policy=policy(sweep_accounts=100), checkpoints=FakeCheckpointStore())

    assert report.swept == 2 and report.subscribed == 0 and report.caught_up == 0
    assert services.graph.calls == []


def test_the_sweep_resumes_where_the_last_run_stopped_and_wraps_around(services, resync):
    accounts = [connect_bare_account(services, n) for n in range(5)]
    checkpoints = FakeCheckpointStore()
    sweep = policy(sweep_accounts=2)

    per_run = [run(services, resync, policy=sweep, checkpoints=checkpoints).subscribed for _ in range(3)]

    assert per_run == [2, 2, 1]
    assert sorted(a for a, _ in resync.calls) == sorted(a.account_id for a in accounts)
    final = checkpoints.get(SWEEP_CHECKPOINT)
    assert final is not None
    from shared.renewal import _SweepPace

    assert _SweepPace.decode(final.continuation).token is None  # the next run starts from the top
    assert final.leased_until is None


def test_the_sweep_is_skipped_while_another_run_holds_its_lease(services, resync):
    connect_bare_account(services, 1)
    checkpoints = FakeCheckpointStore()
    checkpoints.save(SweepCheckpoint(SWEEP_CHECKPOINT, leased_until=EPOCH + LEASE))

    report = run(services, resync, policy=policy(sweep_accounts=100), checkpoints=checkpoints)

    assert report.swept == 0 and report.subscribed == 0


# --- the run as a whole ---------------------------------------------------------------------


def test_each_run_logs_one_summary_line_and_a_late_run_says_so(services, resync, caplog):
    connect_account(services, 1)
    caplog.set_level(logging.INFO, logger="shared.renewal")

    report = run(services, resync, past_due=True)

    assert report.past_due
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("renewal run:")]
    assert len(summaries) == 1
    for figure in ("renewed=1", "recreated=0", "failed=0", "skipped=0", "duration="):
        assert figure in summaries[0]
    assert any("past due" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_the_summary_line_keeps_its_figures_in_the_order_operators_read_them():
    report = RenewalReport(past_due=True, duration_seconds=12.34)
    report.add(Outcome.RENEWED, 3)
    report.add(Outcome.DEFERRED)
    report.add(Outcome.REAUTH_REQUIRED)
    report.count_throttled()
    report.count_swept(5)

    assert report.summary() == (
        "renewed=3 recreated=0 reissued=0 failed=0 skipped=0 reauth_required=1 deferred=1 caught_up=0 "
        "subscribed=0 swept=5 throttled=1 past_due=True another_run=False stopped_early=False "
        "duration=12.3s"
    )


def test_outcomes_added_from_many_threads_are_all_counted():
    report = RenewalReport()

    def add_many() -> None:
        for _ in range(2000):
            report.add(Outcome.RENEWED)
            report.count_throttled()

    threads = [threading.Thread(target=add_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert report.renewed == 16_000 and report.throttled == 16_000


def test_the_policy_comes_from_the_settings():
    from tests.fakes import make_settings

    services = make_services(
        make_settings(RENEWAL_WINDOW_MINUTES="90", CATCHUP_AFTER_MINUTES="30", RENEWAL_CONCURRENCY="3"),
        real_tokens=False,
    )

    chosen = RenewalPolicy.from_services(services)

    assert chosen.window == dt.timedelta(minutes=90)
    assert chosen.catchup_after == dt.timedelta(minutes=30)
    assert chosen.concurrency == 3


def test_a_refused_access_token_is_replaced_once_and_the_renewal_goes_through(services, resync):
    account, sub = connect_account(services, 1)
    services.graph.fail["renew_subscription"] = [GraphUnauthorizedError("InvalidAuthenticationToken", "expired")]

    report = run(services, resync)

    assert report.renewed == 1 and report.failed == 0
    assert patches(services) == 2
    assert services.tokens.issued.count(account.account_id) == 2


def test_a_run_whose_lease_was_taken_over_stops_without_renewing_again(resync):
    class TakenOverWhileThrottled(FakeGraphApi):
        throttled = False

        def renew_subscription(self, auth: Any, subscription_id: str, expires_at: dt.datetime) -> Any:
            if not self.throttled:
                self.throttled = True
                self.calls.append(("renew_subscription", auth.account_id))
                self.clock.advance(minutes=6)  # our lease ran out meanwhile ...
                lease = services.checkpoints.get(RUN_LEASE)
                lease.leased_until = self.clock.now() + LEASE  # ... and another run took it
                services.checkpoints.save(lease)
                raise ThrottledError("429", 0.0)
            return super().renew_subscription(auth, subscription_id, expires_at)

    services: Any = make_services(real_tokens=False)
    services.__dict__["graph"] = TakenOverWhileThrottled(services.clock)
    connect_account(services, 1)
    seconds = itertools.count(step=30)  # a heartbeat is due every other look at the time

    report = run(services, resync, policy=policy(time_budget_seconds=10_000), monotonic=lambda: next(seconds))

    assert report.renewed == 0 and report.deferred == 1 and report.stopped_early
    assert patches(services) == 1
    assert services.checkpoints.get(RUN_LEASE).leased_until > services.clock.now()  # theirs, untouched


# --- what a renewal reads -------------------------------------------------------------------


class CountingAccounts:
    """The fake account store, counting point reads."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads = 0

    def get(self, account_id: str) -> Any:
        self.reads += 1
        return self.inner.get(account_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_an_access_token_at_hand_renews_without_reading_the_account(services, resync):
    accounts = [connect_account(services, n)[0] for n in range(3)]
    for account in accounts:
        services.tokens.remember(account.account_id, f"held-{account.account_id}", 3600)
    counting = services.__dict__["accounts"] = CountingAccounts(services.accounts)

    report = run(services, resync)

    assert report.renewed == 3
    assert counting.reads == 0
    assert services.tokens.issued == []  # no refresh either


def test_a_held_token_graph_refuses_is_dropped_and_the_account_read_for_a_fresh_one(services, resync):
    account, _ = connect_account(services, 1)
    services.tokens.remember(account.account_id, "revoked", 3600)
    services.graph.fail["renew_subscription"] = [GraphUnauthorizedError("InvalidAuthenticationToken", "revoked")]
    counting = services.__dict__["accounts"] = CountingAccounts(services.accounts)

    report = run(services, resync)

    assert report.renewed == 1
    assert counting.reads == 1 and services.tokens.issued == [account.account_id]
    assert account.account_id not in services.tokens.cached


def test_a_held_token_refused_for_an_account_whose_sign_in_died_marks_it(services, resync):
    account, sub = connect_account(services, 1)
    services.tokens.remember(account.account_id, "revoked", 3600)
    services.tokens.dead.add(account.account_id)
    services.graph.fail["renew_subscription"] = [GraphUnauthorizedError("InvalidAuthenticationToken", "revoked")]

    report = run(services, resync)

    assert report.reauth_required == 1 and report.renewed == 0
    assert services.subscriptions.get(account.account_id, sub.subscription_id).expires_at == sub.expires_at


def test_a_subscription_deleted_while_graph_answered_404_is_not_recreated(resync):
    class DisconnectedMeanwhile(FakeGraphApi):
        def renew_subscription(self, auth: Any, subscription_id: str, expires_at: dt.datetime) -> Any:
            services.subscriptions.delete(auth.account_id, subscription_id)  # a disconnect, meanwhile
            del self.subscriptions[subscription_id]
            return super().renew_subscription(auth, subscription_id, expires_at)

    services: Any = make_services(real_tokens=False)
    services.__dict__["graph"] = DisconnectedMeanwhile(services.clock)
    account, _ = connect_account(services, 1)

    report = run(services, resync)

    assert report.skipped == 1 and report.recreated == 0
    assert services.graph.for_account(account.account_id) == []
    assert services.subscriptions.for_account(account.account_id) == []


# --- a run that did not finish --------------------------------------------------------------


def test_runs_read_the_index_copies_after_a_finished_run_and_recheck_after_an_unfinished_one(services, resync):
    connect_account(services, 1)
    checkpoints = services.checkpoints

    run(services, resync, checkpoints=checkpoints)  # the first run ever: nothing to distrust
    services.clock.advance(minutes=15)
    run(services, resync, checkpoints=checkpoints)  # after a run that gave its lease back
    crashed = checkpoints.get(RUN_LEASE)
    crashed.leased_until = services.clock.now() + LEASE  # a run that crashed, its lease left ...
    checkpoints.save(crashed)
    services.clock.advance(minutes=6)  # ... to run out (LEASE is 5 minutes)
    report = run(services, resync, checkpoints=checkpoints)

    assert services.subscriptions.rechecks == [False, False, True]
    assert not report.another_run
    assert checkpoints.get(RUN_LEASE).leased_until is None  # this one finished


def test_a_run_that_could_not_write_its_index_entries_makes_the_next_run_recheck(resync):
    from shared.errors import PersistenceError
    from tests.fakes import FakeSubscriptionStore

    class UnwritableIndex(FakeSubscriptionStore):
        broken = True

        def reindex(self, subscriptions: Any) -> None:
            if self.broken:
                raise PersistenceError("index unreachable")
            super().reindex(subscriptions)

    services: Any = make_services(real_tokens=False, subscriptions=UnwritableIndex())
    connect_account(services, 1)

    first = run(services, resync)
    left = services.checkpoints.get(RUN_LEASE)
    services.subscriptions.broken = False
    services.clock.advance(minutes=15)
    run(services, resync)

    assert first.renewed == 1
    assert left.leased_until is not None and left.leased_until <= services.clock.now()  # given back, unfinished
    assert services.subscriptions.rechecks == [False, True]
    assert services.checkpoints.get(RUN_LEASE).leased_until is None
