"""Mail actions through the whole local stack: the routes and the command queue against the
Graph simulator, as a consumer calls them (function key, JSON, queues)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devstack.stack import LocalStack
from shared.adapters.identity import MsalIdentity
from shared.adapters.tables import TableAccountStore
from shared.config import Settings
from shared.models import AccountStatus
from tests.support.stack import (
    browser,
    connect_user,
    function_key_headers,
    new_user,
    read_form,
    read_queue,
    send_mail,
    wait_for,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


class Mailbox:
    def __init__(self, stack: LocalStack, user: dict[str, Any]) -> None:
        self.stack = stack
        self.user = user
        self.account_id = f"{user['id']}.{user['tenantId']}"

    def url(self, path: str = "") -> str:
        return f"{self.stack.devhost_url}/api/accounts/{quote(self.account_id, safe='')}{path}"

    def call(self, method: str, path: str = "", **kwargs: Any) -> requests.Response:
        headers = {**function_key_headers(self.stack), **kwargs.pop("headers", {})}
        return requests.request(method, self.url(path), headers=headers, timeout=60, **kwargs)

    def send(self, subject: str, **extra: Any) -> str:
        """A new mail in the mailbox; its immutable id (what the connector hands out)."""
        return str(send_mail(self.stack, self.user["id"], subject, **extra)["immutableId"])

    def graph_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.stack.sim("GET", "/_sim/requests")["value"] if r.get("userId") == self.user["id"]]

    def sim_message(self, message_id: str) -> dict[str, Any] | None:
        found = [m for m in self.stack.sim("GET", f"/_sim/users/{self.user['id']}/messages")["value"]
                 if message_id in (m["id"], m.get("immutableId"))]
        return found[0] if found else None


def error_of(response: requests.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) >= {"code", "message"}, body
    return dict(body["error"])


@pytest.fixture
def mailbox(stack: LocalStack) -> Iterator[Mailbox]:
    user = new_user(stack, "actions")
    assert connect_user(stack, user["userPrincipalName"]).status_code == 200
    box = Mailbox(stack, user)
    # The connect queues the mailbox's first delta round, which saves the account: a test
    # that changes the account itself does so after it, not in a race with it.
    accounts = TableAccountStore(stack.storage_connection)

    def first_round_done() -> bool:
        account = accounts.get(box.account_id)
        return account is not None and account.delta_link is not None

    wait_for(first_round_done, timeout=60, what="the connect's first delta round")
    yield box
    stack.sim("DELETE", "/_sim/faults")


def user_token(stack: LocalStack, user: dict[str, Any]) -> str:
    """An access token of the user's own (as the user's mail client would have one)."""
    session = browser(stack)
    settings = Settings.from_env(stack.settings)
    identity = MsalIdentity(settings, http_client=session)
    flow = identity.start_auth_code_flow(settings.scopes, settings.redirect_uri, user["userPrincipalName"])
    fields = read_form(session.get(flow["auth_uri"], timeout=30).text).fields
    return identity.redeem_auth_code(flow, fields).access_token


def create_folder(stack: LocalStack, token: str, name: str, parent: str = "msgfolderroot") -> dict[str, Any]:
    response = browser(stack).post(
        f"{stack.graphsim_url}/v1.0/me/mailFolders/{parent}/childFolders",
        json={"displayName": name}, headers={"Authorization": f"Bearer {token}"}, timeout=15,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


# --- the routes ----------------------------------------------------------------------------


def test_a_message_reads_with_body_attachments_and_folder(mailbox: Mailbox) -> None:
    message_id = mailbox.send(
        "Quarterly report",
        body="<p>Numbers are <b>up</b></p>",
        bodyContentType="html",
        toRecipients=["alice@contoso.test", "bob@contoso.test"],
        ccRecipients=["carol@contoso.test"],
        attachments=[{"name": "q3.csv", "contentType": "text/csv", "contentBytes": base64.b64encode(b"a,b\n1,2\n").decode()}],
    )
    response = mailbox.call("GET", f"/messages/{quote(message_id, safe='')}")
    assert response.status_code == 200, response.text
    message = response.json()
    assert message["id"] == message_id and message["subject"] == "Quarterly report"
    assert message["toRecipients"] == ["alice@contoso.test", "bob@contoso.test"]
    assert message["ccRecipients"] == ["carol@contoso.test"] and message["from"] == "sender@fabrikam.test"
    assert message["body"]["contentType"] == "html" and "<b>up</b>" in message["body"]["content"]
    assert message["folder"] == "inbox" and message["parentFolderId"]
    assert message["hasAttachments"] is True
    [attachment] = message["attachments"]
    assert attachment["name"] == "q3.csv" and attachment["contentType"] == "text/csv" and attachment["size"] > 0
    for name in ("receivedDateTime", "bodyPreview", "isRead", "importance", "categories", "flag",
                 "conversationId", "internetMessageId", "webLink"):
        assert name in message, name

    text = mailbox.call("GET", f"/messages/{quote(message_id, safe='')}", params={"bodyType": "text"}).json()
    assert text["body"]["contentType"] == "text" and "<b>" not in text["body"]["content"]
    assert "up" in text["body"]["content"]

    raw = mailbox.call("GET", f"/messages/{quote(message_id, safe='')}/attachments/{quote(attachment['id'], safe='')}")
    assert raw.status_code == 200 and raw.content == b"a,b\n1,2\n"
    assert raw.headers["Content-Type"].startswith("text/csv")
    assert raw.headers["Content-Disposition"].startswith('attachment; filename="q3.csv"')


def test_an_attachment_over_the_limit_is_413_with_a_reason(mailbox: Mailbox) -> None:
    big = base64.b64encode(b"x" * (1024 * 1024 + 10)).decode()  # the stack's MAX_ATTACHMENT_BYTES is 1 MiB
    message_id = mailbox.send("big", attachments=[{"name": "big.bin", "contentType": "application/octet-stream",
                                                   "contentBytes": big}])
    [attachment] = mailbox.call("GET", f"/messages/{quote(message_id, safe='')}").json()["attachments"]
    response = mailbox.call("GET", f"/messages/{quote(message_id, safe='')}/attachments/{quote(attachment['id'], safe='')}")
    assert response.status_code == 413
    assert error_of(response)["code"] == "too_large" and "1048576" in error_of(response)["message"]


def test_unknown_accounts_messages_and_attachments_are_404(stack: LocalStack, mailbox: Mailbox) -> None:
    message_id = mailbox.send("x")
    for response in (
        mailbox.call("GET", "/messages/AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A-no-such-message"),
        mailbox.call("GET", f"/messages/{quote(message_id, safe='')}/attachments/AAMkno-such-attachment"),
        requests.get(f"{stack.devhost_url}/api/accounts/nobody.tenant/messages/x",
                     headers=function_key_headers(stack), timeout=30),
    ):
        assert response.status_code == 404, response.text
        assert error_of(response)["code"] == "not_found"


def test_the_routes_need_the_function_key(stack: LocalStack, mailbox: Mailbox) -> None:
    for method, path in (("GET", "/messages"), ("GET", "/folders"), ("DELETE", "/messages/x"),
                         ("POST", "/messages/x/move")):
        assert requests.request(method, mailbox.url(path), timeout=30).status_code == 401


def test_listing_by_folder_since_and_top_with_a_continuation(mailbox: Mailbox) -> None:
    early = mailbox.send("before")
    time.sleep(1.1)  # receivedDateTime has whole seconds
    since = dt.datetime.now(dt.UTC).replace(microsecond=0)
    later = [mailbox.send(f"after {n}") for n in range(3)]
    archived = mailbox.send("in the archive", folder="archive")
    first = mailbox.call("GET", "/messages", params={"folder": "inbox", "since": since.isoformat(), "top": "2"})
    assert first.status_code == 200, first.text
    page = first.json()
    assert len(page["messages"]) == 2 and page["continuation"]
    second = mailbox.call("GET", "/messages", params={"continuation": page["continuation"]}).json()
    ids = [m["id"] for m in page["messages"] + second["messages"]]
    assert sorted(ids) == sorted(later) and early not in ids and second["continuation"] is None
    assert all(m["folder"] == "inbox" for m in page["messages"])
    assert [m["id"] for m in mailbox.call("GET", "/messages", params={"folder": "archive"}).json()["messages"]] == [
        archived
    ]


@pytest.mark.parametrize("params", [{"top": "0"}, {"top": "lots"}, {"since": "last week"},
                                    {"continuation": "not-a-token"}])
def test_bad_list_parameters_are_400(mailbox: Mailbox, params: dict[str, str]) -> None:
    response = mailbox.call("GET", "/messages", params=params)
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_request"


def test_folders_list_child_folders_and_well_known_names(stack: LocalStack, mailbox: Mailbox) -> None:
    token = user_token(stack, mailbox.user)
    projects = create_folder(stack, token, "Projects")
    apollo = create_folder(stack, token, "Apollo", projects["id"])
    mailbox.send("unread one")
    response = mailbox.call("GET", "/folders")
    assert response.status_code == 200, response.text
    folders = {f["id"]: f for f in response.json()}
    assert folders[apollo["id"]]["parentFolderId"] == projects["id"]
    assert "wellKnownName" not in folders[apollo["id"]]
    [inbox] = [f for f in folders.values() if f.get("wellKnownName") == "inbox"]
    assert inbox["totalItemCount"] >= 1 and inbox["unreadItemCount"] >= 1
    assert {"archive", "deleteditems", "junkemail"} <= {f.get("wellKnownName") for f in folders.values()}


def test_a_move_keeps_the_message_id(stack: LocalStack, mailbox: Mailbox) -> None:
    token = user_token(stack, mailbox.user)
    receipts = create_folder(stack, token, "Receipts")
    message_id = mailbox.send("file me")
    moved = mailbox.call("POST", f"/messages/{quote(message_id, safe='')}/move", json={"destination": "archive"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["id"] == message_id and moved.json()["folder"] == "archive"
    again = mailbox.call("POST", f"/messages/{quote(message_id, safe='')}/move", json={"destination": receipts["id"]})
    assert again.json()["id"] == message_id and again.json()["parentFolderId"] == receipts["id"]
    read = mailbox.call("GET", f"/messages/{quote(message_id, safe='')}").json()
    assert read["parentFolderId"] == receipts["id"]
    move_requests = [r for r in mailbox.graph_requests() if r["path"].endswith("/move")]
    assert move_requests and all(r["status"] == 201 for r in move_requests)


@pytest.mark.parametrize("body", [{}, {"destination": ""}, {"destination": 42}, ["archive"]])
def test_a_move_without_a_usable_destination_is_400(mailbox: Mailbox, body: Any) -> None:
    message_id = mailbox.send("x")
    response = mailbox.call("POST", f"/messages/{quote(message_id, safe='')}/move", json=body)
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_request"


def test_a_move_to_a_folder_that_does_not_exist_is_a_4xx(mailbox: Mailbox) -> None:
    message_id = mailbox.send("x")
    response = mailbox.call("POST", f"/messages/{quote(message_id, safe='')}/move",
                            json={"destination": "AAMkno-such-folder"})
    assert response.status_code in (400, 404) and error_of(response)["code"] in ("invalid_request", "not_found")


def test_patch_marks_read_categorizes_and_flags(mailbox: Mailbox) -> None:
    message_id = mailbox.send("todo")
    response = mailbox.call("PATCH", f"/messages/{quote(message_id, safe='')}",
                            json={"isRead": True, "categories": ["Red category"], "flag": {"flagStatus": "flagged"}})
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["isRead"] is True and changed["categories"] == ["Red category"]
    assert changed["flag"]["flagStatus"] == "flagged" and changed["id"] == message_id
    stored = mailbox.sim_message(message_id)
    assert stored is not None and stored["isRead"] is True


@pytest.mark.parametrize("body", [b"{not json", b"{}", b'{"subject": "new"}', b'{"isRead": "yes"}'])
def test_a_bad_patch_is_400(mailbox: Mailbox, body: bytes) -> None:
    message_id = mailbox.send("x")
    response = mailbox.call("PATCH", f"/messages/{quote(message_id, safe='')}", data=body,
                            headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_request"


def test_delete_goes_to_deleted_items_and_permanent_delete_removes(mailbox: Mailbox) -> None:
    soft = mailbox.send("soft")
    hard = mailbox.send("hard")
    assert mailbox.call("DELETE", f"/messages/{quote(soft, safe='')}").status_code == 204
    assert mailbox.call("GET", f"/messages/{quote(soft, safe='')}").json()["folder"] == "deleteditems"
    assert mailbox.call("DELETE", f"/messages/{quote(hard, safe='')}", params={"permanent": "true"}).status_code == 204
    assert mailbox.call("GET", f"/messages/{quote(hard, safe='')}").status_code == 404
    assert mailbox.sim_message(hard) is None
    assert mailbox.call("DELETE", f"/messages/{quote(soft, safe='')}", params={"permanent": "maybe"}).status_code == 400


def test_a_read_only_grant_reads_but_actions_are_403_missing_scope(stack: LocalStack, mailbox: Mailbox) -> None:
    # An account connected before MAIL_ACTIONS_ENABLED: its grant is read-only.
    store = TableAccountStore(stack.storage_connection)
    account = store.get(mailbox.account_id)
    assert account is not None and "Mail.ReadWrite" in account.scopes
    account.scopes = ("User.Read", "Mail.Read")
    store.save(account)
    message_id = mailbox.send("look only")
    assert mailbox.call("GET", f"/messages/{quote(message_id, safe='')}").status_code == 200
    for method, path, body in (
        ("POST", f"/messages/{quote(message_id, safe='')}/move", {"destination": "archive"}),
        ("PATCH", f"/messages/{quote(message_id, safe='')}", {"isRead": True}),
        ("DELETE", f"/messages/{quote(message_id, safe='')}", None),
    ):
        response = mailbox.call(method, path, json=body)
        assert response.status_code == 403 and error_of(response)["code"] == "missing_scope"
    assert mailbox.sim_message(message_id)["parentFolderId"] == mailbox.call(
        "GET", f"/messages/{quote(message_id, safe='')}").json()["parentFolderId"]


def test_an_account_that_must_sign_in_again_is_409(stack: LocalStack, mailbox: Mailbox) -> None:
    store = TableAccountStore(stack.storage_connection)
    account = store.get(mailbox.account_id)
    assert account is not None
    account.status = AccountStatus.REAUTH_REQUIRED
    store.save(account)
    response = mailbox.call("GET", "/messages")
    assert response.status_code == 409 and error_of(response)["code"] == "reauth_required"


def test_graph_throttling_past_the_retries_is_429_with_retry_after(stack: LocalStack, mailbox: Mailbox) -> None:
    message_id = mailbox.send("x")
    stack.sim("PUT", "/_sim/faults", json={"throttleRate": 1.0})
    response = mailbox.call("GET", f"/messages/{quote(message_id, safe='')}")
    stack.sim("DELETE", "/_sim/faults")
    assert response.status_code == 429 and error_of(response)["code"] == "throttled"
    assert int(response.headers["Retry-After"]) >= 1


# --- the command queue ------------------------------------------------------------------------


def command_queue(stack: LocalStack) -> QueueClient:
    client = QueueClient.from_connection_string(
        stack.storage_connection, "mail-commands", message_encode_policy=TextBase64EncodePolicy()
    )
    try:
        client.create_queue()
    except Exception:  # noqa: BLE001,S110 - it exists already
        pass
    return client


class Results:
    """Everything read from ``mail-command-results``, kept for every test of the run."""

    seen: dict[str, dict[str, Any]] = {}

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack

    def of(self, command_ids: list[str], timeout: float = 30.0) -> list[dict[str, Any]]:
        def ready() -> list[dict[str, Any]] | None:
            for event in read_queue(self.stack, "mail-command-results"):
                if isinstance(event, dict):
                    Results.seen[f"{event['subject']}|{event['id']}|{len(Results.seen)}"] = event
            found = [e for e in Results.seen.values() if e["subject"] in command_ids]
            return found if {e["subject"] for e in found} >= set(command_ids) else None

        return wait_for(ready, timeout=timeout, interval=0.2, what=f"results of {len(command_ids)} commands")


def enqueue(stack: LocalStack, commands: list[dict[str, Any] | str]) -> None:
    queue = command_queue(stack)
    for item in commands:
        queue.send_message(item if isinstance(item, str) else json.dumps(item))


def test_a_command_runs_once_even_when_sent_twice(stack: LocalStack, mailbox: Mailbox) -> None:
    message_id = mailbox.send("file me by queue")
    command = {"id": f"cmd-{uuid.uuid4()}", "accountId": mailbox.account_id, "messageId": message_id,
               "action": "move", "destination": "archive"}
    enqueue(stack, [command])
    [result] = Results(stack).of([command["id"]])
    assert result["type"] == "com.m365connector.command.succeeded"
    assert result["data"] == {"commandId": command["id"], "accountId": mailbox.account_id,
                              "messageId": message_id, "action": "move"}
    stack.sim("DELETE", "/_sim/requests")
    mailbox.call("POST", f"/messages/{quote(message_id, safe='')}/move", json={"destination": "inbox"})
    enqueue(stack, [command])  # replayed
    time.sleep(3)
    Results(stack).of([command["id"]])
    assert len([e for e in Results.seen.values() if e["subject"] == command["id"]]) == 1
    moves = [r for r in mailbox.graph_requests() if r["path"].endswith("/move")]
    moves += [i for r in mailbox.graph_requests() for i in r.get("requests", []) if i["path"].endswith("/move")]
    assert len(moves) == 1  # the route's move back to the inbox; the replayed command sent nothing
    assert mailbox.call("GET", f"/messages/{quote(message_id, safe='')}").json()["folder"] == "inbox"


def test_malformed_commands_and_unknown_accounts_get_failed_results(stack: LocalStack, mailbox: Mailbox) -> None:
    bad_action = {"id": f"cmd-{uuid.uuid4()}", "accountId": mailbox.account_id, "messageId": "m", "action": "burn"}
    unknown = {"id": f"cmd-{uuid.uuid4()}", "accountId": "nobody.tenant", "messageId": "m", "action": "delete"}
    enqueue(stack, [bad_action, unknown])
    by_id = {e["subject"]: e for e in Results(stack).of([bad_action["id"], unknown["id"]])}
    assert by_id[bad_action["id"]]["type"] == "com.m365connector.command.failed"
    assert by_id[bad_action["id"]]["data"]["error"]["code"] == "invalid_command"
    assert by_id[unknown["id"]]["data"]["error"]["code"] == "not_found"
    poison = QueueClient.from_connection_string(stack.storage_connection, "mail-commands-poison")
    try:
        assert not list(poison.peek_messages(max_messages=32))
    except Exception as error:  # noqa: BLE001 - no poison queue at all is fine too
        assert "QueueNotFound" in str(error)


def test_commands_ride_out_throttling(stack: LocalStack, mailbox: Mailbox) -> None:
    ids = [mailbox.send(f"throttled {n}") for n in range(12)]
    stack.sim("DELETE", "/_sim/requests")
    stack.sim("PUT", "/_sim/faults", json={"throttleRate": 0.3, "seed": 11})
    commands = [{"id": f"cmd-{uuid.uuid4()}", "accountId": mailbox.account_id, "messageId": m, "action": "markRead"}
                for m in ids]
    enqueue(stack, commands)
    results = Results(stack).of([c["id"] for c in commands], timeout=60)
    stack.sim("DELETE", "/_sim/faults")
    assert all(r["type"].endswith(".succeeded") for r in results), [r["data"] for r in results]
    statuses = [inner["status"] for r in mailbox.graph_requests() for inner in r.get("requests", [])]
    statuses += [r["status"] for r in mailbox.graph_requests()]
    assert 429 in statuses  # throttling really happened, and was waited out
    assert all(mailbox.sim_message(m)["isRead"] for m in ids)


def test_200_commands_for_one_mailbox_finish_within_30_s_in_batches(stack: LocalStack, mailbox: Mailbox) -> None:
    ids = [mailbox.send(f"bulk {n}") for n in range(200)]
    stack.sim("DELETE", "/_sim/requests")
    commands = [{"id": f"cmd-{uuid.uuid4()}", "accountId": mailbox.account_id, "messageId": m, "action": "move",
                 "destination": "archive"} for m in ids]
    started = time.monotonic()
    enqueue(stack, commands)
    results = Results(stack).of([c["id"] for c in commands], timeout=60)
    elapsed = time.monotonic() - started
    assert all(r["type"].endswith(".succeeded") for r in results)
    assert elapsed < 30, f"200 commands took {elapsed:.1f}s"
    # The moves' notifications start delta rounds too, and the sync reads where the mail that
    # left the inbox went (batches of GETs): those are the sync's, not the commands'.
    def the_syncs(request: dict[str, Any]) -> bool:
        inner = request.get("requests") or []
        return "/delta" in request["path"] or (bool(inner) and all(i["method"] == "GET" for i in inner))

    actions = [r for r in mailbox.graph_requests() if not the_syncs(r)]
    batches = [r for r in actions if r["path"].endswith("$batch")]
    assert all(len(b["requests"]) <= 20 for b in batches), [len(b["requests"]) for b in batches]
    assert sum(len(b["requests"]) for b in batches) == 200 and len(actions) == len(batches)
    assert len(batches) <= 50, [len(b["requests"]) for b in batches]  # one by one: 200 requests
    archive = {m["id"] for m in mailbox.call("GET", "/messages", params={"folder": "archive", "top": "100"}).json()[
        "messages"]}
    assert len(archive) == 100 and archive <= set(ids)


# --- the command line -------------------------------------------------------------------------


def cli(stack: LocalStack, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.settings, "REQUESTS_CA_BUNDLE": str(stack.ca_file)}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "messages", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_an_operator_lists_shows_moves_and_deletes_mail_from_the_command_line(
    stack: LocalStack, mailbox: Mailbox
) -> None:
    first = mailbox.send("first by cli")
    second = mailbox.send("second by cli")
    listed = cli(stack, "list", mailbox.account_id, "--top", "1", "--all")
    assert listed.returncode == 0, listed.stderr
    assert {first, second} <= {m["id"] for m in json.loads(listed.stdout)["messages"]}
    shown = cli(stack, "show", mailbox.account_id, first, "--body-type", "text")
    assert shown.returncode == 0 and json.loads(shown.stdout)["subject"] == "first by cli"
    moved = cli(stack, "move", mailbox.account_id, first, "archive")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["id"] == first and json.loads(moved.stdout)["folder"] == "archive"
    assert cli(stack, "delete", mailbox.account_id, second, "--permanent").returncode == 0
    assert mailbox.sim_message(second) is None
    missing = cli(stack, "show", mailbox.account_id, second)
    assert missing.returncode == 1 and "error" in missing.stderr
