"""Subscriptions, the validation handshake and notification delivery of the simulator."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import requests

from devstack.graphsim import DEFAULT_TENANT_ID

from .conftest import ControlSession, WebhookReceiver

INBOX = "/me/mailFolders('inbox')/messages"


def _in(minutes: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _subscribe(graphsim, graph: requests.Session, webhook: WebhookReceiver, **overrides: Any) -> requests.Response:
    body = {"changeType": "created,updated,deleted", "notificationUrl": webhook.url,
            "lifecycleNotificationUrl": webhook.lifecycle_url, "resource": INBOX,
            "expirationDateTime": _in(4000), "clientState": "secret-client-state"}
    body.update(overrides)
    return graph.post(f"{graphsim.graph_url}/subscriptions", json=body, timeout=20)


def _deliver(sim: ControlSession, user: dict[str, Any], subject: str) -> dict[str, Any]:
    response = sim.post(f"/users/{user['id']}/messages", json={"subject": subject, "from": "a@fabrikam.test"})
    response.raise_for_status()
    return response.json()


def test_creation_runs_the_handshake_on_both_urls_and_returns_the_subscription(graphsim, graph, webhook, sim, sim_user):
    response = _subscribe(graphsim, graph, webhook)
    assert response.status_code == 201, response.text
    sub = response.json()
    assert sub["resource"] == INBOX and sub["changeType"] == "created,updated,deleted"
    assert sub["clientState"] == "secret-client-state" and sub["lifecycleNotificationUrl"] == webhook.lifecycle_url
    assert len(webhook.validations) == 2  # notification URL and lifecycle URL
    assert all(t.startswith("Validation: ") and " " in t for t in webhook.validations)  # decoded by the receiver
    listed = sim.get("/subscriptions").json()["value"]
    mine = next(s for s in listed if s["id"] == sub["id"])
    assert mine["userId"] == sim_user["id"] and mine["notificationUrl"] == webhook.url


def test_an_endpoint_that_does_not_echo_the_token_is_refused(graphsim, graph, webhook, sim):
    webhook.validation = "wrong"
    response = _subscribe(graphsim, graph, webhook)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ValidationError"
    assert response.json()["error"]["message"].startswith("Subscription validation request failed")
    webhook.validation = "status"
    assert _subscribe(graphsim, graph, webhook).status_code == 400
    assert graph.get(f"{graphsim.graph_url}/subscriptions", timeout=10).json()["value"] == []


def test_a_slow_endpoint_times_out(graphsim, graph, webhook, sim: ControlSession):
    sim.put("/settings", json={"validationTimeoutSeconds": 0.3}).raise_for_status()
    webhook.validation, webhook.delay = "slow", 1.0
    response = _subscribe(graphsim, graph, webhook)
    assert response.status_code == 400 and "timed out" in response.json()["error"]["message"]


def test_the_same_resource_and_change_type_twice_is_a_conflict(graphsim, graph, webhook):
    assert _subscribe(graphsim, graph, webhook).status_code == 201
    again = _subscribe(graphsim, graph, webhook, resource="me/mailFolders('Inbox')/messages")
    assert again.status_code == 409
    other_change = _subscribe(graphsim, graph, webhook, changeType="created")
    assert other_change.status_code == 201


def test_expiry_rules(graphsim, graph, webhook):
    past = _subscribe(graphsim, graph, webhook, expirationDateTime=_in(-5))
    assert past.status_code == 400
    too_far = _subscribe(graphsim, graph, webhook, expirationDateTime=_in(10_081))
    assert too_far.status_code == 400 and "10080" in too_far.json()["error"]["message"]
    short = _subscribe(graphsim, graph, webhook, expirationDateTime=_in(5))
    assert short.status_code == 201
    expiry = dt.datetime.fromisoformat(short.json()["expirationDateTime"][:26] + "+00:00")
    assert expiry >= dt.datetime.now(dt.UTC) + dt.timedelta(minutes=44)


def test_client_state_longer_than_128_characters_is_refused(graphsim, graph, webhook):
    assert _subscribe(graphsim, graph, webhook, clientState="x" * 129).status_code == 400


def test_get_renew_reauthorize_and_delete(graphsim, graph, webhook):
    sub = _subscribe(graphsim, graph, webhook).json()
    url = f"{graphsim.graph_url}/subscriptions/{sub['id']}"
    assert graph.get(url, timeout=10).json()["id"] == sub["id"]
    renewed = graph.patch(url, json={"expirationDateTime": _in(9000)}, timeout=10)
    assert renewed.status_code == 200 and renewed.json()["expirationDateTime"] > sub["expirationDateTime"]
    assert graph.post(f"{url}/reauthorize", timeout=10).status_code == 204
    assert graph.delete(url, timeout=10).status_code == 204
    assert graph.delete(url, timeout=10).status_code == 404
    assert graph.get(url, timeout=10).status_code == 404


def test_new_mail_is_notified_with_graphs_shape_and_the_client_state(graphsim, graph, webhook, sim, sim_user):
    sub = _subscribe(graphsim, graph, webhook, changeType="created").json()
    message = _deliver(sim, sim_user, "hello")
    assert webhook.wait_for(lambda: len(webhook.items()) >= 1)
    item = webhook.items()[0]
    assert item["subscriptionId"] == sub["id"] and item["clientState"] == "secret-client-state"
    assert item["changeType"] == "created" and item["tenantId"] == DEFAULT_TENANT_ID
    assert item["resource"] == f"Users/{sim_user['id']}/Messages/{message['id']}"
    assert item["resourceData"] == {"@odata.type": "#Microsoft.Graph.Message",
                                    "@odata.id": f"Users/{sim_user['id']}/Messages/{message['id']}",
                                    "@odata.etag": message["@odata.etag"], "id": message["id"]}
    assert item["subscriptionExpirationDateTime"]


def test_moving_out_of_the_inbox_is_a_deleted_notification(graphsim, graph, webhook, sim, sim_user):
    _subscribe(graphsim, graph, webhook)
    message = _deliver(sim, sim_user, "to archive")
    graph.post(f"{graphsim.graph_url}/me/messages/{message['id']}/move", json={"destinationId": "archive"},
               timeout=10).raise_for_status()
    assert webhook.wait_for(lambda: any(i["changeType"] == "deleted" for i in webhook.items()))
    kinds = [(i["changeType"], i["resourceData"]["id"]) for i in webhook.items()]
    assert ("created", message["id"]) in kinds and ("deleted", message["id"]) in kinds
    assert all(i["resourceData"]["id"] == message["id"] for i in webhook.items())  # nothing for the archive copy


def test_changes_outside_the_subscribed_folder_are_not_notified(graphsim, graph, webhook, sim, sim_user):
    _subscribe(graphsim, graph, webhook)
    sim.post(f"/users/{sim_user['id']}/messages", json={"subject": "junk", "folder": "junkemail"}).raise_for_status()
    marker = _deliver(sim, sim_user, "marker")
    assert webhook.wait_for(lambda: len(webhook.items()) >= 1)
    assert [i["resourceData"]["id"] for i in webhook.items()] == [marker["id"]]


def test_a_failing_endpoint_is_retried_until_it_answers(graphsim, graph, webhook, sim, sim_user):
    sim.put("/settings", json={"deliveryRetryBaseSeconds": 0.1}).raise_for_status()
    sub = _subscribe(graphsim, graph, webhook, changeType="created").json()
    webhook.fail_first = 2
    _deliver(sim, sim_user, "retry me")
    assert webhook.wait_for(lambda: len(webhook.items()) >= 3)
    log = [e for e in sim.get("/deliveries").json()["value"] if sub["id"] in e["subscriptionIds"]]
    assert [e["outcome"] for e in log] == ["retrying", "retrying", "delivered"]
    assert [e["attempt"] for e in log] == [1, 2, 3] and log[-1]["status"] == 202


def test_delivery_gives_up_after_the_attempt_bound(graphsim, graph, webhook, sim, sim_user):
    sim.put("/settings", json={"deliveryRetryBaseSeconds": 0.05, "deliveryMaxAttempts": 3}).raise_for_status()
    sub = _subscribe(graphsim, graph, webhook, changeType="created").json()
    webhook.status = 503
    _deliver(sim, sim_user, "never acknowledged")

    def outcomes() -> list[str]:
        return [e["outcome"] for e in sim.get("/deliveries").json()["value"] if sub["id"] in e["subscriptionIds"]]

    assert webhook.wait_for(lambda: "failed" in outcomes())
    assert outcomes() == ["retrying", "retrying", "failed"]


def test_drop_fault_loses_notifications_and_duplicate_fault_doubles_them(graphsim, graph, webhook, sim, sim_user):
    _subscribe(graphsim, graph, webhook, changeType="created")
    sim.put("/faults", json={"dropRate": 1.0}).raise_for_status()
    dropped = _deliver(sim, sim_user, "dropped")
    sim.put("/faults", json={"duplicateRate": 1.0}).raise_for_status()
    doubled = _deliver(sim, sim_user, "doubled")
    assert webhook.wait_for(lambda: len(webhook.items()) >= 2)
    ids = [i["resourceData"]["id"] for i in webhook.items()]
    assert ids == [doubled["id"], doubled["id"]] and dropped["id"] not in ids
    assert any(e["outcome"] == "dropped" for e in sim.get("/deliveries").json()["value"])


def test_delay_and_reorder_faults(graphsim, graph, webhook, sim, sim_user):
    _subscribe(graphsim, graph, webhook, changeType="created")
    sim.put("/faults", json={"delayMs": 400}).raise_for_status()
    _deliver(sim, sim_user, "late")
    assert not webhook.wait_for(lambda: len(webhook.items()) >= 1, timeout=0.25)
    assert webhook.wait_for(lambda: len(webhook.items()) >= 1, timeout=3)
    sim.put("/faults", json={"reorder": True, "seed": 3}).raise_for_status()
    sent = [_deliver(sim, sim_user, f"r{i}")["id"] for i in range(12)]
    assert webhook.wait_for(lambda: len(webhook.items()) >= 13, timeout=5)
    received = [i["resourceData"]["id"] for i in webhook.items()[1:]]
    assert sorted(received) == sorted(sent) and received != sent


def test_lifecycle_events_go_to_the_lifecycle_url(graphsim, graph, webhook, sim, sim_user):
    sub = _subscribe(graphsim, graph, webhook).json()
    assert sim.post(f"/subscriptions/{sub['id']}/lifecycle", json={"event": "reauthorizationRequired"}).status_code == 202
    assert webhook.wait_for(lambda: len(webhook.items("/api/lifecycle")) == 1)
    item = webhook.items("/api/lifecycle")[0]
    assert item["lifecycleEvent"] == "reauthorizationRequired" and item["subscriptionId"] == sub["id"]
    assert item["clientState"] == "secret-client-state" and item["tenantId"] == DEFAULT_TENANT_ID
    sim.post(f"/subscriptions/{sub['id']}/lifecycle", json={"event": "subscriptionRemoved"}).raise_for_status()
    assert webhook.wait_for(lambda: len(webhook.items("/api/lifecycle")) == 2)
    assert graph.get(f"{graphsim.graph_url}/subscriptions/{sub['id']}", timeout=10).status_code == 404


def test_a_silently_removed_subscription_gets_no_more_notifications(graphsim, graph, webhook, sim, sim_user):
    sub = _subscribe(graphsim, graph, webhook).json()
    assert sim.delete(f"/subscriptions/{sub['id']}").status_code == 204
    _deliver(sim, sim_user, "nobody listens")
    assert not webhook.wait_for(lambda: len(webhook.posts) > 0, timeout=0.5)
    assert graph.get(f"{graphsim.graph_url}/subscriptions/{sub['id']}", timeout=10).status_code == 404


def test_an_expired_subscription_is_gone_and_silent(graphsim, graph, webhook, sim, sim_user):
    sub = _subscribe(graphsim, graph, webhook).json()
    soon = sim.patch(f"/subscriptions/{sub['id']}", json={"expirationDateTime": _in(0.01)})
    assert soon.status_code == 200
    assert graph.get(f"{graphsim.graph_url}/subscriptions/{sub['id']}", timeout=10).status_code == 200
    time.sleep(1.0)
    assert graph.get(f"{graphsim.graph_url}/subscriptions/{sub['id']}", timeout=10).status_code == 404
    _deliver(sim, sim_user, "after expiry")
    assert not webhook.wait_for(lambda: len(webhook.posts) > 0, timeout=0.5)
    assert sub["id"] not in [s["id"] for s in sim.get("/subscriptions").json()["value"]]


def test_rich_notifications_need_an_encryption_certificate(graphsim, graph, webhook):
    response = _subscribe(graphsim, graph, webhook, includeResourceData=True)
    assert response.status_code == 400
