"""Graph mail endpoints of the simulator: authentication, scopes, messages, delta, throttling."""

from __future__ import annotations

import threading
import time
from typing import Any

import requests

from .conftest import ControlSession, SignIn


def _deliver(sim: ControlSession, user: dict[str, Any], subject: str, folder: str = "inbox") -> dict[str, Any]:
    response = sim.post(f"/users/{user['id']}/messages",
                        json={"subject": subject, "from": "sender@fabrikam.test", "body": "hello", "folder": folder})
    assert response.status_code == 201, response.text
    return response.json()


def _delta_round(graph: requests.Session, url: str, page_size: int | None = None) -> tuple[list[dict[str, Any]], str, int]:
    """Follow nextLinks to the deltaLink; return (items, deltaLink, pages)."""
    headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        response = graph.get(url, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        items.extend(body["value"])
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"], pages
        url = body["@odata.nextLink"]


def test_me_answers_with_the_signed_in_user(graphsim, graph, sim_user):
    me = graph.get(f"{graphsim.graph_url}/me", timeout=10)
    assert me.status_code == 200
    assert me.json()["id"] == sim_user["id"] and me.json()["userPrincipalName"] == sim_user["userPrincipalName"]


def test_me_honours_select(graphsim, graph, sim_user):
    me = graph.get(f"{graphsim.graph_url}/me?$select=id,displayName,userPrincipalName,mail", timeout=10).json()
    assert set(me) == {"@odata.context", "id", "displayName", "userPrincipalName", "mail"}


def test_missing_or_forged_tokens_get_401_invalid_authentication_token(graphsim, user_token):
    none = requests.get(f"{graphsim.graph_url}/me", timeout=10)
    assert none.status_code == 401 and none.json()["error"]["code"] == "InvalidAuthenticationToken"
    header, payload, signature = user_token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    bad = requests.get(f"{graphsim.graph_url}/me", headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "request-id" in bad.json()["error"]["innerError"]


def test_an_expired_access_token_is_refused(graphsim, sim: ControlSession, sim_user, sign_in: SignIn,
                                            confidential_app):
    sim.put("/settings", json={"accessTokenLifetimeSeconds": 1}).raise_for_status()
    token = sign_in(confidential_app, sim_user["userPrincipalName"])["access_token"]
    ok = requests.get(f"{graphsim.graph_url}/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert ok.status_code == 200
    time.sleep(2.1)
    expired = requests.get(f"{graphsim.graph_url}/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


def test_a_token_without_mail_scope_gets_403(graphsim, sim_user, sign_in: SignIn, confidential_app):
    token = sign_in(confidential_app, sim_user["userPrincipalName"], ["User.Read"])["access_token"]
    response = requests.get(f"{graphsim.graph_url}/me/mailFolders/inbox/messages",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 403 and response.json()["error"]["code"] == "ErrorAccessDenied"


def test_a_delegated_token_sees_only_its_own_mailbox(graphsim, graph, sim: ControlSession):
    other = sim.post("/users", json={"userPrincipalName": f"o{time.time_ns()}@contoso.test"}).json()
    response = graph.get(f"{graphsim.graph_url}/users/{other['id']}/messages", timeout=10)
    assert response.status_code == 403


def test_app_only_token_reads_any_mailbox_by_users_path(graphsim, sim: ControlSession, sim_user, confidential_app):
    _deliver(sim, sim_user, "for the daemon")
    token = confidential_app.acquire_token_for_client(["https://graph.microsoft.com/.default"])["access_token"]
    response = requests.get(f"{graphsim.graph_url}/users/{sim_user['userPrincipalName']}/mailFolders('Inbox')/messages",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert [m["subject"] for m in response.json()["value"]] == ["for the daemon"]
    me = requests.get(f"{graphsim.graph_url}/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert me.status_code == 400


def test_messages_can_be_read_patched_moved_and_deleted(graphsim, graph, sim: ControlSession, sim_user):
    created = _deliver(sim, sim_user, "Quarterly report")
    url = f"{graphsim.graph_url}/me/messages/{created['id']}"
    message = graph.get(url, timeout=10).json()
    assert message["subject"] == "Quarterly report" and message["isRead"] is False
    assert message["from"]["emailAddress"]["address"] == "sender@fabrikam.test"
    patched = graph.patch(url, json={"isRead": True, "categories": ["Blue"]}, timeout=10)
    assert patched.status_code == 200 and patched.json()["isRead"] is True
    assert patched.json()["@odata.etag"] != message["@odata.etag"]
    moved = graph.post(f"{url}/move", json={"destinationId": "archive"}, timeout=10)
    assert moved.status_code == 201
    archive = graph.get(f"{graphsim.graph_url}/me/mailFolders/archive/messages", timeout=10).json()["value"]
    assert [m["subject"] for m in archive] == ["Quarterly report"]
    assert graph.get(url, timeout=10).status_code == 404  # a moved item has a new id
    deleted = graph.delete(f"{graphsim.graph_url}/me/messages/{moved.json()['id']}", timeout=10)
    assert deleted.status_code == 204
    folders = {f["displayName"]: f for f in graph.get(f"{graphsim.graph_url}/me/mailFolders", timeout=10).json()["value"]}
    assert folders["Deleted Items"]["totalItemCount"] == 1 and folders["Archive"]["totalItemCount"] == 0


def test_delta_reports_created_updated_and_deleted_once_across_pages(graphsim, graph, sim: ControlSession, sim_user):
    initial = [_deliver(sim, sim_user, f"old {i}") for i in range(5)]
    items, delta_link, pages = _delta_round(graph, f"{graphsim.graph_url}/me/mailFolders('inbox')/messages/delta"
                                                   "?$select=subject,isRead", page_size=2)
    assert pages == 3 and sorted(i["subject"] for i in items) == sorted(m["subject"] for m in initial)
    assert set(items[0]) <= {"@odata.type", "@odata.etag", "id", "subject", "isRead"}

    new = [_deliver(sim, sim_user, f"new {i}") for i in range(3)]
    sim.patch(f"/users/{sim_user['id']}/messages/{initial[0]['id']}", json={"isRead": True}).raise_for_status()
    sim.patch(f"/users/{sim_user['id']}/messages/{initial[0]['id']}", json={"subject": "old 0 edited"}).raise_for_status()
    sim.delete(f"/users/{sim_user['id']}/messages/{initial[1]['id']}").raise_for_status()
    graph.post(f"{graphsim.graph_url}/me/messages/{initial[2]['id']}/move", json={"destinationId": "archive"},
               timeout=10).raise_for_status()

    items, delta_link, pages = _delta_round(graph, delta_link, page_size=2)
    assert pages == 3
    by_id = {i["id"]: i for i in items}
    assert len(by_id) == len(items) == 6  # 3 created + 1 updated + 2 removed, each exactly once
    assert {by_id[m["id"]]["subject"] for m in new} == {"new 0", "new 1", "new 2"}
    assert by_id[initial[0]["id"]]["subject"] == "old 0 edited" and by_id[initial[0]["id"]]["isRead"] is True
    assert "body" not in by_id[initial[0]["id"]]  # $select is carried by the links
    assert by_id[initial[1]["id"]]["@removed"] == {"reason": "deleted"}
    assert by_id[initial[2]["id"]]["@removed"] == {"reason": "deleted"}

    items, _, _ = _delta_round(graph, delta_link)
    assert items == []


def test_a_change_during_paging_shows_up_in_the_next_round(graphsim, graph, sim: ControlSession, sim_user):
    for i in range(4):
        _deliver(sim, sim_user, f"m{i}")
    first = graph.get(f"{graphsim.graph_url}/me/mailFolders/inbox/messages/delta",
                      headers={"Prefer": "odata.maxpagesize=2"}, timeout=10).json()
    late = _deliver(sim, sim_user, "arrived while paging")
    items = list(first["value"])
    url = first["@odata.nextLink"]
    rest, delta_link, _ = _delta_round(graph, url, page_size=2)
    items += rest
    assert late["id"] not in {i["id"] for i in items}
    items, _, _ = _delta_round(graph, delta_link)
    assert [i["id"] for i in items] == [late["id"]]


def test_delta_reset_makes_the_old_token_gone(graphsim, graph, sim: ControlSession, sim_user):
    _deliver(sim, sim_user, "one")
    _, delta_link, _ = _delta_round(graph, f"{graphsim.graph_url}/me/mailFolders/inbox/messages/delta")
    sim.post(f"/users/{sim_user['id']}/delta/reset").raise_for_status()
    gone = graph.get(delta_link, timeout=10)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "syncStateNotFound"
    items, _, _ = _delta_round(graph, f"{graphsim.graph_url}/me/mailFolders/inbox/messages/delta")
    assert [i["subject"] for i in items] == ["one"]


def test_more_than_four_concurrent_requests_per_mailbox_get_429(graphsim, sim: ControlSession, user_token):
    sim.put("/settings", json={"graphLatencyMs": 400}).raise_for_status()
    statuses: list[requests.Response] = []
    lock = threading.Lock()

    def call() -> None:
        response = requests.get(f"{graphsim.graph_url}/me", headers={"Authorization": f"Bearer {user_token}"},
                                timeout=10)
        with lock:
            statuses.append(response)

    threads = [threading.Thread(target=call) for _ in range(7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    throttled = [r for r in statuses if r.status_code == 429]
    assert 1 <= len(throttled) <= 3 and len(statuses) - len(throttled) >= 4
    assert throttled[0].headers["Retry-After"].isdigit()
    assert throttled[0].json()["error"]["code"] == "ApplicationThrottled"
    assert "MailboxConcurrency" in throttled[0].json()["error"]["message"]


def test_the_per_mailbox_request_budget_runs_out_with_429(graphsim, sim: ControlSession, graph):
    sim.put("/settings", json={"mailboxBudget": 3, "mailboxBudgetWindowSeconds": 60}).raise_for_status()
    codes = [graph.get(f"{graphsim.graph_url}/me", timeout=10).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]


def test_throttle_and_fail_faults_answer_429_and_5xx(graphsim, sim: ControlSession, graph):
    sim.put("/faults", json={"throttleRate": 1.0}).raise_for_status()
    throttled = graph.get(f"{graphsim.graph_url}/me", timeout=10)
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers
    sim.put("/faults", json={"failRate": 1.0, "seed": 7}).raise_for_status()
    assert {graph.get(f"{graphsim.graph_url}/me", timeout=10).status_code for _ in range(6)} <= {500, 503}
    sim.delete("/faults").raise_for_status()
    assert graph.get(f"{graphsim.graph_url}/me", timeout=10).status_code == 200


def test_a_failing_mailbox_answers_500_while_the_others_are_served(graphsim, sim: ControlSession, sim_user,
                                                                    confidential_app):
    other = sim.post("/users", json={"userPrincipalName": f"o{time.time_ns()}@contoso.test"}).json()
    token = confidential_app.acquire_token_for_client(["https://graph.microsoft.com/.default"])["access_token"]

    def inbox(user: dict[str, Any]) -> int:
        return requests.get(f"{graphsim.graph_url}/users/{user['id']}/mailFolders('Inbox')/messages",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    shown = sim.put("/faults", json={"failMailboxes": [sim_user["userPrincipalName"]]})
    assert shown.status_code == 200 and shown.json()["failMailboxes"] == [sim_user["id"]]
    assert (inbox(sim_user), inbox(other)) == (500, 200)
    assert sim.put("/faults", json={"failMailboxes": ["nobody@contoso.test"]}).status_code == 400
    assert sim.put("/faults", json={"failMailboxes": sim_user["id"]}).status_code == 400
    sim.delete("/faults").raise_for_status()
    assert inbox(sim_user) == 200

