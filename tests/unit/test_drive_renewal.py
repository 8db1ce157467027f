"""Drive subscriptions in the renewal timer (shared/renewal.py, shared/subscription_renewal.py,
shared/account_sweep.py) over in-memory fakes and an injected clock: renewed to the drive's
own lifetime, healed for the same resource, created by the sweep, and caught up on a
timer of their own."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from shared.errors import GraphError
from shared.models import Account, SubscriptionStatus
from shared.renewal import RenewalPolicy, renew_subscriptions
from shared.resources import DRIVE, MAIL
from shared.subscriptions import MAILBOX_RESOURCE, subscriptions_of
from tests.fakes import EPOCH, FakeCheckpointStore, make_services
from tests.unit.renewal_fakes import RecordingResync, add_subscription, connect_bare_account

DRIVE_ROOT = "/me/drive/root"
MAIL_AND_FILES = ("User.Read", "Mail.Read", "Files.ReadWrite.All")
CATCHUP = dt.timedelta(hours=6)


def policy(**changes: Any) -> RenewalPolicy:
    values: dict[str, Any] = {
        "window": dt.timedelta(hours=24),
        "catchup_after": CATCHUP,
        "concurrency": 4,
        "time_budget_seconds": 60.0,
        "sweep_accounts": 0,
    }
    values.update(changes)
    return RenewalPolicy(**values)


@pytest.fixture
def services() -> Any:
    return make_services(real_tokens=False)


@pytest.fixture
def resync() -> RecordingResync:
    return RecordingResync()


def run(services: Any, resync: RecordingResync, **changes: Any) -> Any:
    checkpoints = changes.pop("checkpoints", None) or FakeCheckpointStore()
    return renew_subscriptions(services, policy=policy(**changes), checkpoints=checkpoints, resync=resync)


def account_with_both(
    services: Any,
    number: int = 1,
    *,
    mail_expires_in: dt.timedelta = dt.timedelta(days=5),
    drive_expires_in: dt.timedelta = dt.timedelta(days=20),
    heard_ago: dt.timedelta = dt.timedelta(minutes=30),
) -> tuple[Account, Any, Any]:
    account = connect_bare_account(services, number, heard_ago=heard_ago)
    account.scopes = MAIL_AND_FILES
    account = services.accounts.save(account)
    mail = add_subscription(services, account, expires_in=mail_expires_in)
    drive = add_subscription(services, account, expires_in=drive_expires_in, resource=DRIVE_ROOT)
    return account, mail, drive


def test_an_expiring_drive_subscription_is_renewed_to_the_drives_lifetime_and_mail_to_its_own(services, resync):
    account, mail, drive = account_with_both(
        services, mail_expires_in=dt.timedelta(hours=3), drive_expires_in=dt.timedelta(hours=5)
    )

    report = run(services, resync)

    assert report.renewed == 2 and report.failed == 0
    stored_drive = services.subscriptions.get(account.account_id, drive.subscription_id)
    stored_mail = services.subscriptions.get(account.account_id, mail.subscription_id)
    assert stored_drive.expires_at == EPOCH + dt.timedelta(minutes=42_300 - 30)
    assert stored_mail.expires_at == EPOCH + dt.timedelta(minutes=10_080 - 30)
    assert services.graph.subscriptions[drive.subscription_id].expires_at == stored_drive.expires_at
    assert stored_drive.last_renewed_at == EPOCH
    assert resync.calls == []


def test_a_drive_subscription_days_from_expiry_is_renewed_inside_a_wide_window(services, resync):
    # The drive lives 29 days: a window of 3 days renews it 3 days ahead, as the clock moves.
    account, _, drive = account_with_both(services, drive_expires_in=dt.timedelta(days=10))
    services.clock.advance(days=8)

    report = run(services, resync, window=dt.timedelta(days=3))

    stored = services.subscriptions.get(account.account_id, drive.subscription_id)
    assert report.renewed >= 1
    assert stored.expires_at == services.clock.now().replace(microsecond=0) + DRIVE.lifetime


def test_a_drive_subscription_graph_forgot_is_recreated_for_the_drive_and_the_drive_resynced(services, resync):
    account, mail, drive = account_with_both(services, drive_expires_in=dt.timedelta(hours=2))
    del services.graph.subscriptions[drive.subscription_id]  # dropped by Graph, silently

    report = run(services, resync)

    assert report.recreated == 1 and report.failed == 0
    [replacement] = subscriptions_of(services, account.account_id, DRIVE)
    assert replacement.subscription_id != drive.subscription_id
    assert (replacement.resource, replacement.change_type) == (DRIVE_ROOT, "updated")
    assert replacement.expires_at == DRIVE.expiry(EPOCH)
    assert services.graph.subscriptions[replacement.subscription_id].resource == DRIVE_ROOT
    # The mail subscription is left as it was.
    assert [s.subscription_id for s in subscriptions_of(services, account.account_id, MAIL)] == [mail.subscription_id]
    assert resync.calls == [(account.account_id, "subscription_recreated", "drive")]


def test_a_failed_drive_recreation_stays_in_the_index_though_the_mail_subscription_lives(services, resync):
    account, _, drive = account_with_both(services, drive_expires_in=dt.timedelta(hours=2))
    del services.graph.subscriptions[drive.subscription_id]
    services.graph.fail["create_subscription"] = [GraphError(500, "InternalServerError", "boom")]

    first = run(services, resync)
    [kept] = subscriptions_of(services, account.account_id, DRIVE)
    second = run(services, resync)

    assert first.failed == 1
    assert kept.status == SubscriptionStatus.REMOVED  # recorded again: the next run finds it
    assert second.recreated == 1
    assert [s.resource for s in services.graph.for_account(account.account_id)].count(DRIVE_ROOT) == 1


def test_the_sweep_gives_a_missing_drive_subscription_back_and_leaves_the_mail_alone(services, resync):
    account = connect_bare_account(services, 1)
    account.scopes = MAIL_AND_FILES
    account = services.accounts.save(account)
    mail = add_subscription(services, account, expires_in=dt.timedelta(days=5))

    report = run(services, resync, sweep_accounts=10)

    assert report.subscribed == 1 and report.caught_up == 0
    assert sorted(s.resource for s in services.graph.for_account(account.account_id)) == [
        DRIVE_ROOT,
        MAILBOX_RESOURCE,
    ]
    assert services.subscriptions.get(account.account_id, mail.subscription_id) is not None
    assert resync.calls == [(account.account_id, "subscription_recreated", "drive")]


def test_a_drive_is_caught_up_on_its_own_clock_while_its_mail_keeps_busy(services, resync):
    # Mail heard of 30 minutes ago; the drive last caught up at its creation 7 hours ago.
    account, _, drive = account_with_both(services)
    stored = services.subscriptions.get(account.account_id, drive.subscription_id)
    stored.last_renewed_at = EPOCH - dt.timedelta(hours=7)
    services.subscriptions.save(stored)
    checkpoints = FakeCheckpointStore()

    first = run(services, resync, sweep_accounts=10, checkpoints=checkpoints)
    services.clock.advance(minutes=15)
    second = run(services, resync, sweep_accounts=10, checkpoints=checkpoints)

    assert first.caught_up == 1 and second.caught_up == 0
    assert resync.calls == [(account.account_id, "catch_up", "drive")]
    assert services.subscriptions.get(account.account_id, drive.subscription_id).caught_up_at == EPOCH
    services.clock.advance(hours=6)
    third = run(services, resync, sweep_accounts=10, checkpoints=checkpoints)
    assert third.caught_up == 2  # the mail has gone quiet since, and the drive is due again
    assert sorted(resync.calls[1:]) == [(account.account_id, "catch_up"), (account.account_id, "catch_up", "drive")]


def test_a_drive_catch_up_that_failed_is_tried_again_on_the_next_visit(services):
    account, _, drive = account_with_both(services, heard_ago=dt.timedelta(minutes=5))
    stored = services.subscriptions.get(account.account_id, drive.subscription_id)
    stored.last_renewed_at = EPOCH - dt.timedelta(hours=7)
    services.subscriptions.save(stored)
    attempts: list[str] = []

    def failing_once(services: Any, account_id: str, resource: Any, *, reason: str) -> None:
        attempts.append(resource.kind.value)
        if len(attempts) == 1:
            raise GraphError(503, "ServiceUnavailable", "later")

    checkpoints = FakeCheckpointStore()
    for _ in range(2):
        renew_subscriptions(
            services, policy=policy(sweep_accounts=10), checkpoints=checkpoints, resync=failing_once
        )
        services.clock.advance(minutes=15)

    assert attempts == ["drive", "drive"]
    assert services.subscriptions.get(account.account_id, drive.subscription_id).caught_up_at is not None


def test_no_drive_goes_longer_than_the_catch_up_period_without_one_over_many_cycles(services):
    # 400 accounts whose mail is heard of all the time; 40 swept per 15-minute run, so a
    # cycle takes 2.5 hours. The drives were created at times spread over the past 6 hours.
    caught: dict[str, dt.datetime] = {}
    for n in range(400):
        account = connect_bare_account(services, n + 1)
        account.scopes = MAIL_AND_FILES
        services.accounts.save(account)
        add_subscription(services, account, expires_in=dt.timedelta(days=25))
        drive = add_subscription(services, account, expires_in=dt.timedelta(days=25), resource=DRIVE_ROOT)
        drive.last_renewed_at = EPOCH - dt.timedelta(minutes=n % 360)
        services.subscriptions.save(drive)
        caught[account.account_id] = drive.last_renewed_at
    clock = services.clock

    def catch_up(services: Any, account_id: str, resource: Any, *, reason: str) -> None:
        if resource is DRIVE:
            caught[account_id] = clock.now()
        else:  # mail never goes quiet here: its notifications keep coming
            raise AssertionError("a busy mailbox was caught up")

    def keep_mail_busy() -> None:
        for account in services.accounts.items.values():
            account.last_notification_at = clock.now()

    checkpoints = FakeCheckpointStore()
    worst = dt.timedelta(0)
    for run_number in range(60):  # 15 hours
        keep_mail_busy()
        renew_subscriptions(
            services, policy=policy(sweep_accounts=40), checkpoints=checkpoints, resync=catch_up
        )
        clock.advance(minutes=15)
        if run_number >= 20:  # from the second cycle on (the first one measures the pace)
            worst = max(worst, clock.now() - min(caught.values()))
    assert worst <= CATCHUP, f"a drive went {worst} without a catch-up"
    assert all(
        s.caught_up_at is not None for s in services.subscriptions.items.values() if s.resource == DRIVE_ROOT
    )


def test_the_catch_up_of_a_drive_runs_the_resource_sync_of_the_drive(services, monkeypatch):
    account, _, drive = account_with_both(services)
    stored = services.subscriptions.get(account.account_id, drive.subscription_id)
    stored.last_renewed_at = EPOCH - dt.timedelta(hours=7)
    services.subscriptions.save(stored)
    ran: list[tuple[str, str, str]] = []

    def sync_resource(services: Any, account_id: str, resource: Any, *, reason: str, **_: Any) -> None:
        ran.append((account_id, resource.kind.value, reason))

    monkeypatch.setattr("shared.resource_sync.sync_resource", sync_resource)

    renew_subscriptions(services, policy=policy(sweep_accounts=10), checkpoints=FakeCheckpointStore())

    assert ran == [(account.account_id, "drive", "catch_up")]
