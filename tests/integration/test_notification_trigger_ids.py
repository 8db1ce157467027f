"""A trigger that names a subscription id Table Storage refuses as a key loses none of its valid
work: real tables on Azurite behind the queue function, fakes for Graph and tokens."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from shared import bootstrap
from shared.adapters.tables import TableAccountStore, TableSubscriptionStore
from shared.errors import InvalidInputError
from shared.notifications import process_trigger
from shared.sync import record_initial_delta
from shared.webhook import LifecycleSignal, NotificationTrigger
from tests.fakes import EPOCH, make_services
from tests.support.app import handler
from tests.unit.pipeline_fakes import DeltaGraphApi, connected_account, events_of, recorded_subscription

BAD_IDS = ["a/b", "x#y", "q?r", "bell\x07", "back\\slash"]


@pytest.fixture
def services(azurite) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    installed = make_services(
        real_tokens=False,
        graph=DeltaGraphApi(page_size=5),
        accounts=TableAccountStore(azurite.connection_string),
        subscriptions=TableSubscriptionStore(azurite.connection_string),
    )
    bootstrap.use(installed)
    yield installed
    bootstrap.use(None)


@pytest.fixture
def account(services: Any) -> Any:
    account = connected_account(services, name=f"u{uuid.uuid4().hex[:8]}")
    record_initial_delta(services, account, services.tokens.graph_auth(account), emit_history=False)
    return services.accounts.get(account.account_id)


def test_the_table_store_refuses_these_ids(services: Any, account: Any) -> None:
    for bad in BAD_IDS:
        with pytest.raises(InvalidInputError):
            services.subscriptions.get(account.account_id, bad)


def test_a_queued_trigger_with_impossible_ids_still_publishes_the_mail_of_its_valid_subscription(
    services: Any, account: Any
) -> None:
    good = recorded_subscription(services, account, str(uuid.uuid4())).subscription_id
    sent = services.graph.deliver(account.account_id, "announced next to poison", EPOCH + dt.timedelta(minutes=5))
    # As a webhook before subscription ids were checked queued it.
    body = json.dumps({"v": 1, "accountId": account.account_id, "subscriptionIds": [*BAD_IDS, good], "changes": 6,
                       "lifecycle": [{"subscriptionId": "a/b", "event": "subscriptionRemoved"}]})
    handler("process_graph_notifications")(message=QueueMessage(id="m-1", body=body.encode()))
    assert [e["subject"] for e in events_of(services)] == [sent]
    assert "graph-notifications-poison" not in services.queues.sent


def test_processing_counts_an_impossible_id_it_is_handed_and_goes_on(services: Any, account: Any) -> None:
    good = recorded_subscription(services, account, str(uuid.uuid4())).subscription_id
    sent = services.graph.deliver(account.account_id, "still published", EPOCH + dt.timedelta(minutes=5))
    trigger = NotificationTrigger(account.account_id, ("a/b", good), 2, (LifecycleSignal("x#y", "missed"),), None)
    outcome = process_trigger(services, trigger)
    assert outcome.rejected == 2
    assert [e["subject"] for e in events_of(services)] == [sent]
