"""The queue trigger on graph-notifications: trigger -> checks -> lifecycle -> delta sync -> events."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from shared import bootstrap
from shared.errors import ThrottledError
from shared.models import AccountStatus, SubscriptionStatus
from shared.sync import record_initial_delta
from shared.webhook import read_notification_batch
from tests.fakes import EPOCH, make_services
from tests.support.app import handler
from tests.unit.pipeline_fakes import (
    CLIENT_STATE_KEY,
    SUB_1,
    DeltaGraphApi,
    connected_account,
    events_of,
    lifecycle,
    notification,
    recorded_subscription,
)

AFTER = EPOCH + dt.timedelta(minutes=5)
SUB_2 = "0b6c1f4e-9d0a-4c2b-8e3f-5a6b7c8d9e0f"


@pytest.fixture
def services() -> Iterator[Any]:
    installed = make_services(real_tokens=False, graph=DeltaGraphApi(page_size=2))
    bootstrap.use(installed)
    yield installed
    bootstrap.use(None)


@pytest.fixture
def account(services: Any) -> Any:
    account = connected_account(services)
    recorded_subscription(services, account, SUB_1)
    record_initial_delta(services, account, services.tokens.graph_auth(account), emit_history=False)
    return services.accounts.get(account.account_id)


def deliver(services: Any, account: Any, subject: str) -> str:
    return services.graph.inbox(account.account_id).deliver(subject, AFTER)


def run(*items: Any, dequeue_count: int = 1) -> None:
    """What the webhook would queue for these items, handed to the queue trigger."""
    batch = read_notification_batch(json.dumps({"value": list(items)}).encode(), CLIENT_STATE_KEY)
    for body in batch.messages:
        handler("process_graph_notifications")(
            message=QueueMessage(id="m-1", body=body.encode(), dequeue_count=dequeue_count)
        )


def test_a_notification_publishes_one_created_event_per_new_mail(services: Any, account: Any) -> None:
    first = deliver(services, account, "one")
    second = deliver(services, account, "two")
    run(notification(account.account_id))
    assert [(e["type"], e["subject"]) for e in events_of(services)] == [
        ("com.microsoft.graph.message.created", first),
        ("com.microsoft.graph.message.created", second),
    ]
    saved = services.accounts.get(account.account_id)
    assert saved.last_notification_at is not None and saved.last_sync_at is not None


def test_duplicated_and_replayed_notifications_publish_nothing_twice(services: Any, account: Any) -> None:
    deliver(services, account, "once")
    item = notification(account.account_id)
    run(item, item, notification(account.account_id, change_type="updated"))
    run(item)
    assert len(events_of(services)) == 1


def test_a_notification_for_an_unknown_subscription_publishes_nothing(services: Any, account: Any) -> None:
    deliver(services, account, "not via this subscription")
    calls = len(services.graph.calls)
    run(notification(account.account_id, "0d1e7e7e-0000-4000-8000-00000000dead"))
    assert events_of(services) == []
    assert services.graph.calls[calls:] == []  # not even a delta query


def test_a_notification_for_an_unknown_account_publishes_nothing(services: Any, account: Any) -> None:
    run(notification("stranger-oid.tenant-9"))
    assert events_of(services) == []


def test_a_disconnected_account_is_not_synced(services: Any, account: Any) -> None:
    account.status = AccountStatus.DISCONNECTED
    services.accounts.save(account)
    deliver(services, account, "after disconnect")
    run(notification(account.account_id))
    assert events_of(services) == []


def test_missed_resyncs(services: Any, account: Any) -> None:
    deliver(services, account, "its notification was lost")
    run(lifecycle(account.account_id, "missed"))
    assert len(events_of(services)) == 1


def test_subscription_removed_recreates_the_subscription_and_resyncs(services: Any, account: Any) -> None:
    deliver(services, account, "arrived while removed")
    run(lifecycle(account.account_id, "subscriptionRemoved"))
    [current] = services.subscriptions.for_account(account.account_id)
    assert current.subscription_id != SUB_1
    assert current.status is SubscriptionStatus.ACTIVE
    assert len(services.graph.for_account(account.account_id)) == 1
    assert len(events_of(services)) == 1


def test_reauthorization_required_reauthorizes_the_subscription(services: Any, account: Any) -> None:
    services.graph.subscriptions.clear()
    graph_sub = services.graph.create_subscription(
        services.tokens.graph_auth(account),
        resource="/me/mailFolders('inbox')/messages",
        change_type="created,updated,deleted",
        notification_url="https://x/api/notifications",
        lifecycle_notification_url="https://x/api/lifecycle",
        expires_at=EPOCH + dt.timedelta(days=2),
        client_state="cs",
    )
    services.subscriptions.delete(account.account_id, SUB_1)
    recorded_subscription(services, account, graph_sub["id"])
    run(lifecycle(account.account_id, "reauthorizationRequired", graph_sub["id"]))
    assert ("reauthorize_subscription", account.account_id) in services.graph.calls
    stored = services.subscriptions.get(account.account_id, graph_sub["id"])
    assert stored.last_reauthorized_at == services.clock.now()


def test_reauthorization_of_a_subscription_graph_lost_recreates_it(services: Any, account: Any) -> None:
    run(lifecycle(account.account_id, "reauthorizationRequired"))  # SUB_1 is unknown to the Graph fake
    [current] = services.subscriptions.for_account(account.account_id)
    assert current.subscription_id != SUB_1


def test_throttling_waits_for_retry_after_then_is_raised_so_that_the_queue_retries(
    services: Any, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions import processing

    waited: list[float] = []
    monkeypatch.setattr(processing, "sleep", waited.append)
    services.graph.fail["delta_page"] = [ThrottledError("429", retry_after=2)]
    deliver(services, account, "later")
    with pytest.raises(ThrottledError):
        run(notification(account.account_id))
    assert waited == [2]
    run(notification(account.account_id), dequeue_count=2)
    assert len(events_of(services)) == 1


def test_a_dead_token_marks_nothing_as_failed_and_does_not_retry(services: Any, account: Any) -> None:
    services.tokens.dead.add(account.account_id)
    run(notification(account.account_id))  # no exception: no retry
    assert events_of(services) == []


def test_a_message_that_is_not_a_trigger_goes_to_the_poison_queue_at_once(services: Any) -> None:
    handler("process_graph_notifications")(message=QueueMessage(id="m-2", body=b"<not json>"))
    assert services.queues.sent["graph-notifications-poison"] == ["<not json>"]


# -- queue mail-sync: rounds the app asked for itself ------------------------------------


def test_a_queued_round_runs_and_a_round_too_long_hands_its_rest_to_the_same_queue(
    services: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes import make_settings

    services.settings = make_settings(SYNC_TIME_BUDGET_SECONDS="1")
    fresh = connected_account(services, name="queued")
    box = services.graph.inbox(fresh.account_id)
    for n in range(6):
        box.deliver(f"old {n}", EPOCH - dt.timedelta(days=1))
    new = box.deliver("new", AFTER)
    clock = iter(range(0, 1000, 2))  # every read of the monotonic clock: two seconds later
    monkeypatch.setattr("shared.sync_runner._monotonic", lambda: float(next(clock)))
    body = json.dumps({"v": 1, "accountId": fresh.account_id, "reason": "connect"}).encode()
    handler("run_mail_sync")(message=QueueMessage(id="s-1", body=body))
    assert services.queues.sent.get("mail-sync"), "the rest of the round was not queued"
    for turn in range(10):
        queued = services.queues.sent["mail-sync"]
        if not queued:
            break
        message = queued.pop(0).encode()
        handler("run_mail_sync")(message=QueueMessage(id=f"s-{turn + 2}", body=message))
    assert services.accounts.get(fresh.account_id).delta_link is not None
    assert [e["subject"] for e in events_of(services)] == [new]


def test_a_message_that_is_not_a_sync_job_goes_to_the_poison_queue(services: Any) -> None:
    handler("run_mail_sync")(message=QueueMessage(id="s-1", body=b'{"v": 1}'))
    assert services.queues.sent["mail-sync-poison"] == ['{"v": 1}']


# -- the drive ---------------------------------------------------------------------------


def test_a_queued_drive_job_runs_the_drive_round_and_a_drive_notification_its_next(services: Any) -> None:
    from shared.models import Subscription
    from shared.resources import DRIVE_ROOT_RESOURCE
    from tests.drive_delta_fakes import FakeDriveDelta

    services.drive = FakeDriveDelta(services.clock)
    writer = connected_account(services, name="writer")
    drive = services.drive.drive(writer.account_id)
    drive.put("old.docx", b"history", created=EPOCH - dt.timedelta(days=1))
    drive_sub = "5a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
    services.subscriptions.save(
        Subscription(drive_sub, writer.account_id, DRIVE_ROOT_RESOURCE, "updated", EPOCH + dt.timedelta(days=20))
    )
    job = json.dumps({"v": 1, "accountId": writer.account_id, "reason": "connect", "resource": "drive"}).encode()
    handler("run_mail_sync")(message=QueueMessage(id="s-1", body=job))  # the connect's first drive round
    assert services.queues.sent.get("drive-events", []) == []  # history
    assert services.graph.calls.count(("delta_page", writer.account_id)) == 0  # no mail round

    item_id = drive.put("new.docx", b"written after the connect")
    run(notification(writer.account_id, drive_sub, change_type="updated", resource=DRIVE_ROOT_RESOURCE))
    [event] = [json.loads(m) for m in services.queues.sent["drive-events"]]
    assert event["type"] == "com.microsoft.graph.driveItem.created" and event["subject"] == item_id
    assert events_of(services) == []


# -- one message, the triggers of several accounts ----------------------------------------


@pytest.fixture
def second(services: Any) -> Any:
    other = connected_account(services, name="bruno")
    recorded_subscription(services, other, SUB_2)
    record_initial_delta(services, other, services.tokens.graph_auth(other), emit_history=False)
    return services.accounts.get(other.account_id)


def test_one_post_of_two_mailboxes_is_one_message_and_publishes_both(
    services: Any, account: Any, second: Any
) -> None:
    mine = deliver(services, account, "for adele")
    theirs = deliver(services, second, "for bruno")
    batch = read_notification_batch(
        json.dumps({"value": [notification(account.account_id), notification(second.account_id, SUB_2)]}).encode(),
        CLIENT_STATE_KEY,
    )
    assert len(batch.messages) == 1
    handler("process_graph_notifications")(message=QueueMessage(id="m-1", body=batch.messages[0].encode()))
    assert sorted(e["subject"] for e in events_of(services)) == sorted([mine, theirs])


def resent(services: Any) -> list[Any]:
    """The trigger messages the queue function itself put back on graph-notifications."""
    return [json.loads(m) for m in services.queues.sent.get("graph-notifications", [])]


def test_a_failing_mailbox_alone_is_queued_again_and_its_retry_publishes_nothing_twice(
    services: Any, account: Any, second: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions import processing

    waited: list[float] = []
    monkeypatch.setattr(processing, "sleep", waited.append)
    services.graph.fail["delta_page"] = [ThrottledError("429", retry_after=3)]  # whichever mailbox asks first
    mine = deliver(services, account, "for adele")
    theirs = deliver(services, second, "for bruno")
    run(notification(account.account_id), notification(second.account_id, SUB_2))  # done: no exception

    [published] = events_of(services)  # the other mailbox's round ran and published
    [again] = resent(services)
    [failed] = again["triggers"]
    assert failed["accountId"] != (account.account_id if published["subject"] == mine else second.account_id)
    assert again["attempts"] == 1 and services.queues.delays["graph-notifications"] == [5]
    assert waited == []  # the retry waits on the queue, not in the function
    calls = len(services.graph.calls)

    handler("process_graph_notifications")(message=QueueMessage(id="m-2", body=json.dumps(again).encode()))
    assert sorted(e["subject"] for e in events_of(services)) == sorted([mine, theirs])
    # Only the failed mailbox ran a round again.
    assert {c[1] for c in services.graph.calls[calls:] if c[0] == "delta_page"} == {failed["accountId"]}


def test_a_retry_after_longer_than_the_queue_delay_is_waited_out_on_the_queue(
    services: Any, account: Any, second: Any
) -> None:
    services.graph.fail["delta_page"] = [ThrottledError("429", retry_after=41.5)]
    deliver(services, account, "for adele")
    deliver(services, second, "for bruno")
    run(notification(account.account_id), notification(second.account_id, SUB_2))
    assert len(resent(services)) == 1 and services.queues.delays["graph-notifications"] == [42]


def test_a_trigger_that_keeps_failing_goes_to_the_poison_queue_alone_after_five_attempts(
    services: Any, account: Any, second: Any
) -> None:
    from shared.webhook import parse_trigger

    services.graph.fail["delta_page"] = [RuntimeError("mailbox broken")]
    deliver(services, account, "for adele")
    deliver(services, second, "for bruno")
    run(notification(account.account_id), notification(second.account_id, SUB_2))
    [message] = resent(services)
    failing = message["triggers"][0]["accountId"]
    for attempt in range(2, 6):  # the queue hands the re-sent message out; it fails again
        services.graph.fail["delta_page"] = [RuntimeError("mailbox broken")]
        body = json.dumps(message).encode()
        if attempt < 5:
            handler("process_graph_notifications")(message=QueueMessage(id=f"m-{attempt}", body=body))
            message = resent(services)[-1]
            assert message["attempts"] == attempt
        else:
            handler("process_graph_notifications")(message=QueueMessage(id="m-5", body=body))
    assert len(resent(services)) == 4  # tried 5 times in all: the first message and 4 sent again
    [poisoned] = services.queues.sent["graph-notifications-poison"]
    assert parse_trigger(poisoned).account_id == failing
    assert len(events_of(services)) == 1  # the other mailbox's mail, once


def test_a_message_whose_every_trigger_fails_goes_back_to_the_queue_as_it_is(
    services: Any, account: Any, second: Any
) -> None:
    services.graph.fail["delta_page"] = [RuntimeError("down"), RuntimeError("down")]
    with pytest.raises(RuntimeError):
        run(notification(account.account_id), notification(second.account_id, SUB_2))
    assert resent(services) == [] and "graph-notifications-poison" not in services.queues.sent


def test_a_malformed_trigger_of_a_message_goes_to_the_poison_queue_and_the_others_run(
    services: Any, account: Any
) -> None:
    mine = deliver(services, account, "for adele")
    [message] = read_notification_batch(
        json.dumps({"value": [notification(account.account_id)]}).encode(), CLIENT_STATE_KEY
    ).messages
    document = json.loads(message)
    document["triggers"].append({"accountId": "x", "changed": "not a list"})
    handler("process_graph_notifications")(message=QueueMessage(id="m-1", body=json.dumps(document).encode()))
    assert [e["subject"] for e in events_of(services)] == [mine]
    [poisoned] = services.queues.sent["graph-notifications-poison"]
    assert json.loads(poisoned)["accountId"] == "x"
