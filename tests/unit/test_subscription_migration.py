"""Subscriptions created without immutable ids, or for other folders than MAIL_FOLDERS
now needs, are re-issued on their next notification, as a clientState key rotation is
(shared/notifications.py, shared/subscriptions.py)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from shared import bootstrap
from shared.subscriptions import ensure_mailbox_subscription
from shared.sync import record_initial_delta
from shared.webhook import read_notification_batch
from tests.fakes import EPOCH, make_services, make_settings
from tests.support.app import handler
from tests.unit.pipeline_fakes import (
    CLIENT_STATE_KEY,
    DeltaGraphApi,
    connected_account,
    events_of,
    notification,
)

AFTER = EPOCH + dt.timedelta(minutes=5)


def install(**env: str) -> Any:
    services = make_services(make_settings(**env), real_tokens=False, graph=DeltaGraphApi(page_size=2))
    bootstrap.use(services)
    return services


@pytest.fixture(autouse=True)
def _uninstall() -> Iterator[None]:
    yield
    bootstrap.use(None)


def run(*items: Any) -> None:
    batch = read_notification_batch(json.dumps({"value": list(items)}).encode(), CLIENT_STATE_KEY)
    for body in batch.messages:
        handler("process_graph_notifications")(message=QueueMessage(id="m-1", body=body.encode()))


def connected(services: Any) -> tuple[Any, Any]:
    account = connected_account(services)
    auth = services.tokens.graph_auth(account)
    subscription = ensure_mailbox_subscription(services, account, auth)
    record_initial_delta(services, account, auth, emit_history=False)
    return account, subscription


def client_state(services: Any, subscription: Any) -> str:
    return str(services.graph.subscriptions[subscription.subscription_id].client_state)


def test_new_subscriptions_are_recorded_with_immutable_ids() -> None:
    services = install()
    _, subscription = connected(services)
    assert services.subscriptions.get(subscription.account_id, subscription.subscription_id).immutable_ids


def test_a_subscription_created_without_immutable_ids_is_recreated_with_them() -> None:
    services = install()
    account, legacy = connected(services)
    legacy.immutable_ids = False  # as recorded before the connector asked for immutable ids
    services.subscriptions.save(legacy)
    sent = services.graph.deliver(account.account_id, "to a subscription with REST ids", AFTER)
    run(notification(account.account_id, legacy.subscription_id, clientState=client_state(services, legacy)))
    assert [e["subject"] for e in events_of(services)] == [sent]  # published once
    [current] = services.subscriptions.for_account(account.account_id)
    assert current.subscription_id != legacy.subscription_id and current.immutable_ids
    assert list(services.graph.subscriptions) == [current.subscription_id]  # the old one deleted in Graph
    # Migrated: its next notification re-issues nothing.
    services.graph.deliver(account.account_id, "later", AFTER + dt.timedelta(minutes=1))
    run(notification(account.account_id, current.subscription_id, clientState=client_state(services, current)))
    assert [s.subscription_id for s in services.subscriptions.for_account(account.account_id)] == [
        current.subscription_id
    ]


def restarted(services: Any, **env: str) -> Any:
    """The same stores and fakes under new settings, as after an app restart."""
    from shared.bootstrap import Services

    parts = ("clock", "accounts", "subscriptions", "checkpoints", "authflows", "connect_sessions",
             "account_owners", "purger", "secrets", "queues", "graph", "identity", "ledger",
             "folder_deltas", "tokens")
    again = Services(make_settings(**env), **{name: getattr(services, name) for name in parts})
    bootstrap.use(again)
    return again


def test_watching_more_folders_moves_the_mailbox_to_one_mailbox_wide_subscription() -> None:
    services = install()
    account, inbox_only = connected(services)
    assert inbox_only.resource == "/me/mailFolders('inbox')/messages"
    services = restarted(services, MAIL_FOLDERS="inbox,archive")
    filed = services.graph.folder(account.account_id, "archive").deliver("filed by a rule", AFTER)
    run(notification(account.account_id, inbox_only.subscription_id, clientState=client_state(services, inbox_only)))
    [current] = services.subscriptions.for_account(account.account_id)
    assert current.resource == "/me/messages"
    assert [s.resource for s in services.graph.subscriptions.values()] == ["/me/messages"]
    assert [(e["subject"], e["data"]["folder"]) for e in events_of(services)] == [(filed, "archive")]
