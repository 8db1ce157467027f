"""Drive subscriptions in the simulator: Graph's rules for drive roots, the handshake,
the lifetime, and coalesced notifications without resource data."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from devstack.graphsim.state import parse_graph_time

from .conftest import WebhookReceiver
from .drive_helpers import graph_for, seed

DRIVE_ITEM_MAX_MINUTES = 42_300  # "OneDrive driveItem: 42,300 minutes (under 30 days)", subscription resource page


@pytest.fixture
def files(graphsim, confidential_app, sign_in, sim_user):
    session = graph_for(graphsim, confidential_app, sign_in, sim_user["userPrincipalName"])
    yield session
    session.close()


def _in(minutes: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _subscribe(files, webhook: WebhookReceiver, **overrides: Any):
    body = {"changeType": "updated", "notificationUrl": webhook.url, "lifecycleNotificationUrl": webhook.lifecycle_url,
            "resource": "/me/drive/root", "expirationDateTime": _in(DRIVE_ITEM_MAX_MINUTES - 5),
            "clientState": "drive-client-state"}
    body.update(overrides)
    return files.post("/subscriptions", json=body)


def test_a_drive_root_subscription_runs_the_handshake_and_lives_up_to_42300_minutes(files, webhook, sim):
    response = _subscribe(files, webhook)
    assert response.status_code == 201, response.text
    sub = response.json()
    assert sub["resource"] == "/me/drive/root" and sub["changeType"] == "updated"
    assert len(webhook.validations) == 2
    too_long = _subscribe(files, webhook, expirationDateTime=_in(DRIVE_ITEM_MAX_MINUTES + 5))
    assert too_long.status_code == 400 and "42300" in too_long.json()["error"]["message"]
    renewed = files.patch(f"/subscriptions/{sub['id']}", json={"expirationDateTime": _in(DRIVE_ITEM_MAX_MINUTES - 1)})
    assert renewed.status_code == 200
    assert parse_graph_time(renewed.json()["expirationDateTime"]) > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)


@pytest.mark.parametrize("change_type", ["created", "deleted", "created,updated", "updated,deleted"])
def test_drive_subscriptions_take_updated_only(files, webhook, change_type):
    response = _subscribe(files, webhook, changeType=change_type)
    assert response.status_code == 400 and response.json()["error"]["code"] == "InvalidRequest"
    assert webhook.validations == []  # refused before the handshake


def test_only_the_root_can_be_subscribed_and_the_caller_needs_a_files_scope(
        graphsim, confidential_app, sign_in, sim_user, files, webhook, sim):
    folder = seed(sim, sim_user, "Sub/x.txt", "x")
    assert _subscribe(files, webhook, resource=f"/me/drive/items/{folder['parentReference']['id']}").status_code == 400
    assert _subscribe(files, webhook, includeResourceData=True).status_code == 400
    mail_only = graph_for(graphsim, confidential_app, sign_in, sim_user["userPrincipalName"], ["User.Read", "Mail.Read"])
    assert _subscribe(mail_only, webhook).status_code == 403
    webhook.validation = "wrong"
    failed = _subscribe(files, webhook)
    assert failed.status_code == 400 and failed.json()["error"]["code"] == "ValidationError"


def test_changes_close_together_give_one_notification_without_resource_data(files, webhook, sim, sim_user):
    sub = _subscribe(files, webhook).json()
    sim.put("/settings", json={"driveNotificationDelayMs": 400}).raise_for_status()  # wide enough on a busy machine
    item = seed(sim, sim_user, "Docs/report.docx", "v1")
    for n in range(5):
        sim.put(f"/users/{sim_user['id']}/drive/items/{item['id']}/content", data=f"v{n + 2}".encode())
    assert webhook.wait_for(lambda: len(webhook.items()) >= 1)
    time.sleep(0.8)
    items = webhook.items()
    assert len(items) == 1  # the six changes were coalesced
    note = items[0]
    assert note["subscriptionId"] == sub["id"] and note["changeType"] == "updated"
    assert note["resource"] == "/me/drive/root" and note["clientState"] == "drive-client-state"
    assert "resourceData" not in note


def test_changes_apart_give_one_notification_each_and_mail_never_notifies_a_drive(files, webhook, sim, sim_user):
    _subscribe(files, webhook)
    item = seed(sim, sim_user, "one.txt", "1")
    assert webhook.wait_for(lambda: len(webhook.items()) == 1)
    sim.patch(f"/users/{sim_user['id']}/drive/items/{item['id']}", json={"name": "two.txt"})
    assert webhook.wait_for(lambda: len(webhook.items()) == 2)
    sim.post(f"/users/{sim_user['id']}/messages", json={"subject": "not a file"}).raise_for_status()
    files.put("/me/drive/root:/three.txt:/content", data=b"3")  # a change through Graph notifies too
    assert webhook.wait_for(lambda: len(webhook.items()) == 3)
    time.sleep(0.3)
    assert len(webhook.items()) == 3


def test_drive_notifications_go_through_the_delivery_faults(files, webhook, sim, sim_user):
    _subscribe(files, webhook)
    sim.put("/faults", json={"dropRate": 1.0}).raise_for_status()
    seed(sim, sim_user, "dropped.txt", "x")
    time.sleep(0.4)
    assert webhook.items() == []
    dropped = [d for d in sim.get("/deliveries").json()["value"] if d["outcome"] == "dropped"]
    assert dropped


def test_a_drive_subscription_gets_reauthorization_lifecycle_events_only(files, webhook, sim):
    sub = _subscribe(files, webhook).json()
    for outlook_only in ("missed", "subscriptionRemoved"):
        assert sim.post(f"/subscriptions/{sub['id']}/lifecycle", json={"event": outlook_only}).status_code == 400
    queued = sim.post(f"/subscriptions/{sub['id']}/lifecycle", json={"event": "reauthorizationRequired"})
    assert queued.status_code == 202
    assert webhook.wait_for(lambda: len(webhook.items("/api/lifecycle")) == 1)
    assert webhook.items("/api/lifecycle")[0]["lifecycleEvent"] == "reauthorizationRequired"
