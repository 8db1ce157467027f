"""The simulator's mail actions over plain HTTP: batching rules, ids, folders, queries, the request log."""

from __future__ import annotations

import base64
import datetime as dt
import threading
from typing import Any

import requests

from .conftest import ControlSession, WebhookReceiver

IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


def _deliver(sim: ControlSession, user: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = sim.post(f"/users/{user['id']}/messages", json={"subject": "hello", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def _batch(graph: requests.Session, graphsim, requests_: list[dict[str, Any]]) -> requests.Response:
    return graph.post(f"{graphsim.graph_url}/$batch", json={"requests": requests_}, timeout=30)


# $batch ---------------------------------------------------------------------------------------
def test_a_batch_runs_dependent_requests_in_order_and_fails_what_depends_on_a_failure(graphsim, graph, sim,
                                                                                    sim_user):
    message = _deliver(sim, sim_user, subject="to file")
    answer = _batch(graph, graphsim, [
        {"id": "1", "method": "PATCH", "url": f"/me/messages/{message['id']}", "body": {"isRead": True},
         "headers": {"Content-Type": "application/json"}},
        {"id": "2", "method": "POST", "url": f"/me/messages/{message['id']}/move", "dependsOn": ["1"],
         "body": {"destinationId": "archive"}, "headers": {"Content-Type": "application/json"}},
        {"id": "3", "method": "GET", "url": "/me/messages/no-such-message"},
        {"id": "4", "method": "DELETE", "url": f"/me/messages/{message['id']}", "dependsOn": ["3"]},
    ])
    assert answer.status_code == 200
    by_id = {r["id"]: r for r in answer.json()["responses"]}
    assert {k: r["status"] for k, r in by_id.items()} == {"1": 200, "2": 201, "3": 404, "4": 424}
    assert by_id["2"]["body"]["isRead"] is True and by_id["2"]["headers"]["Content-Type"].startswith("application/json")
    assert by_id["3"]["body"]["error"]["code"] == "ErrorItemNotFound"
    archive = graph.get(f"{graphsim.graph_url}/me/mailFolders/archive/messages", timeout=10).json()["value"]
    assert [m["subject"] for m in archive] == ["to file"]  # request 4 never ran


def test_a_batch_is_refused_whole_when_it_breaks_the_batching_rules(graphsim, graph):
    get_me = {"method": "GET", "url": "/me"}
    too_many = _batch(graph, graphsim, [{"id": str(n), **get_me} for n in range(21)])
    assert too_many.status_code == 400 and "20" in too_many.json()["error"]["message"]
    twice = _batch(graph, graphsim, [{"id": "a", **get_me}, {"id": "a", **get_me}])
    assert twice.status_code == 400
    absolute = _batch(graph, graphsim, [{"id": "a", "method": "GET", "url": f"{graphsim.graph_url}/me"}])
    assert absolute.status_code == 400
    unknown_dependency = _batch(graph, graphsim, [{"id": "a", **get_me, "dependsOn": ["b"]}])
    assert unknown_dependency.status_code == 400
    nested = _batch(graph, graphsim, [{"id": "a", "method": "POST", "url": "/$batch", "body": {"requests": []},
                                       "headers": {"Content-Type": "application/json"}}])
    assert nested.status_code == 200 and nested.json()["responses"][0]["status"] == 400
    not_json = graph.post(f"{graphsim.graph_url}/$batch", data=b"{nope", timeout=10,
                          headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert graph.get(f"{graphsim.graph_url}/$batch", timeout=10).status_code == 405


def test_inner_requests_are_throttled_one_by_one_with_their_own_retry_after(graphsim, graph, sim: ControlSession,
                                                                           sim_user):
    _deliver(sim, sim_user)
    sim.put("/settings", json={"mailboxConcurrency": 2, "graphLatencyMs": 600,
                               "throttleRetryAfterSeconds": 3}).raise_for_status()
    answer = _batch(graph, graphsim, [{"id": str(n), "method": "GET", "url": "/me/messages"} for n in range(4)])
    assert answer.status_code == 200
    statuses = sorted(r["status"] for r in answer.json()["responses"])
    assert statuses == [200, 200, 429, 429]  # four at once, two slots in the mailbox
    throttled = [r for r in answer.json()["responses"] if r["status"] == 429]
    assert all(r["headers"]["Retry-After"] == "3" for r in throttled)
    assert throttled[0]["body"]["error"]["code"] == "ApplicationThrottled"


def test_a_binary_answer_inside_a_batch_is_base64(graphsim, graph, sim, sim_user):
    content = bytes(range(200))
    message = _deliver(sim, sim_user, attachments=[{"name": "blob.bin", "contentType": "application/octet-stream",
                                                    "contentBytes": base64.b64encode(content).decode()}])
    attachment_id = message["attachments"][0]["id"]
    answer = _batch(graph, graphsim, [{"id": "raw", "method": "GET",
                                       "url": f"/me/messages/{message['id']}/attachments/{attachment_id}/$value"}])
    raw = answer.json()["responses"][0]
    assert raw["status"] == 200 and base64.b64decode(raw["body"]) == content
    direct = graph.get(f"{graphsim.graph_url}/me/messages/{message['id']}/attachments/{attachment_id}/$value",
                       timeout=10)
    assert direct.content == content and direct.headers["Content-Type"] == "application/octet-stream"


# the request log ----------------------------------------------------------------------------------
def test_the_request_log_counts_what_a_flow_cost_and_starts_again_when_cleared(graphsim, graph, sim: ControlSession,
                                                                              sim_user):
    message = _deliver(sim, sim_user)
    graph.get(f"{graphsim.graph_url}/me", timeout=10)
    sim.delete("/requests").raise_for_status()
    graph.get(f"{graphsim.graph_url}/me/messages/{message['id']}", timeout=10)
    graph.get(f"{graphsim.graph_url}/me/messages/nope", timeout=10)
    requests.get(f"{graphsim.graph_url}/me", timeout=10)  # no token
    _batch(graph, graphsim, [{"id": "x", "method": "GET", "url": "/me/mailFolders/inbox"}])
    log = sim.get("/requests").json()["value"]
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("GET", f"/v1.0/me/messages/{message['id']}", 200), ("GET", "/v1.0/me/messages/nope", 404),
        ("GET", "/v1.0/me", 401), ("POST", "/v1.0/$batch", 200)]
    assert [r["userId"] for r in log] == [sim_user["id"], sim_user["id"], None, sim_user["id"]]
    assert all(r["time"].endswith("Z") for r in log)
    assert [(r["id"], r["path"], r["status"]) for r in log[3]["requests"]] == [
        ("x", "/v1.0/me/mailFolders/inbox", 200)]
    mine = sim.get("/requests", params={"userId": sim_user["userPrincipalName"]}).json()["value"]
    assert [r["status"] for r in mine] == [200, 404, 200]
    assert sim.get("/requests", params={"userId": "nobody@contoso.test"}).json()["value"] == []
    sim.delete("/requests").raise_for_status()
    assert sim.get("/requests").json()["value"] == []


# ids ----------------------------------------------------------------------------------------------
def test_delta_with_immutable_ids_reports_a_move_out_and_in_under_one_id(graphsim, graph, sim, sim_user):
    message = _deliver(sim, sim_user, subject="travels")
    inbox_delta = f"{graphsim.graph_url}/me/mailFolders/inbox/messages/delta"
    archive_delta = f"{graphsim.graph_url}/me/mailFolders/archive/messages/delta()"
    inbox = graph.get(inbox_delta, headers=IMMUTABLE, timeout=10).json()
    archive = graph.get(archive_delta, headers=IMMUTABLE, timeout=10).json()
    assert [m["id"] for m in inbox["value"]] == [message["immutableId"]] and archive["value"] == []
    graph.post(f"{graphsim.graph_url}/me/messages/{message['immutableId']}/move", json={"DestinationId": "archive"},
               headers=IMMUTABLE, timeout=10).raise_for_status()
    removed = graph.get(inbox["@odata.deltaLink"], headers=IMMUTABLE, timeout=10).json()["value"]
    arrived = graph.get(archive["@odata.deltaLink"], headers=IMMUTABLE, timeout=10).json()["value"]
    assert removed == [{"@odata.type": "#microsoft.graph.message", "id": message["immutableId"],
                        "@removed": {"reason": "deleted"}}]
    assert [(m["id"], m["subject"]) for m in arrived] == [(message["immutableId"], "travels")]


def test_without_immutable_ids_a_move_is_a_removal_of_the_old_id_and_a_new_id(graphsim, graph, sim, sim_user,
                                                                             webhook: WebhookReceiver):
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    graph.post(f"{graphsim.graph_url}/subscriptions", timeout=15, json={
        "changeType": "created,deleted", "notificationUrl": webhook.url, "resource": "/me/messages",
        "expirationDateTime": expiry}).raise_for_status()
    message = _deliver(sim, sim_user)
    inbox = graph.get(f"{graphsim.graph_url}/me/mailFolders/inbox/messages/delta", timeout=10).json()
    moved = graph.post(f"{graphsim.graph_url}/me/messages/{message['id']}/move", json={"destinationId": "junkemail"},
                       timeout=10).json()
    assert moved["id"] not in (message["id"], message["immutableId"])
    removed = graph.get(inbox["@odata.deltaLink"], timeout=10).json()["value"]
    assert [(m["id"], m.get("@removed")) for m in removed] == [(message["id"], {"reason": "deleted"})]
    assert webhook.wait_for(lambda: len(webhook.items()) >= 3)
    assert [(i["changeType"], i["resourceData"]["id"]) for i in webhook.items()] == [
        ("created", message["id"]), ("deleted", message["id"]), ("created", moved["id"])]


def test_translate_exchange_ids_maps_rest_ids_to_immutable_ids_and_back(graphsim, graph, sim, sim_user):
    message = _deliver(sim, sim_user)
    url = f"{graphsim.graph_url}/me/translateExchangeIds"
    to_immutable = graph.post(url, json={"inputIds": [message["id"], "unknown"], "sourceIdType": "restId",
                                         "targetIdType": "restImmutableEntryId"}, timeout=10).json()["value"]
    assert to_immutable[0] == {"sourceId": message["id"], "targetId": message["immutableId"]}
    assert to_immutable[1]["errorDetails"]["code"] == "ErrorItemNotFound"
    back = graph.post(url, json={"inputIds": [message["immutableId"]], "sourceIdType": "restImmutableEntryId",
                                 "targetIdType": "restId"}, timeout=10).json()["value"]
    assert back == [{"sourceId": message["immutableId"], "targetId": message["id"]}]
    assert graph.post(url, json={"inputIds": "x"}, timeout=10).status_code == 400


# actions -----------------------------------------------------------------------------------------
def test_deleting_from_deleted_items_takes_the_message_out_of_view(graphsim, graph, sim, sim_user,
                                                                  webhook: WebhookReceiver):
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    graph.post(f"{graphsim.graph_url}/subscriptions", timeout=15, headers=IMMUTABLE, json={
        "changeType": "created,deleted", "notificationUrl": webhook.url, "resource": "/me/messages",
        "expirationDateTime": expiry}).raise_for_status()
    message = _deliver(sim, sim_user)
    graph.delete(f"{graphsim.graph_url}/me/messages/{message['immutableId']}", timeout=10).raise_for_status()
    in_bin = graph.get(f"{graphsim.graph_url}/me/mailFolders/deleteditems/messages", timeout=10).json()["value"]
    assert len(in_bin) == 1
    assert graph.delete(f"{graphsim.graph_url}/me/messages/{in_bin[0]['id']}", timeout=10).status_code == 204
    assert graph.get(f"{graphsim.graph_url}/me/messages", timeout=10).json()["value"] == []
    assert graph.get(f"{graphsim.graph_url}/me/mailFolders/deleteditems", timeout=10).json()["totalItemCount"] == 0
    # created, moved to Deleted Items (deleted + created), then gone: nothing about the recoverable items
    assert webhook.wait_for(lambda: len(webhook.items()) >= 4)
    assert [i["changeType"] for i in webhook.items()] == ["created", "deleted", "created", "deleted"]
    assert {i["resourceData"]["id"] for i in webhook.items()} == {message["immutableId"]}


def test_bad_updates_and_moves_get_a_400_or_404_with_a_reason(graphsim, graph, sim, sim_user):
    url = f"{graphsim.graph_url}/me/messages/{_deliver(sim, sim_user)['id']}"
    for patch in ({"isRead": "yes"}, {"categories": "Red"}, {"flag": {"flagStatus": "sometimes"}},
                  {"importance": "urgent"}, {"receivedDateTime": "2020-01-01T00:00:00Z"}):
        response = graph.patch(url, json=patch, timeout=10)
        assert response.status_code == 400 and response.json()["error"]["message"], patch
    assert graph.patch(url, data=b"[1", headers={"Content-Type": "application/json"}, timeout=10).status_code == 400
    assert graph.post(f"{url}/move", json={}, timeout=10).status_code == 400
    assert graph.post(f"{url}/move", json={"destinationId": "nowhere"}, timeout=10).status_code == 404
    assert graph.post(f"{graphsim.graph_url}/me/messages/unknown/permanentDelete", timeout=10).status_code == 404
    assert graph.get(f"{url}/attachments/none", timeout=10).status_code == 404
    annotated = graph.patch(url, json={"@odata.type": "#microsoft.graph.message", "isRead": True}, timeout=10)
    assert annotated.status_code == 200 and annotated.json()["isRead"] is True


def test_the_control_api_refuses_a_malformed_message_with_a_reason(sim: ControlSession, sim_user):
    url = f"/users/{sim_user['id']}/messages"
    for fields in ({"attachments": [{"name": "x", "contentBytes": "***"}]}, {"attachments": [{"contentBytes": ""}]},
                   {"bodyContentType": "rtf"}, {"toRecipients": "a@b.test"}, {"folder": "nowhere"},
                   {"receivedDateTime": "yesterday"}, {"isRead": "no"}):
        response = sim.post(url, json={"subject": "x", **fields})
        assert response.status_code == 400 and response.json()["error"]["message"], fields
    assert sim.get(url).json()["value"] == []


# folders and queries -------------------------------------------------------------------------------
def test_folder_lists_come_ten_a_page_and_child_folders_nest(graphsim, graph):
    for n in range(4):
        created = graph.post(f"{graphsim.graph_url}/me/mailFolders", json={"displayName": f"Project {n}"}, timeout=10)
        assert created.status_code == 201
    first = graph.get(f"{graphsim.graph_url}/me/mailFolders", timeout=10).json()
    assert len(first["value"]) == 10 and "@odata.nextLink" in first
    second = graph.get(first["@odata.nextLink"], timeout=10).json()
    names = [f["displayName"] for f in first["value"] + second["value"]]
    assert len(names) == 12 and len(set(names)) == 12 and "@odata.nextLink" not in second
    project = next(f for f in first["value"] + second["value"] if f["displayName"] == "Project 0")
    child = graph.post(f"{graphsim.graph_url}/me/mailFolders/{project['id']}/childFolders",
                       json={"displayName": "Invoices"}, timeout=10).json()
    nested = graph.get(f"{graphsim.graph_url}/me/mailFolders/{project['id']}/childFolders/{child['id']}/messages",
                       timeout=10)
    assert nested.status_code == 200 and nested.json()["value"] == []
    delta = graph.get(f"{graphsim.graph_url}/me/mailFolders/{child['id']}/messages/delta", timeout=10)
    assert delta.status_code == 200 and "@odata.deltaLink" in delta.json()
    assert graph.post(f"{graphsim.graph_url}/me/mailFolders", json={}, timeout=10).status_code == 400
    hidden = graph.get(f"{graphsim.graph_url}/me/mailFolders?includeHiddenFolders=true&$top=50", timeout=10).json()
    assert len(hidden["value"]) == 12  # the recoverable items are not under the root


def test_message_lists_filter_and_order_as_outlook_does(graphsim, graph, sim, sim_user):
    _deliver(sim, sim_user, subject="read", isRead=True, categories=["Red"], importance="high")
    _deliver(sim, sim_user, subject="unread", receivedDateTime="2026-01-01T00:00:00Z")
    base = f"{graphsim.graph_url}/me/mailFolders/inbox/messages"

    def subjects(query: str) -> list[str]:
        response = graph.get(f"{base}?{query}", timeout=10)
        assert response.status_code == 200, response.text
        return [m["subject"] for m in response.json()["value"]]

    assert subjects("$filter=isRead eq false") == ["unread"]
    assert subjects("$filter=categories/any(c:c eq 'Red')") == ["read"]
    assert subjects("$filter=importance eq 'high' and isRead eq true") == ["read"]
    assert subjects("$filter=receivedDateTime lt 2026-06-01T00:00:00Z") == ["unread"]
    assert subjects("$orderby=receivedDateTime asc") == ["unread", "read"]
    assert subjects("$count=true&$top=1") == ["read"]
    bad_filter = graph.get(f"{base}?$filter=colour eq 'blue'", timeout=10)
    assert bad_filter.status_code == 400
    inefficient = graph.get(f"{base}?$filter=isRead eq false&$orderby=receivedDateTime desc", timeout=10)
    assert inefficient.status_code == 400 and inefficient.json()["error"]["code"] == "InefficientFilter"
    assert graph.get(f"{base}?$top=many", timeout=10).status_code == 400
    assert graph.get(f"{graphsim.graph_url}/me/messages/delta", timeout=10).status_code == 400


def test_two_batches_at_once_on_one_mailbox_share_its_four_slots(graphsim, graph, sim: ControlSession, sim_user):
    _deliver(sim, sim_user)
    sim.put("/settings", json={"graphLatencyMs": 800}).raise_for_status()
    outcomes: list[int] = []
    lock = threading.Lock()

    def one_batch() -> None:
        answer = _batch(graph, graphsim, [{"id": str(n), "method": "GET", "url": "/me/messages"} for n in range(4)])
        with lock:
            outcomes.extend(r["status"] for r in answer.json()["responses"])

    threads = [threading.Thread(target=one_batch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 8 and outcomes.count(200) >= 4 and outcomes.count(429) >= 1


def test_delta_filters_on_received_time_and_keeps_the_filter_in_its_links(graphsim, graph, sim, sim_user):
    _deliver(sim, sim_user, subject="old", receivedDateTime="2025-01-01T00:00:00Z")
    _deliver(sim, sim_user, subject="recent")
    url = f"{graphsim.graph_url}/me/mailFolders/inbox/messages/delta?$filter=receivedDateTime ge 2026-01-01T00:00:00Z"
    first = graph.get(url, timeout=10).json()
    assert [m["subject"] for m in first["value"]] == ["recent"]
    _deliver(sim, sim_user, subject="backdated", receivedDateTime="2025-06-01T00:00:00Z")
    _deliver(sim, sim_user, subject="new")
    later = graph.get(first["@odata.deltaLink"], timeout=10).json()
    assert [m["subject"] for m in later["value"]] == ["new"]
    other = graph.get(f"{graphsim.graph_url}/me/mailFolders/inbox/messages/delta?$filter=isRead eq false", timeout=10)
    assert other.status_code == 400 and "receivedDateTime" in other.json()["error"]["message"]
