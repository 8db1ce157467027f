"""A burst of one mailbox's mail: triggers that a round served already, triggers that join a
running round, and the subscription record read once per burst (shared/sync.py,
shared/notifications.py)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from shared import webhook
from shared.client_state import issue_client_state, key_id
from shared.notifications import process_trigger
from shared.sync import OTHER_CLOCK_ALLOWANCE, record_initial_delta, sync_mailbox
from shared.webhook import NotificationTrigger, SubscriptionChange
from tests.fakes import EPOCH, make_services
from tests.unit.pipeline_fakes import (
    CLIENT_STATE_KEY,
    SUB_1,
    DeltaGraphApi,
    connected_account,
    events_of,
    recorded_subscription,
)

AFTER = EPOCH + dt.timedelta(minutes=5)


@pytest.fixture
def services():
    return make_services(real_tokens=False, graph=DeltaGraphApi(page_size=50))


NONCE = "nonce-1"


@pytest.fixture
def account(services):
    return ready_account(services)


def ready_account(services):
    account = connected_account(services)
    # Issued under the current key with a nonce, with immutable ids: nothing to re-issue
    # after a round.
    subscription = recorded_subscription(services, account)
    subscription.immutable_ids = True
    subscription.client_state_nonce = NONCE
    subscription.client_state_key_id = key_id(services.settings.client_state_key)
    services.subscriptions.save(subscription)
    auth = services.tokens.graph_auth(account)
    record_initial_delta(services, services.accounts.get(account.account_id), auth, emit_history=False)
    return account


def trigger(account, received: dt.datetime, *, origin: str | None = webhook.ORIGIN, lifecycle=()):
    return NotificationTrigger(
        account_id=account.account_id,
        subscription_ids=(SUB_1,),
        changes=1,
        lifecycle=tuple(lifecycle),
        received_at_ms=int(received.timestamp() * 1000),
        changed=(SubscriptionChange(SUB_1, NONCE),),
        origin=origin,
    )


def delta_calls(services, account):
    return services.graph.calls.count(("delta_page", account.account_id))


def created(services):
    return [e["subject"] for e in events_of(services) if e["type"].endswith(".created")]


def test_a_trigger_received_before_a_finished_round_began_runs_no_round(services, account):
    first = services.graph.deliver(account.account_id, "first", AFTER)
    services.clock.advance(seconds=10)
    round_began = services.clock.now()
    assert process_trigger(services, trigger(account, round_began - dt.timedelta(seconds=1))).published == 1
    calls = delta_calls(services, account)

    # Queued before that round began: its mail is out already; no round, no event.
    served = process_trigger(services, trigger(account, round_began - dt.timedelta(milliseconds=1)))
    assert served.sync is not None and served.sync.joined
    assert delta_calls(services, account) == calls
    assert created(services) == [first]

    # Received after the round began: it may speak of mail that round did not see.
    second = services.graph.deliver(account.account_id, "second", AFTER)
    services.clock.advance(seconds=1)
    late = process_trigger(services, trigger(account, round_began + dt.timedelta(milliseconds=1)))
    assert late.published == 1
    assert delta_calls(services, account) == calls + 1
    assert created(services) == [first, second]


def test_a_trigger_stamped_by_another_process_gets_an_allowance_for_its_clock(services, account):
    services.graph.deliver(account.account_id, "first", AFTER)
    round_began = services.clock.now()
    process_trigger(services, trigger(account, round_began))
    calls = delta_calls(services, account)

    near = round_began - OTHER_CLOCK_ALLOWANCE + dt.timedelta(milliseconds=100)
    process_trigger(services, trigger(account, near, origin="another-process"))
    assert delta_calls(services, account) == calls + 1  # its clock may be behind: a round ran

    services.clock.advance(seconds=1)
    calls = delta_calls(services, account)
    long_before = round_began - OTHER_CLOCK_ALLOWANCE - dt.timedelta(seconds=1)
    process_trigger(services, trigger(account, long_before, origin="another-process"))
    assert delta_calls(services, account) == calls


def test_a_round_that_failed_serves_no_later_trigger(services, account):
    services.graph.deliver(account.account_id, "first", AFTER)
    services.clock.advance(seconds=10)  # after the connect's round
    round_began = services.clock.now()
    services.graph.fail.setdefault("delta_page", []).append(RuntimeError("Graph is down"))
    with pytest.raises(RuntimeError):
        process_trigger(services, trigger(account, round_began - dt.timedelta(seconds=1)))
    # The queue delivers the trigger again: it runs a round, and the mail is published.
    assert process_trigger(services, trigger(account, round_began - dt.timedelta(seconds=1))).published == 1


def test_a_round_whose_link_was_dropped_for_a_reconnect_serves_no_earlier_trigger(services, account, monkeypatch):
    services.clock.advance(seconds=10)
    round_began = services.clock.now()
    real_delta = services.graph.delta_page

    def reconnected_meanwhile(*args, **kwargs):  # the user connects the mailbox anew during the round
        monkeypatch.setattr(services.graph, "delta_page", real_delta)
        current = services.accounts.get(account.account_id)
        current.connected_at = round_began
        services.accounts.save(current)
        return real_delta(*args, **kwargs)

    monkeypatch.setattr(services.graph, "delta_page", reconnected_meanwhile)
    sync_mailbox(services, account.account_id, reason="notification")
    calls = delta_calls(services, account)

    # The round's deltaLink belonged to the past connection and was dropped: a trigger
    # received before it began still runs a round for the new one.
    services.clock.advance(seconds=1)
    process_trigger(services, trigger(account, round_began - dt.timedelta(milliseconds=1)))
    assert delta_calls(services, account) == calls + 1


def test_lifecycle_events_are_never_skipped_and_read_the_subscription(services, account, monkeypatch):
    services.graph.deliver(account.account_id, "first", AFTER)
    round_began = services.clock.now()
    process_trigger(services, trigger(account, round_began))
    reads = []
    real_get = services.subscriptions.get
    monkeypatch.setattr(services.subscriptions, "get", lambda *a: reads.append(a) or real_get(*a))

    from shared.webhook import LifecycleSignal

    missed = trigger(account, round_began - dt.timedelta(seconds=5), lifecycle=[LifecycleSignal(SUB_1, "missed", NONCE)])
    outcome = process_trigger(services, missed)
    assert outcome.lifecycle_handled == ["missed"]
    # Received before the last round began, but a lifecycle event is acted on: it read the
    # record (the change notification beside it took it from the cache).
    assert reads == [(account.account_id, SUB_1)]


def test_change_notifications_of_a_burst_read_the_subscription_once(services, account, monkeypatch):
    reads = []
    real_get = services.subscriptions.get
    monkeypatch.setattr(services.subscriptions, "get", lambda *a: reads.append(a) or real_get(*a))
    for n in range(3):
        services.graph.deliver(account.account_id, f"mail {n}", AFTER)
        services.clock.advance(seconds=1)
        process_trigger(services, trigger(account, services.clock.now()))
    assert len(reads) == 1
    assert len(created(services)) == 3
    services.clock.advance(minutes=1)  # the record is read again once it is older than the cache's time
    services.graph.deliver(account.account_id, "later", AFTER)
    process_trigger(services, trigger(account, services.clock.now()))
    assert len(reads) == 2


def test_records_cached_through_one_services_object_are_not_seen_by_another():
    # Tests and tools build several services in one process, each over its own stores: the
    # cache is kept with the services (an earlier cache keyed by id() answered for a new
    # object given a freed one's address).
    first = make_services(real_tokens=False, graph=DeltaGraphApi(page_size=50))
    account = connected_account(first)
    first.subscriptions.save(recorded_subscription(first, account))
    assert process_trigger(first, trigger(account, first.clock.now())).unknown_subscriptions == 0
    second = make_services(real_tokens=False, graph=DeltaGraphApi(page_size=50))
    connected_account(second)  # the same account, with no subscription record
    outcome = process_trigger(second, trigger(account, second.clock.now()))
    assert outcome.unknown_subscriptions == 1
    assert events_of(second) == []


def test_a_round_run_through_one_services_object_serves_no_trigger_of_another(services, account):
    services.graph.deliver(account.account_id, "first", AFTER)
    services.clock.advance(seconds=10)
    process_trigger(services, trigger(account, services.clock.now()))
    other = make_services(real_tokens=False, graph=DeltaGraphApi(page_size=50))
    ready_account(other)
    mail = other.graph.deliver(account.account_id, "elsewhere", AFTER)
    outcome = process_trigger(other, trigger(account, EPOCH))
    assert outcome.sync is not None and not outcome.sync.joined
    assert created(other) == [mail]


def test_a_deleted_subscription_is_not_served_from_the_cache_for_lifecycle_events(services, account):
    # A lifecycle event always reads: a removed record makes it "unknown".
    from shared.webhook import LifecycleSignal

    services.graph.deliver(account.account_id, "first", AFTER)
    process_trigger(services, trigger(account, services.clock.now()))
    services.subscriptions.delete(account.account_id, SUB_1)
    services.clock.advance(seconds=1)
    outcome = process_trigger(
        services, trigger(account, services.clock.now(), lifecycle=[LifecycleSignal(SUB_1, "missed", NONCE)])
    )
    assert outcome.unknown_subscriptions >= 1
    assert outcome.lifecycle_handled == []


def test_triggers_that_arrive_during_a_round_join_it_instead_of_running_one_each(account):
    services = make_services(real_tokens=False, graph=DeltaGraphApi(page_size=50, latency=0.3))
    # The fixture's services are another process's: this one has a slow Graph.
    connected = connected_account(services)
    auth = services.tokens.graph_auth(connected)
    record_initial_delta(services, services.accounts.get(connected.account_id), auth, emit_history=False)
    services.graph.deliver(connected.account_id, "first", AFTER)
    results = []

    def notified() -> None:
        results.append(sync_mailbox(services, connected.account_id, reason="notification", join=True))

    leader = threading.Thread(target=notified)
    leader.start()
    time.sleep(0.1)  # the leader's delta call is under way
    mails = [services.graph.deliver(connected.account_id, f"during {n}", AFTER) for n in range(3)]
    followers = [threading.Thread(target=notified) for _ in range(3)]
    for thread in followers:
        thread.start()
    for thread in [leader, *followers]:
        thread.join(timeout=10)

    assert sum(1 for r in results if r.joined) == 3
    # One round for the leader, one more for all three that came during it.
    assert services.graph.calls.count(("delta_page", connected.account_id)) == 1 + 2
    published = created(services)
    assert sorted(published) == sorted([*mails, published[0]])
    assert len(published) == len(set(published)) == 4


def test_a_further_round_of_one_hold_reads_neither_the_account_nor_a_kept_place(account):
    services = make_services(real_tokens=False, graph=DeltaGraphApi(page_size=50, latency=0.3))
    connected = connected_account(services)
    auth = services.tokens.graph_auth(connected)
    record_initial_delta(services, services.accounts.get(connected.account_id), auth, emit_history=False)
    reads = {"account": 0, "progress": 0}
    account_get, progress = services.accounts.get, services.ledger.progress

    def counted(name, read):
        def call(*args, **kwargs):
            reads[name] += 1
            return read(*args, **kwargs)
        return call

    services.accounts.get = counted("account", account_get)
    services.ledger.progress = counted("progress", progress)
    first = services.graph.deliver(connected.account_id, "first", AFTER)
    leader = threading.Thread(
        target=lambda: sync_mailbox(services, connected.account_id, reason="notification", join=True)
    )
    leader.start()
    time.sleep(0.1)  # the leader's delta call is under way
    second = services.graph.deliver(connected.account_id, "second", AFTER)
    follower = threading.Thread(
        target=lambda: sync_mailbox(services, connected.account_id, reason="notification", join=True)
    )
    follower.start()
    for thread in (leader, follower):
        thread.join(timeout=10)

    # Two rounds under one hold (the follower joined), each mail published once; the second
    # round started from what the first saved.
    assert services.graph.calls.count(("delta_page", connected.account_id)) == 1 + 2
    assert sorted(created(services)) == sorted([first, second])
    assert reads == {"account": 1, "progress": 1}


def test_a_joined_trigger_gets_the_error_of_the_round_it_waited_for(account):
    services = make_services(real_tokens=False, graph=DeltaGraphApi(page_size=50, latency=0.3))
    connected = connected_account(services)
    auth = services.tokens.graph_auth(connected)
    record_initial_delta(services, services.accounts.get(connected.account_id), auth, emit_history=False)
    outcomes: list[object] = []

    def notified() -> None:
        try:
            outcomes.append(sync_mailbox(services, connected.account_id, reason="notification", join=True))
        except RuntimeError as error:
            outcomes.append(error)

    leader = threading.Thread(target=notified)
    leader.start()
    time.sleep(0.1)
    services.graph.fail.setdefault("delta_page", []).append(RuntimeError("Graph is down"))  # the joined round's call
    follower = threading.Thread(target=notified)
    follower.start()
    for thread in (leader, follower):
        thread.join(timeout=10)
    # The follower's queue message goes back to the queue: nothing it stood for is dropped.
    assert any(isinstance(o, RuntimeError) for o in outcomes)


def test_the_trigger_format_carries_its_origin():
    key = CLIENT_STATE_KEY
    item = {
        "subscriptionId": SUB_1,
        "changeType": "created",
        "clientState": issue_client_state(key, "adele-oid.tenant-1"),
        "resource": "Users/adele-oid/Messages/AAMkAGI2",
    }
    import json

    batch = webhook.read_notification_batch(json.dumps({"value": [item]}).encode(), key, received_at_ms=1)
    [parsed] = webhook.parse_triggers(batch.messages[0]).triggers
    assert parsed.origin == webhook.ORIGIN
    assert webhook.parse_trigger(json.dumps({"v": 2, "accountId": "a", "changed": []})).origin is None
