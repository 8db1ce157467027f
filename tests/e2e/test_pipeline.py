"""Mail to events through the whole local stack: simulator -> webhook -> queue -> delta -> mail-events.

Every test connects its own simulator user through the real flow, then acts as Graph's
users do (send, read, delete mail) and reads the CloudEvents a consumer would read.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from shared.client_state import issue_client_state
from tests.support.stack import (
    connect_user,
    function_key_headers,
    new_user,
    read_queue,
    send_mail,
    wait_for,
)

pytestmark = pytest.mark.e2e

QUIET = 2.0  # seconds to wait for events that must NOT come


class Events:
    """Everything read from ``mail-events`` in this session, by account."""

    seen: list[dict[str, Any]] = []

    def __init__(self, stack: LocalStack, account_id: str) -> None:
        self.stack = stack
        self.account_id = account_id

    def all(self) -> list[dict[str, Any]]:
        Events.seen.extend(e for e in read_queue(self.stack, "mail-events") if isinstance(e, dict))
        return [e for e in Events.seen if e.get("data", {}).get("accountId") == self.account_id]

    def of(self, change: str, message_id: str) -> list[dict[str, Any]]:
        kind = f"com.microsoft.graph.message.{change}"
        return [e for e in self.all() if e["type"] == kind and e["subject"] == message_id]

    def wait(self, change: str, message_id: str, timeout: float = 20.0) -> dict[str, Any]:
        return wait_for(lambda: self.of(change, message_id), timeout=timeout, what=f"{change} {message_id}")[
            0
        ]


@pytest.fixture
def mailbox(stack: LocalStack) -> Iterator[tuple[dict[str, Any], Events]]:
    user = new_user(stack, "pipeline")
    response = connect_user(stack, user["userPrincipalName"])
    assert response.status_code == 200, response.text[:500]
    wait_for(lambda: subscriptions_of(stack, user), what="the inbox subscription")
    account_id = f"{user['id']}.{user['tenantId']}"
    wait_for(lambda: first_round_done(stack, account_id), what="the first delta round (queued by the connect)")
    yield user, Events(stack, account_id)
    stack.sim("DELETE", "/_sim/faults")


def first_round_done(stack: LocalStack, account_id: str) -> bool:
    shown = requests.get(
        f"{stack.devhost_url}/api/accounts/{account_id}", headers=function_key_headers(stack), timeout=10
    )
    return shown.status_code == 200 and bool(shown.json()["lastSyncAt"])


def subscriptions_of(stack: LocalStack, user: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in stack.sim("GET", "/_sim/subscriptions")["value"] if s["userId"] == user["id"]]


def test_a_new_mail_gives_exactly_one_created_event(stack: LocalStack, mailbox: Any) -> None:
    user, events = mailbox
    sent = send_mail(stack, user["id"], "Quarterly report")
    event = events.wait("created", sent["immutableId"])
    assert event["specversion"] == "1.0"
    assert event["data"]["subject"] == "Quarterly report"
    assert event["data"]["userId"] == user["id"]
    time.sleep(QUIET)
    assert len(events.all()) == 1


def test_update_and_delete_give_their_events(stack: LocalStack, mailbox: Any) -> None:
    user, events = mailbox
    sent = send_mail(stack, user["id"], "to be read, then deleted")
    events.wait("created", sent["immutableId"])
    stack.sim("PATCH", f"/_sim/users/{user['id']}/messages/{sent['immutableId']}", json={"isRead": True})
    assert events.wait("updated", sent["immutableId"])["data"]["isRead"] is True
    stack.sim("DELETE", f"/_sim/users/{user['id']}/messages/{sent['immutableId']}")
    events.wait("deleted", sent["immutableId"])
    time.sleep(QUIET)
    assert [e["type"].rsplit(".", 1)[1] for e in events.all()] == ["created", "updated", "deleted"]


def test_with_dropped_doubled_and_reordered_notifications_every_mail_gets_exactly_one_event(
    stack: LocalStack, mailbox: Any
) -> None:
    user, events = mailbox
    stack.sim("PUT", "/_sim/faults", json={"dropRate": 0.3, "duplicateRate": 0.3, "reorder": True, "seed": 7})
    sent = [send_mail(stack, user["id"], f"mail {n}")["immutableId"] for n in range(12)]
    time.sleep(QUIET)
    stack.sim("DELETE", "/_sim/faults")
    [subscription] = subscriptions_of(stack, user)
    outcomes = [
        d["outcome"]
        for d in stack.sim("GET", "/_sim/deliveries")["value"]
        if subscription["id"] in d["subscriptionIds"]
    ]
    assert "dropped" in outcomes  # the faults really were in play
    stack.sim("POST", f"/_sim/subscriptions/{subscription['id']}/lifecycle", json={"event": "missed"})
    wait_for(lambda: all(events.of("created", m) for m in sent), timeout=30, what="a created event per mail")
    time.sleep(QUIET)
    created = [e["subject"] for e in events.all() if e["type"].endswith(".created")]
    assert sorted(created) == sorted(sent)  # none lost, none doubled
    assert len({e["id"] for e in events.all()}) == len(events.all())


def test_a_removed_subscription_is_recreated_and_no_mail_is_lost(stack: LocalStack, mailbox: Any) -> None:
    user, events = mailbox
    [old] = subscriptions_of(stack, user)
    stack.sim("POST", f"/_sim/subscriptions/{old['id']}/lifecycle", json={"event": "subscriptionRemoved"})
    while_removed = send_mail(stack, user["id"], "sent while the subscription was gone")["immutableId"]
    new = wait_for(
        lambda: [s for s in subscriptions_of(stack, user) if s["id"] != old["id"]],
        timeout=30,
        what="a new subscription",
    )
    assert len(new) == 1
    events.wait("created", while_removed, timeout=30)
    after = send_mail(stack, user["id"], "sent to the new subscription")["immutableId"]
    events.wait("created", after)


def _post(stack: LocalStack, path: str, body: bytes) -> requests.Response:
    return requests.post(
        f"{stack.devhost_url}/api/{path}", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )


def _item(subscription_id: str, client_state: str) -> dict[str, Any]:
    return {
        "subscriptionId": subscription_id,
        "changeType": "created",
        "clientState": client_state,
        "resource": "Users/x/Messages/y",
        "tenantId": "t",
    }


def test_a_forged_clientstate_or_an_unknown_subscription_publishes_nothing(
    stack: LocalStack, mailbox: Any
) -> None:
    user, events = mailbox
    [subscription] = subscriptions_of(stack, user)
    stack.sim("PUT", "/_sim/faults", json={"dropRate": 1.0})  # Graph's own notification never arrives
    sent = send_mail(stack, user["id"], "only a forged notification announces this")["immutableId"]
    account_id = events.account_id
    forged = _item(subscription["id"], f"v1.{account_id}.nonce.AAAAAAAAAAAAAAAAAAAAAA")
    response = _post(stack, "notifications", json.dumps({"value": [forged]}).encode())
    assert response.status_code == 202 and response.text == "accepted 0, dropped 1"
    key = stack.settings["CLIENT_STATE_KEY"].encode()
    unknown = _item(str(uuid.uuid4()), issue_client_state(key, account_id))  # no such subscription
    assert _post(stack, "notifications", json.dumps({"value": [unknown]}).encode()).status_code == 202
    time.sleep(QUIET)
    assert events.of("created", sent) == []


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'{"value": 7}', b"\xff\xfe\x00", b"[" * 5000, b" " * (1024 * 1024 + 1)],
    ids=["empty", "truncated", "array", "value-number", "bad-utf8", "deep", "huge"],
)
def test_bad_bodies_over_http_get_a_4xx(stack: LocalStack, body: bytes) -> None:
    for path in ("notifications", "lifecycle"):
        response = _post(stack, path, body)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:200])


def test_a_message_that_is_not_a_trigger_ends_in_the_poison_queue(stack: LocalStack) -> None:
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(stack.storage_connection, "graph-notifications")
    marker = f"not a trigger {time.time()}"
    client.send_message(base64.b64encode(marker.encode()).decode())
    wait_for(
        lambda: (
            marker in [m for m in read_queue(stack, "graph-notifications-poison") if isinstance(m, str)]
            or None
        ),
        timeout=20,
        what="the message in graph-notifications-poison",
    )


def test_a_trigger_that_keeps_failing_ends_in_the_poison_queue_and_a_resync_recovers_the_mail(
    stack: LocalStack, mailbox: Any
) -> None:
    user, events = mailbox
    stack.sim("PUT", "/_sim/faults", json={"failRate": 1.0, "seed": 3})  # every Graph call: 500 or 503
    sent = send_mail(stack, user["id"], "processed only after the outage")["immutableId"]
    poisoned: list[Any] = []

    def in_poison() -> bool:
        poisoned.extend(read_queue(stack, "graph-notifications-poison"))
        # The webhook's message carries the triggers of its POST, one per account.
        return any(
            isinstance(m, dict) and events.account_id in [t.get("accountId") for t in m.get("triggers", [])]
            for m in poisoned
        )

    wait_for(in_poison, timeout=90, interval=0.5, what="the failing trigger in graph-notifications-poison")
    assert events.of("created", sent) == []
    stack.sim("DELETE", "/_sim/faults")
    [subscription] = subscriptions_of(stack, user)
    stack.sim("POST", f"/_sim/subscriptions/{subscription['id']}/lifecycle", json={"event": "missed"})
    events.wait("created", sent, timeout=30)


def delta_calls(stack: LocalStack, user: dict[str, Any]) -> int:
    return sum(
        1 for r in stack.sim("GET", "/_sim/requests")["value"] if r.get("userId") == user["id"] and "delta" in r["path"]
    )


def test_a_failing_mailbox_of_a_post_is_tried_alone_and_poisoned_alone(stack: LocalStack, mailbox: Any) -> None:
    broken_user, broken_events = mailbox
    fine_user = new_user(stack, "pipeline")
    assert connect_user(stack, fine_user["userPrincipalName"]).status_code == 200
    fine_events = Events(stack, f"{fine_user['id']}.{fine_user['tenantId']}")
    wait_for(lambda: first_round_done(stack, fine_events.account_id), what="the second mailbox's first round")
    window = stack.sim("GET", "/_sim/settings")["deliveryBatchWindowMs"]
    stack.sim("PUT", "/_sim/settings", json={"deliveryBatchWindowMs": 400})  # both mails in one POST
    try:
        stack.sim("PUT", "/_sim/faults", json={"failMailboxes": [broken_user["id"]]})  # its Graph calls: 500
        broken = send_mail(stack, broken_user["id"], "for the broken mailbox")["immutableId"]
        fine = send_mail(stack, fine_user["id"], "for the working one")["immutableId"]

        fine_events.wait("created", fine)
        [post] = [d for d in stack.sim("GET", "/_sim/deliveries")["value"] if d.get("itemCount") == 2][-1:]
        assert len(post["subscriptionIds"]) == 2  # one POST carried both mailboxes' notifications
        fine_rounds = delta_calls(stack, fine_user)
        poisoned: list[Any] = []

        def broken_trigger_poisoned() -> bool:
            poisoned.extend(m for m in read_queue(stack, "graph-notifications-poison") if isinstance(m, dict))
            return any(m.get("accountId") == broken_events.account_id for m in poisoned)

        # Tried 5 times in all (5 s apart), then the poison queue: its trigger alone, not the POST's message.
        wait_for(broken_trigger_poisoned, timeout=90, interval=0.5, what="the broken mailbox's trigger in the poison queue")
        assert not any(fine_events.account_id in json.dumps(m) for m in poisoned)
        assert len(fine_events.of("created", fine)) == 1
        assert delta_calls(stack, fine_user) == fine_rounds  # the working mailbox ran no round again

        stack.sim("DELETE", "/_sim/faults")  # the mailbox works again; a resync publishes its mail
        [subscription] = subscriptions_of(stack, broken_user)
        stack.sim("POST", f"/_sim/subscriptions/{subscription['id']}/lifecycle", json={"event": "missed"})
        broken_events.wait("created", broken, timeout=30)
        time.sleep(QUIET)
        assert len(broken_events.of("created", broken)) == 1
    finally:
        stack.sim("PUT", "/_sim/settings", json={"deliveryBatchWindowMs": window})


def test_after_an_expired_delta_token_only_what_is_new_is_published(stack: LocalStack, mailbox: Any) -> None:
    user, events = mailbox
    kept = send_mail(stack, user["id"], "kept")["immutableId"]
    gone = send_mail(stack, user["id"], "deleted during the outage")["immutableId"]
    events.wait("created", kept)
    events.wait("created", gone)
    stack.sim("PUT", "/_sim/faults", json={"dropRate": 1.0})
    stack.sim("POST", f"/_sim/users/{user['id']}/delta/reset")  # the stored deltaLink now gets 410
    stack.sim("DELETE", f"/_sim/users/{user['id']}/messages/{gone}")
    fresh = send_mail(stack, user["id"], "arrived during the outage")["immutableId"]
    stack.sim("DELETE", "/_sim/faults")
    resync = requests.post(
        f"{stack.devhost_url}/api/accounts/{events.account_id}/resync",
        headers=function_key_headers(stack),
        timeout=60,
    )
    assert resync.status_code == 200, resync.text
    assert resync.json() | {"pages": 0} == {
        "account": events.account_id,
        "created": 1,
        "updated": 0,
        "deleted": 1,
        "pages": 0,
        "restarted": True,
        "skipped": None,
    }
    events.wait("created", fresh, timeout=30)
    events.wait("deleted", gone)
    time.sleep(QUIET)
    assert len(events.of("created", kept)) == 1  # the full round did not publish it again
    assert len(events.of("created", fresh)) == 1
    assert len(events.all()) == 4
