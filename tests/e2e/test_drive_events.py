"""OneDrive changes as a consumer reads them from queue ``drive-events``, through the whole
local stack: the document tool's account (``GRAPH_SCOPES=User.Read Files.ReadWrite.All``,
no mail), its drive subscription's notifications, the drive delta rounds, and the files API
for the content; exactly once under dropped, doubled and reordered notifications and a
delta link Graph no longer serves (410)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.data.tables import TableClient

from devstack.stack import LocalStack
from tests.conftest import DOCUMENT_TOOL_SETTINGS
from tests.support.stack import connect_user, function_key_headers, new_user, read_queue, wait_for

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
QUIET = 3.0  # seconds to wait for events that must NOT come
TYPE = "com.microsoft.graph.driveItem."


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack.on_free_ports(tmp_path_factory.mktemp("drive-events"), extra_settings=DOCUMENT_TOOL_SETTINGS) as running:
        yield running


class DocumentTool:
    """A connected simulator user, as the document tool sees it: its drive events and the
    files API; the user's own edits go through the simulator (as in the browser)."""

    seen: list[dict[str, Any]] = []

    def __init__(self, stack: LocalStack, user: dict[str, Any]) -> None:
        self.stack, self.user = stack, user
        self.account_id = f"{user['id']}.{user['tenantId']}"
        self.files = f"{stack.devhost_url}/api/accounts/{self.account_id}/drive"
        self.http = requests.Session()
        self.http.headers.update(function_key_headers(stack))

    def events(self) -> list[dict[str, Any]]:
        DocumentTool.seen.extend(e for e in read_queue(self.stack, "drive-events") if isinstance(e, dict))
        return [e for e in DocumentTool.seen if e.get("data", {}).get("accountId") == self.account_id]

    def of(self, item_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["subject"] == item_id]

    def wait(self, change: str, item_id: str, *, count: int = 1, timeout: float = 60.0) -> dict[str, Any]:
        found = wait_for(lambda: [e for e in self.of(item_id) if e["type"] == TYPE + change][count - 1:],
                         timeout=timeout, what=f"{change} of {item_id}")
        return found[0]

    def subscriptions(self) -> list[dict[str, Any]]:
        return [s for s in self.stack.sim("GET", "/_sim/subscriptions")["value"] if s["userId"] == self.user["id"]]

    def first_round_done(self) -> bool:
        """The drive's deltaLink is saved: a row ``d...`` in the drive's ledger partition."""
        table = TableClient.from_connection_string(self.stack.storage_connection, "mailledger")
        try:
            rows = table.query_entities("PartitionKey eq @pk", parameters={"pk": f"{self.account_id}|drive"})
            return any(row["RowKey"].startswith("d") and row.get("Link") for row in rows)
        except Exception:  # noqa: BLE001 - the table is made by the first write
            return False

    # what the user does in the browser
    def seed(self, path: str, content: bytes) -> str:
        import base64

        body = {"path": path, "contentBase64": base64.b64encode(content).decode()}
        return str(self.stack.sim("POST", f"/_sim/users/{self.user['id']}/drive/items", json=body)["id"])

    def edit(self, item_id: str, content: bytes) -> None:
        self.stack.sim("PUT", f"/_sim/users/{self.user['id']}/drive/items/{item_id}/content", data=content)

    def rename(self, item_id: str, name: str) -> None:
        self.stack.sim("PATCH", f"/_sim/users/{self.user['id']}/drive/items/{item_id}", json={"name": name})

    def delete(self, item_id: str) -> None:
        self.stack.sim("DELETE", f"/_sim/users/{self.user['id']}/drive/items/{item_id}")


def connected(stack: LocalStack, prefix: str, before: Any = None) -> DocumentTool:
    user = new_user(stack, prefix)
    tool = DocumentTool(stack, user)
    if before is not None:
        before(tool)
        time.sleep(1.1)  # what was there comes from an earlier second than the connect (Graph's times)
    assert connect_user(stack, user["userPrincipalName"]).status_code == 200
    wait_for(tool.subscriptions, what="the drive subscription")
    wait_for(tool.first_round_done, timeout=60, what="the drive's first round")
    return tool


@pytest.fixture(autouse=True)
def _no_faults_after(stack: LocalStack) -> Iterator[None]:
    yield
    stack.sim("DELETE", "/_sim/faults")


def content_of(size: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 256 for i in range(size))


