"""Lifecycle events and re-issues of drive subscriptions in processing
(shared/notifications.py), over fakes and a fixed clock; the sync entry point is recorded,
so each resync is seen with the resource it targets."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from shared.delta_round import SyncResult
from shared.models import Account
from shared.notifications import process_trigger
from shared.ports import GraphAuth
from shared.resources import DRIVE, MAIL, ResourceKind
from shared.subscriptions import ensure_subscription, subscriptions_of
from shared.webhook import LifecycleSignal, NotificationTrigger, SubscriptionChange
from tests.fakes import EPOCH, make_services

DRIVE_ROOT = "/me/drive/root"


class Syncs:
    """Stands for ``shared.resource_sync.sync_resource`` (and the hot path's
    ``sync_mailbox``): records (resource kind, reason) and publishes one event each."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def sync_resource(self, services: Any, account_id: str, resource: Any, *, reason: str, **_: Any) -> SyncResult:
        self.calls.append((resource.kind.value, reason))
        result = SyncResult(account_id, reason)
        result.created = 1
        return result

    def sync_mailbox(self, services: Any, account_id: str, *, reason: str, **kwargs: Any) -> SyncResult:
        return self.sync_resource(services, account_id, MAIL, reason=reason, **kwargs)


@pytest.fixture
def services() -> Any:
    return make_services(real_tokens=False)


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Syncs:
    recorder = Syncs()
    monkeypatch.setattr("shared.notifications.sync_resource", recorder.sync_resource)
    monkeypatch.setattr("shared.notifications.sync_mailbox", recorder.sync_mailbox)
    return recorder


@pytest.fixture
def account(services: Any) -> Account:
    return services.accounts.save(
        Account(
            account_id="adele-oid.tenant-1",
            tenant_id="tenant-1",
            user_id="adele-oid",
            user_principal_name="adele@contoso.test",
            scopes=("User.Read", "Mail.Read", "Files.ReadWrite.All"),
            connected_at=EPOCH - dt.timedelta(days=1),
        )
    )


def subscribe(services: Any, account: Account) -> tuple[Any, Any]:
    auth = GraphAuth(account.account_id, "token")
    return ensure_subscription(services, account, auth, MAIL), ensure_subscription(services, account, auth, DRIVE)


def lifecycle(account: Account, *signals: tuple[Any, str], changed: tuple[Any, ...] = ()) -> NotificationTrigger:
    return NotificationTrigger(
        account_id=account.account_id,
        subscription_ids=tuple(s.subscription_id for s in changed),
        changes=len(changed),
        lifecycle=tuple(LifecycleSignal(s.subscription_id, event, s.client_state_nonce) for s, event in signals),
        received_at_ms=int(EPOCH.timestamp() * 1000),
        changed=tuple(SubscriptionChange(s.subscription_id, s.client_state_nonce) for s in changed),
    )


def graph_calls(services: Any, method: str) -> int:
    return sum(1 for m, _ in services.graph.calls if m == method)


def test_reauthorization_required_for_a_drive_subscription_reauthorizes_it_and_syncs_nothing(
    services: Any, syncs: Syncs, account: Account
) -> None:
    _, drive = subscribe(services, account)
    services.clock.advance(minutes=30)

    outcome = process_trigger(services, lifecycle(account, (drive, "reauthorizationRequired")))

    assert outcome.lifecycle_handled == ["reauthorizationRequired"]
    assert ("reauthorize_subscription", account.account_id) in services.graph.calls
    stored = services.subscriptions.get(account.account_id, drive.subscription_id)
    assert stored.last_reauthorized_at == services.clock.now()
    assert syncs.calls == []


def test_reauthorization_of_a_drive_subscription_graph_forgot_recreates_it_for_the_drive(
    services: Any, syncs: Syncs, account: Account
) -> None:
    mail, drive = subscribe(services, account)
    del services.graph.subscriptions[drive.subscription_id]
    services.clock.advance(minutes=30)

    outcome = process_trigger(services, lifecycle(account, (drive, "reauthorizationRequired")))

    [replacement] = subscriptions_of(services, account.account_id, DRIVE)
    assert replacement.subscription_id != drive.subscription_id
    assert services.graph.subscriptions[replacement.subscription_id].resource == DRIVE_ROOT
    assert services.graph.subscriptions[replacement.subscription_id].change_type == "updated"
    assert [s.subscription_id for s in subscriptions_of(services, account.account_id, MAIL)] == [mail.subscription_id]
    assert syncs.calls == [("drive", "lifecycle")]
    assert outcome.resource_syncs[ResourceKind.DRIVE] is not None and outcome.published == 1


