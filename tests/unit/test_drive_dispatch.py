"""A notification trigger syncs each resource whose subscription changed, and only those
(shared/notifications.py), each under its own sync key."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from shared import webhook
from shared.client_state import key_id
from shared.models import Subscription
from shared.notifications import process_trigger
from shared.resources import DRIVE, DRIVE_ROOT_RESOURCE, ResourceKind
from shared.sync import record_initial_delta
from shared.webhook import NotificationTrigger, SubscriptionChange
from tests.drive_delta_fakes import FakeDriveDelta
from tests.fakes import EPOCH, make_services
from tests.unit.pipeline_fakes import (
    SUB_1,
    DeltaGraphApi,
    connected_account,
    events_of,
    recorded_subscription,
)

DRIVE_SUB = "0b8c3c9e-4d55-4c1e-9f7e-3c2a9d1e6a11"
NONCE = "nonce-1"
AFTER = EPOCH + dt.timedelta(minutes=5)


@pytest.fixture
def services():
    services = make_services(real_tokens=False, graph=DeltaGraphApi(page_size=50))
    services.drive = FakeDriveDelta(services.clock, page_size=50)  # type: ignore[misc]
    return services


def _current(services, subscription: Subscription) -> Subscription:
    # Issued under the current key with a nonce: nothing to re-issue after the sync.
    subscription.immutable_ids = True
    subscription.client_state_nonce = NONCE
    subscription.client_state_key_id = key_id(services.settings.client_state_key)
    return services.subscriptions.save(subscription)


@pytest.fixture
def account(services):
    account = connected_account(services)
    _current(services, recorded_subscription(services, account))
    _current(services, Subscription(DRIVE_SUB, account.account_id, DRIVE_ROOT_RESOURCE, "updated",
                                    EPOCH + dt.timedelta(days=20)))
    auth = services.tokens.graph_auth(account)
    record_initial_delta(services, services.accounts.get(account.account_id), auth, emit_history=False)
    services.clock.advance(seconds=1)
    process_trigger(services, trigger(account, DRIVE_SUB, received=services.clock.now()))  # the drive first round
    return services.accounts.get(account.account_id)


def trigger(account, *subscription_ids: str, received: dt.datetime | None = None) -> NotificationTrigger:
    at = received or EPOCH
    return NotificationTrigger(
        account_id=account.account_id,
        subscription_ids=subscription_ids,
        changes=len(subscription_ids),
        lifecycle=(),
        received_at_ms=int(at.timestamp() * 1000),
        changed=tuple(SubscriptionChange(s, NONCE) for s in subscription_ids),
        origin=webhook.ORIGIN,
    )


def drive_events(services):
    return [json.loads(m) for m in services.queues.sent.get("drive-events", [])]


def delta_calls(services, account):
    mail = services.graph.calls.count(("delta_page", account.account_id))
    drive = services.drive.calls.count(("drive_delta_page", account.account_id))
    return mail, drive


def now(services):
    services.clock.advance(seconds=1)
    return services.clock.now()


def test_a_drive_notification_runs_the_drive_round_and_no_mail_round(services, account):
    item_id = services.drive.drive(account.account_id).put("report.docx", b"draft")
    mail, drive = delta_calls(services, account)
    outcome = process_trigger(services, trigger(account, DRIVE_SUB, received=now(services)))
    assert outcome.sync is None and outcome.resource_syncs[ResourceKind.DRIVE].created == 1
    assert outcome.published == 1
    assert delta_calls(services, account) == (mail, drive + 1)
    assert [e["subject"] for e in drive_events(services)] == [item_id]


def test_a_mail_notification_runs_the_mail_round_as_ever(services, account):
    message_id = services.graph.deliver(account.account_id, "hello", AFTER)
    mail, drive = delta_calls(services, account)
    outcome = process_trigger(services, trigger(account, SUB_1, received=now(services)))
    assert outcome.sync is not None and outcome.sync.created == 1 and outcome.resource_syncs == {}
    assert delta_calls(services, account) == (mail + 1, drive)
    assert [e["subject"] for e in events_of(services)] == [message_id]


def test_a_trigger_of_both_subscriptions_syncs_both(services, account):
    message_id = services.graph.deliver(account.account_id, "hello", AFTER)
    item_id = services.drive.drive(account.account_id).put("report.docx", b"draft")
    outcome = process_trigger(services, trigger(account, SUB_1, DRIVE_SUB, received=now(services)))
    assert outcome.published == 2
    assert [e["subject"] for e in events_of(services)] == [message_id]
    assert [e["subject"] for e in drive_events(services)] == [item_id]
    assert outcome.reissued == 0  # both subscriptions are what the connector makes today


def test_a_mail_round_that_served_its_triggers_does_not_serve_the_drives(services, account):
    process_trigger(services, trigger(account, SUB_1, received=now(services)))  # a mail round that began later
    received = services.clock.now() - dt.timedelta(milliseconds=500)
    item_id = services.drive.drive(account.account_id).put("report.docx", b"draft")
    now(services)
    outcome = process_trigger(services, trigger(account, DRIVE_SUB, received=received))
    assert not outcome.resource_syncs[ResourceKind.DRIVE].joined
    assert [e["subject"] for e in drive_events(services)] == [item_id]
    # And a drive trigger a finished drive round served costs nothing.
    calls = delta_calls(services, account)
    served = process_trigger(services, trigger(account, DRIVE_SUB, received=received))
    assert served.resource_syncs[ResourceKind.DRIVE].joined and delta_calls(services, account) == calls


def test_a_drive_trigger_of_an_unknown_account_is_dropped(services, account):
    other = connected_account(services, name="bob")
    services.accounts.items.pop(other.account_id)
    services.subscriptions.save(Subscription(DRIVE_SUB, other.account_id, DRIVE_ROOT_RESOURCE, "updated",
                                             EPOCH + dt.timedelta(days=20)))
    outcome = process_trigger(services, trigger(other, DRIVE_SUB, received=now(services)))
    assert outcome.dropped == "unknown_account"
    assert DRIVE.sync_key(other.account_id) == f"{other.account_id}|drive"