def test_the_document_tools_flow_upload_edit_rename_delete(stack: LocalStack) -> None:
    tool = connected(stack, "writer")
    [subscription] = tool.subscriptions()  # a drive subscription, and no mail subscription
    assert subscription["resource"] == "/me/drive/root" and subscription["changeType"] == "updated"

    document = content_of(6 * MB, seed=1)
    uploaded = tool.http.put(f"{tool.files}/root:/Contracts/lease.docx:/content", data=document, timeout=120)
    assert uploaded.status_code == 201, uploaded.text
    item_id = uploaded.json()["id"]
    assert [u for u in stack.sim("GET", f"/_sim/users/{tool.user['id']}/drive/uploads")["value"]]  # a session
    created = tool.wait("created", item_id)["data"]
    assert created["path"] == "/Contracts/lease.docx" and created["size"] == len(document)
    assert created["contentChanged"] is True and created["isFolder"] is False

    edited = content_of(6 * MB + 123, seed=2)
    tool.edit(item_id, edited)  # the user edits the document in the browser
    update = tool.wait("updated", item_id)
    assert update["data"]["contentChanged"] is True and update["data"]["size"] == len(edited)
    assert update["data"]["cTag"] != created["cTag"] and update["data"]["lastModifiedBy"] == tool.user["displayName"]
    downloaded = tool.http.get(f"{tool.files}/items/{update['data']['itemId']}/content", timeout=120)
    assert downloaded.status_code == 200 and downloaded.content == edited

    tool.rename(item_id, "lease signed.docx")
    renamed = tool.wait("updated", item_id, count=2)["data"]
    assert renamed["contentChanged"] is False and renamed["name"] == "lease signed.docx"
    assert renamed["path"] == "/Contracts/lease signed.docx" and renamed["cTag"] == update["data"]["cTag"]

    tool.delete(item_id)
    deleted = tool.wait("deleted", item_id)
    assert deleted["data"]["itemId"] == item_id
    # Graph's delta tells only the ids of a deleted item: its name and path as last published.
    assert (deleted["data"]["name"], deleted["data"]["path"]) == ("lease signed.docx", "/Contracts/lease signed.docx")
    time.sleep(QUIET)
    assert [e["type"].removeprefix(TYPE) for e in tool.of(item_id)] == ["created", "updated", "updated", "deleted"]
    assert all(e["specversion"] == "1.0" and e["source"] == f"/accounts/{tool.account_id}/drive"
               for e in tool.of(item_id))


def test_thirty_changes_under_dropped_doubled_reordered_notifications_and_a_410_are_thirty_events(
    stack: LocalStack,
) -> None:
    history: list[str] = []

    def seed_history(tool: DocumentTool) -> None:
        history.extend(tool.seed(f"h{n:02d}.txt", f"history {n}".encode()) for n in range(20))

    tool = connected(stack, "busy", before=seed_history)
    edited, renamed = history[:10], history[10:]
    stack.sim("PUT", "/_sim/faults", json={"dropRate": 0.3, "duplicateRate": 0.3, "reorder": True, "seed": 7})
    changes: list[tuple[str, Any]] = []
    for n in range(10):
        changes.append(("create", n))
        changes.append(("edit", edited[n]))
        changes.append(("rename", renamed[n]))
    created: list[str] = []
    for number, (kind, what) in enumerate(changes):
        if number == 15:
            stack.sim("POST", f"/_sim/users/{tool.user['id']}/drive/delta/reset")  # every link answers 410 now
        if kind == "create":
            created.append(tool.seed(f"new{what:02d}.txt", f"new {what}".encode()))
        elif kind == "edit":
            tool.edit(what, f"edited {what}".encode())
        else:
            tool.rename(what, f"renamed-{what}.txt")
        time.sleep(0.15)  # apart from the simulator's 50 ms coalescing: a notification each
    time.sleep(QUIET)
    stack.sim("DELETE", "/_sim/faults")
    # A dropped notification is lost for good (Graph does not deliver it later): the next
    # change's notification brings its round, which reads everything since the last link.
    flush = tool.seed("flush.txt", b"flush")
    tool.wait("created", flush)
    wait_for(lambda: all(tool.of(i) for i in [*created, *edited, *renamed]), timeout=60, what="one event per change")
    time.sleep(QUIET)

    [subscription] = tool.subscriptions()
    deliveries = [d for d in stack.sim("GET", "/_sim/deliveries")["value"] if subscription["id"] in d["subscriptionIds"]]
    assert any(d["outcome"] == "dropped" for d in deliveries)  # the faults were met
    served = stack.sim("GET", "/_sim/requests", params={"userId": tool.user["id"]})["value"]
    assert any(r["status"] == 410 and "/drive/root/delta" in r["path"] for r in served)  # the 410 was met
    events = tool.events()
    assert len(events) == 31  # the thirty changes, and the flush
    assert len({e["id"] for e in events}) == 31
    for item_id in created:
        assert [(e["type"].removeprefix(TYPE), e["data"]["contentChanged"]) for e in tool.of(item_id)] == [("created", True)]
    for item_id in edited:
        assert [(e["type"].removeprefix(TYPE), e["data"]["contentChanged"]) for e in tool.of(item_id)] == [("updated", True)]
    for item_id in renamed:
        [event] = tool.of(item_id)
        assert (event["type"].removeprefix(TYPE), event["data"]["contentChanged"]) == ("updated", False)
        assert event["data"]["name"] == f"renamed-{item_id}.txt"