def test_subscription_removed_for_a_live_drive_subscription_renews_it_and_resyncs_the_drive(
    services: Any, syncs: Syncs, account: Account
) -> None:
    _, drive = subscribe(services, account)
    services.clock.advance(hours=1)

    process_trigger(services, lifecycle(account, (drive, "subscriptionRemoved")))

    [kept] = subscriptions_of(services, account.account_id, DRIVE)
    assert kept.subscription_id == drive.subscription_id  # Graph still had it: a replay
    assert kept.expires_at == DRIVE.expiry(services.clock.now())
    assert syncs.calls == [("drive", "lifecycle")]


def test_subscription_removed_for_a_drive_graph_dropped_recreates_the_drive_one_only(
    services: Any, syncs: Syncs, account: Account
) -> None:
    mail, drive = subscribe(services, account)
    del services.graph.subscriptions[drive.subscription_id]

    process_trigger(services, lifecycle(account, (drive, "subscriptionRemoved")))

    [replacement] = subscriptions_of(services, account.account_id, DRIVE)
    assert replacement.subscription_id != drive.subscription_id and replacement.resource == DRIVE_ROOT
    assert services.subscriptions.get(account.account_id, mail.subscription_id) is not None
    assert graph_calls(services, "create_subscription") == 3  # mail, drive, the drive again
    assert syncs.calls == [("drive", "lifecycle")]


def test_missed_for_a_drive_subscription_resyncs_the_drive_not_the_mail(
    services: Any, syncs: Syncs, account: Account
) -> None:
    _, drive = subscribe(services, account)

    process_trigger(services, lifecycle(account, (drive, "missed")))

    assert syncs.calls == [("drive", "lifecycle")]


def test_events_of_both_resources_resync_each_once_mail_first(services: Any, syncs: Syncs, account: Account) -> None:
    mail, drive = subscribe(services, account)

    outcome = process_trigger(
        services, lifecycle(account, (drive, "missed"), (mail, "missed"), (drive, "subscriptionRemoved"))
    )

    assert syncs.calls == [("mail", "lifecycle"), ("drive", "lifecycle")]
    assert outcome.sync is not None and list(outcome.resource_syncs) == [ResourceKind.DRIVE]
    assert outcome.published == 2


def test_a_current_drive_subscription_is_not_reissued_after_a_notification(
    services: Any, syncs: Syncs, account: Account
) -> None:
    _, drive = subscribe(services, account)  # no immutable ids: they are Outlook's

    outcome = process_trigger(services, lifecycle(account, changed=(drive,)))

    assert outcome.reissued == 0
    assert [s.subscription_id for s in subscriptions_of(services, account.account_id, DRIVE)] == [drive.subscription_id]


def test_a_drive_subscription_signed_without_a_nonce_is_reissued_for_the_drive_and_the_gap_synced(
    services: Any, syncs: Syncs, account: Account
) -> None:
    _, drive = subscribe(services, account)
    drive.client_state_nonce = None  # recorded before nonces were kept
    drive = services.subscriptions.save(drive)

    outcome = process_trigger(services, lifecycle(account, changed=(drive,)))

    assert outcome.reissued == 1
    [new] = subscriptions_of(services, account.account_id, DRIVE)
    assert new.subscription_id != drive.subscription_id and new.client_state_nonce is not None
    assert services.graph.subscriptions[new.subscription_id].resource == DRIVE_ROOT
    assert drive.subscription_id not in services.graph.subscriptions
    assert outcome.gap_sync is None and ResourceKind.DRIVE in outcome.resource_gap_syncs
    assert syncs.calls == [("drive", "notification"), ("drive", "lifecycle")]
