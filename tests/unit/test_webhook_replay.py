"""A clientState is worth only as long as its subscription: nonces, replays, one bad item.

From Graph's POST to the queue trigger, with the fakes: the webhook reads the batch with
the settings' keys, the trigger it queues is handed to the registered queue function.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from shared import bootstrap
from shared.client_state import issue_client_state
from shared.errors import GraphError
from shared.subscriptions import ensure_mailbox_subscription
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


@pytest.fixture
def services() -> Iterator[Any]:
    installed = make_services(real_tokens=False, graph=DeltaGraphApi(page_size=2))
    bootstrap.use(installed)
    yield installed
    bootstrap.use(None)


@pytest.fixture
def live(services: Any) -> tuple[Any, Any]:
    """A connected account with a subscription created as connect creates it, and its clientState."""
    account = connected_account(services)
    auth = services.tokens.graph_auth(account)
    subscription = ensure_mailbox_subscription(services, account, auth)
    record_initial_delta(services, account, auth, emit_history=False)
    return services.accounts.get(account.account_id), subscription


def graph_client_state(services: Any, subscription: Any) -> str:
    return str(services.graph.subscriptions[subscription.subscription_id].client_state)


def run(*items: Any) -> None:
    batch = read_notification_batch(json.dumps({"value": list(items)}).encode(), CLIENT_STATE_KEY)
    for body in batch.messages:
        handler("process_graph_notifications")(message=QueueMessage(id="m-1", body=body.encode()))


def test_the_subscription_record_keeps_the_nonce_graph_echoes(services: Any, live: Any) -> None:
    _, subscription = live
    stored = services.subscriptions.get(subscription.account_id, subscription.subscription_id)
    assert stored.client_state_nonce
    assert f".{stored.client_state_nonce}." in graph_client_state(services, subscription)


def test_a_notification_with_the_subscriptions_clientstate_publishes(services: Any, live: Any) -> None:
    account, subscription = live
    sent = services.graph.deliver(account.account_id, "genuine", AFTER)
    run(notification(account.account_id, subscription.subscription_id,
                     clientState=graph_client_state(services, subscription)))
    assert [e["subject"] for e in events_of(services)] == [sent]


def test_a_leaked_clientstate_of_an_earlier_subscription_is_worth_nothing(services: Any, live: Any) -> None:
    account, subscription = live
    leaked = issue_client_state(CLIENT_STATE_KEY, account.account_id)  # same account, another nonce
    services.graph.deliver(account.account_id, "announced only by the forger", AFTER)
    calls = len(services.graph.calls)
    run(notification(account.account_id, subscription.subscription_id, clientState=leaked))
    assert events_of(services) == []
    assert services.graph.calls[calls:] == []  # not even a delta query


def test_a_replayed_subscription_removed_with_an_old_clientstate_leaves_the_live_subscription(
    services: Any, live: Any
) -> None:
    account, subscription = live
    leaked = issue_client_state(CLIENT_STATE_KEY, account.account_id)
    item = lifecycle(account.account_id, "subscriptionRemoved", subscription.subscription_id)
    run({**item, "clientState": leaked})
    assert [s.subscription_id for s in services.subscriptions.for_account(account.account_id)] == [
        subscription.subscription_id
    ]
    assert list(services.graph.subscriptions) == [subscription.subscription_id]
    assert not any(name == "delete_subscription" for name, _ in services.graph.calls)


def test_subscription_removed_for_a_subscription_graph_still_has_renews_instead_of_recreating(
    services: Any, live: Any
) -> None:
    account, subscription = live
    item = lifecycle(account.account_id, "subscriptionRemoved", subscription.subscription_id)
    run({**item, "clientState": graph_client_state(services, subscription)})
    [current] = services.subscriptions.for_account(account.account_id)
    assert current.subscription_id == subscription.subscription_id
    assert list(services.graph.subscriptions) == [subscription.subscription_id]


def test_a_subscription_recorded_before_nonces_were_kept_still_gets_its_notifications(services: Any) -> None:
    account = connected_account(services)
    record_initial_delta(services, account, services.tokens.graph_auth(account), emit_history=False)
    legacy = recorded_subscription(services, account, SUB_1)
    assert legacy.client_state_nonce is None
    services.graph.deliver(account.account_id, "to a legacy subscription", AFTER)
    run(notification(account.account_id, SUB_1))
    assert len(events_of(services)) == 1


def test_a_lifecycle_event_graph_refuses_for_good_does_not_take_the_changes_of_its_trigger(
    services: Any, live: Any
) -> None:
    account, subscription = live
    services.graph.subscriptions.clear()  # Graph removed it: renewal 404, then creation...
    services.graph.fail["create_subscription"] = [GraphError(403, "Forbidden", "not allowed")]
    sent = services.graph.deliver(account.account_id, "must still be published", AFTER)
    state = graph_client_state_of_record(services, subscription)
    run(
        {**lifecycle(account.account_id, "subscriptionRemoved", subscription.subscription_id), "clientState": state},
        notification(account.account_id, subscription.subscription_id, clientState=state),
    )
    assert [e["subject"] for e in events_of(services)] == [sent]


def graph_client_state_of_record(services: Any, subscription: Any) -> str:
    stored = services.subscriptions.get(subscription.account_id, subscription.subscription_id)
    return issue_client_state(CLIENT_STATE_KEY, subscription.account_id, stored.client_state_nonce)


# --- rotation and the move to nonces: outdated subscriptions are re-issued -----------------------

NEW_KEY = b"the-key-after-the-rotation-9876543210ab"
PARTS = ("clock", "accounts", "subscriptions", "checkpoints", "authflows", "secrets", "queues", "graph",
         "identity", "ledger", "tokens")


def rotated(services: Any, **env: str) -> Any:
    """The same stores and fakes under new settings, as after an app restart with new keys."""
    from shared.bootstrap import Services
    from tests.fakes import make_settings

    again = Services(make_settings(**env), **{name: getattr(services, name) for name in PARTS})
    bootstrap.use(again)
    return again


def deliver_through_webhook(services: Any, *items: Any) -> None:
    batch = read_notification_batch(json.dumps({"value": list(items)}).encode(), services.settings.client_state_keys)
    assert batch.dropped == 0
    for body in batch.messages:
        handler("process_graph_notifications")(message=QueueMessage(id="m-1", body=body.encode()))


def test_during_a_rotation_a_notification_signed_with_the_previous_key_is_published_and_its_subscription_reissued(
    services: Any, live: Any
) -> None:
    account, old = live
    old_state = graph_client_state(services, old)
    services = rotated(services, CLIENT_STATE_KEY=NEW_KEY.decode(), CLIENT_STATE_KEY_PREVIOUS=CLIENT_STATE_KEY.decode())
    sent = services.graph.deliver(account.account_id, "during the rotation", AFTER)
    deliver_through_webhook(services, notification(account.account_id, old.subscription_id, clientState=old_state))
    assert [e["subject"] for e in events_of(services)] == [sent]
    [current] = services.subscriptions.for_account(account.account_id)
    assert current.subscription_id != old.subscription_id
    assert list(services.graph.subscriptions) == [current.subscription_id]  # the old one deleted in Graph
    # The rotation is done for this mailbox: without the previous key its notifications still verify.
    services = rotated(services, CLIENT_STATE_KEY=NEW_KEY.decode())
    later = services.graph.deliver(account.account_id, "after the rotation", AFTER + dt.timedelta(minutes=1))
    deliver_through_webhook(
        services, notification(account.account_id, current.subscription_id,
                               clientState=graph_client_state(services, current))
    )
    assert [e["subject"] for e in events_of(services)] == [sent, later]


def test_a_subscription_recorded_without_a_nonce_gets_one_on_its_next_notification(services: Any) -> None:
    account = connected_account(services)
    auth = services.tokens.graph_auth(account)
    record_initial_delta(services, account, auth, emit_history=False)
    legacy = ensure_mailbox_subscription(services, account, auth)
    legacy.client_state_nonce = legacy.client_state_key_id = None  # as recorded before nonces were kept
    services.subscriptions.save(legacy)
    sent = services.graph.deliver(account.account_id, "to a legacy subscription", AFTER)
    run(notification(account.account_id, legacy.subscription_id))
    [current] = services.subscriptions.for_account(account.account_id)
    assert current.subscription_id != legacy.subscription_id and current.client_state_nonce
    assert [e["subject"] for e in events_of(services)] == [sent]  # published once


def test_a_reissue_that_fails_loses_no_mail_of_its_trigger(services: Any) -> None:
    account = connected_account(services)
    record_initial_delta(services, account, services.tokens.graph_auth(account), emit_history=False)
    recorded_subscription(services, account, SUB_1)  # no nonce: outdated
    services.graph.fail["create_subscription"] = [GraphError(403, "Forbidden", "no")] * 3
    sent = services.graph.deliver(account.account_id, "published although the re-issue fails", AFTER)
    run(notification(account.account_id, SUB_1))  # no exception: the queue does not retry
    assert [e["subject"] for e in events_of(services)] == [sent]
