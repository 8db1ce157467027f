"""The control API contract that the other test suites and the demo rely on."""

from __future__ import annotations

import datetime as dt
import uuid

import requests

from .conftest import ControlSession


def test_health(sim: ControlSession):
    assert sim.get("/health").status_code == 200


def test_default_app_and_users_exist(sim: ControlSession):
    apps = sim.get("/apps").json()["value"]
    default = next(a for a in apps if a["clientId"] == "00000000-0000-4000-8000-00000000c0de")
    assert default["redirectUris"] == ["http://127.0.0.1:7071/api/auth/callback"]
    upns = {u["userPrincipalName"] for u in sim.get("/users").json()["value"]}
    assert {"adele@contoso.test", "megan@contoso.test"} <= upns


def test_created_app_has_credentials(sim: ControlSession):
    response = sim.post("/apps", json={"displayName": "x", "redirectUris": ["http://127.0.0.1:1/cb"]})
    assert response.status_code == 201
    assert set(response.json()) >= {"clientId", "clientSecret", "redirectUris"}


def test_users_are_addressable_by_id_or_upn_and_mail_can_be_changed(sim: ControlSession):
    upn = f"ctl-{uuid.uuid4().hex[:8]}@contoso.test"
    created = sim.post("/users", json={"userPrincipalName": upn, "displayName": "Ctl"})
    assert created.status_code == 201 and created.json()["id"]
    assert sim.post("/users", json={"userPrincipalName": upn}).status_code == 409
    message = sim.post(f"/users/{upn}/messages",
                       json={"subject": "s", "from": "f@fabrikam.test", "body": "b"})
    assert message.status_code == 201 and message.json()["subject"] == "s"
    mid = message.json()["id"]
    patched = sim.patch(f"/users/{created.json()['id']}/messages/{mid}", json={"isRead": True})
    assert patched.status_code == 200 and patched.json()["isRead"] is True
    assert sim.delete(f"/users/{upn}/messages/{mid}").status_code == 204
    assert sim.delete(f"/users/{upn}/messages/{mid}").status_code == 404


def test_settings_and_faults_validate_their_input(sim: ControlSession):
    assert sim.put("/settings", json={"autoConsent": "yes"}).status_code == 400
    assert sim.put("/settings", json={"noSuchSetting": 1}).status_code == 400
    assert sim.put("/settings", json={"autoConsent": False}).json()["autoConsent"] is False
    assert sim.put("/faults", json={"dropRate": 2}).status_code == 400
    assert sim.put("/faults", json={"dropRate": 0.5, "seed": 1}).json()["dropRate"] == 0.5
    assert sim.delete("/faults").status_code == 204
    assert sim.get("/faults").json()["dropRate"] == 0.0


def test_unknown_subscription_is_404(sim: ControlSession):
    assert sim.delete("/subscriptions/00000000-0000-0000-0000-000000000000").status_code == 404
    assert sim.post("/subscriptions/00000000-0000-0000-0000-000000000000/lifecycle",
                    json={"event": "missed"}).status_code == 404


def test_bulk_seeding_makes_users_with_a_live_subscription_and_a_working_token(sim: ControlSession):
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = sim.post("/bulk", json={
        "users": 3,
        "subscription": {
            "notificationUrl": "https://connector.example.test/api/notifications",
            "lifecycleNotificationUrl": "https://connector.example.test/api/lifecycle",
            "expirationDateTime": expiry,
            "clientState": "bulk",
        },
        "skipValidation": True,
    })
    assert response.status_code == 201
    seeded = response.json()["value"]
    assert len(seeded) == 3 and len({s["userId"] for s in seeded}) == 3
    first = seeded[0]
    assert sim.get(f"/users/{first['userPrincipalName']}").json()["id"] == first["userId"]
    subscription = sim.get(f"/subscriptions/{first['subscriptionId']}").json()
    assert subscription["userId"] == first["userId"]
    assert subscription["resource"] == "/me/mailFolders('inbox')/messages"
    me = requests.get(f"{sim.simulator.graph_url}/me", verify=sim.simulator.ca_file,
                      headers={"Authorization": f"Bearer {first['accessToken']}"}, timeout=10)
    assert me.status_code == 200 and me.json()["id"] == first["userId"]


def test_bulk_seeding_keeps_graphs_rules_and_validates_unless_told_not_to(sim: ControlSession):
    past = "2001-01-01T00:00:00Z"
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert sim.post("/bulk", json={"users": 0}).status_code == 400
    assert sim.post("/bulk", json={"users": 1, "subscription": {
        "notificationUrl": "https://x.example.test/n", "expirationDateTime": past}}).status_code == 400
    unreachable = sim.post("/bulk", json={"users": 1, "subscription": {
        "notificationUrl": "https://127.0.0.1:9/n", "expirationDateTime": soon}})
    assert unreachable.status_code == 400 and "validation" in unreachable.text
    without = sim.post("/bulk", json={"users": 2})
    assert without.status_code == 201
    assert [s["subscriptionId"] for s in without.json()["value"]] == [None, None]


def test_a_subscriptions_notifications_can_be_sent_to_another_address(sim: ControlSession):
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    [seeded] = sim.post("/bulk", json={
        "users": 1,
        "subscription": {"notificationUrl": "https://one.example.test/api/notifications", "expirationDateTime": expiry,
                         "clientState": "bulk"},
        "skipValidation": True,
    }).json()["value"]
    path = f"/subscriptions/{seeded['subscriptionId']}"
    assert sim.patch(path, json={"notificationUrl": "ftp://two.example.test/n"}).status_code == 400
    moved = sim.patch(path, json={"notificationUrl": "https://two.example.test/api/notifications"})
    assert moved.status_code == 200
    assert moved.json()["notificationUrl"] == "https://two.example.test/api/notifications"
    assert sim.get(path).json()["expirationDateTime"] == moved.json()["expirationDateTime"]  # kept
    assert sim.patch(path, json={}).status_code == 400
