"""Mail events as a consumer reads them, through the whole local stack, with several watched
folders (``MAIL_FOLDERS=inbox,archive``) and the body in the event (``EVENT_BODY=text``):
the richer fields, a cut body, moves between and out of the watched folders with immutable
ids, the mailbox-wide subscription, the migration of a subscription recorded without
immutable ids. ``test_mail_events_all_folders.py`` runs ``MAIL_FOLDERS=*``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableClient, UpdateMode

from devstack.stack import LocalStack
from tests.conftest import STACK_SETTINGS
from tests.support.stack import connect_user, function_key_headers, new_user, read_queue, send_mail, wait_for

pytestmark = pytest.mark.e2e

QUIET = 2.0  # seconds to wait for events that must NOT come
BODY_MAX_BYTES = 120
SETTINGS = {
    **STACK_SETTINGS,
    "MAIL_FOLDERS": "inbox,archive",
    "EVENT_BODY": "text",
    "EVENT_BODY_MAX_BYTES": str(BODY_MAX_BYTES),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir: Path = tmp_path_factory.mktemp("mail-events")
    with LocalStack.on_free_ports(data_dir, extra_settings=SETTINGS) as running:
        yield running


class Mailbox:
    """A connected simulator user and the mail events of its account."""

    seen: list[dict[str, Any]] = []

    def __init__(self, stack: LocalStack, user: dict[str, Any]) -> None:
        self.stack, self.user = stack, user
        self.account_id = f"{user['id']}.{user['tenantId']}"

    def send(self, subject: str, **extra: Any) -> str:
        return str(send_mail(self.stack, self.user["id"], subject, **extra)["immutableId"])

    def move(self, message_id: str, folder: str) -> None:
        """The user moves the mail (in Outlook, say)."""
        self.stack.sim("PATCH", f"/_sim/users/{self.user['id']}/messages/{message_id}", json={"folder": folder})

    def events(self) -> list[dict[str, Any]]:
        Mailbox.seen.extend(e for e in read_queue(self.stack, "mail-events") if isinstance(e, dict))
        return [e for e in Mailbox.seen if e.get("data", {}).get("accountId") == self.account_id]

    def of(self, message_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["subject"] == message_id]

    def wait(self, change: str, message_id: str, timeout: float = 30.0) -> dict[str, Any]:
        kind = f"com.microsoft.graph.message.{change}"
        found = wait_for(
            lambda: [e for e in self.of(message_id) if e["type"] == kind], timeout=timeout, what=f"{change} {message_id}"
        )
        return found[0]

    def subscriptions(self) -> list[dict[str, Any]]:
        return [s for s in self.stack.sim("GET", "/_sim/subscriptions")["value"] if s["userId"] == self.user["id"]]


def first_round_done(stack: LocalStack, account_id: str) -> bool:
    import requests

    shown = requests.get(
        f"{stack.devhost_url}/api/accounts/{account_id}", headers=function_key_headers(stack), timeout=10
    )
    return shown.status_code == 200 and bool(shown.json()["lastSyncAt"])


@pytest.fixture
def mailbox(stack: LocalStack) -> Iterator[Mailbox]:
    user = new_user(stack, "events")
    assert connect_user(stack, user["userPrincipalName"]).status_code == 200
    box = Mailbox(stack, user)
    wait_for(box.subscriptions, what="the subscription")
    wait_for(lambda: first_round_done(stack, box.account_id), what="the first delta rounds")
    yield box
    stack.sim("DELETE", "/_sim/faults")


def test_several_folders_share_one_mailbox_wide_subscription_with_immutable_ids(mailbox: Mailbox) -> None:
    [subscription] = mailbox.subscriptions()
    assert subscription["resource"] == "/me/messages"
    assert subscription["immutableIds"] is True


def test_an_event_carries_what_a_consumer_acts_on_and_the_body(mailbox: Mailbox) -> None:
    message_id = mailbox.send(
        "Quarterly report",
        body="Numbers are up.",
        bodyContentType="text",
        toRecipients=["alice@contoso.test", "bob@contoso.test"],
        ccRecipients=["carol@contoso.test"],
        importance="high",
        categories=["Finance"],
        flag={"flagStatus": "flagged"},
    )
    data = mailbox.wait("created", message_id)["data"]
    assert data["messageId"] == message_id and data["folder"] == "inbox"
    assert data["toRecipients"] == ["alice@contoso.test", "bob@contoso.test"]
    assert data["ccRecipients"] == ["carol@contoso.test"]
    assert data["importance"] == "high" and data["categories"] == ["Finance"]
    assert data["flag"]["flagStatus"] == "flagged"
    assert data["bodyPreview"].startswith("Numbers are up")
    assert data["hasAttachments"] is False
    assert data["conversationId"] and data["parentFolderId"]
    assert data["body"] == {"contentType": "text", "content": "Numbers are up."}
    assert data["bodyTruncated"] is False


def test_a_body_longer_than_the_limit_is_cut_and_says_so(mailbox: Mailbox) -> None:
    long_body = "Grüße aus Zürich. " * 40  # umlauts: two bytes each in UTF-8
    message_id = mailbox.send("Long letter", body=long_body, bodyContentType="text")
    data = mailbox.wait("created", message_id)["data"]
    assert data["bodyTruncated"] is True
    content = data["body"]["content"]
    assert long_body.startswith(content)
    assert BODY_MAX_BYTES - 2 < len(content.encode("utf-8")) <= BODY_MAX_BYTES


def test_an_html_body_asked_as_text_comes_as_text(mailbox: Mailbox) -> None:
    message_id = mailbox.send("Styled", body="<p>Hello <b>there</b></p>", bodyContentType="html")
    data = mailbox.wait("created", message_id)["data"]
    assert data["body"]["contentType"] == "text"
    assert "<b>" not in data["body"]["content"] and "there" in data["body"]["content"]


def test_a_move_between_watched_folders_is_one_updated_event_with_the_same_id(mailbox: Mailbox) -> None:
    message_id = mailbox.send("to be filed")
    mailbox.wait("created", message_id)
    mailbox.move(message_id, "archive")
    moved = mailbox.wait("updated", message_id)
    assert moved["subject"] == message_id  # the immutable id survives the move
    assert moved["data"]["folder"] == "archive" and moved["data"]["previousFolder"] == "inbox"
    assert moved["source"].endswith("/mailFolders/archive")
    mailbox.move(message_id, "inbox")  # and back: the other folder's round comes first now
    back = wait_for(
        lambda: [e for e in mailbox.of(message_id) if e["data"].get("previousFolder") == "archive"],
        timeout=30, what="the move back",
    )[0]
    assert back["data"]["folder"] == "inbox" and back["type"].endswith(".updated")
    time.sleep(QUIET)
    kinds = [e["type"].rsplit(".", 1)[1] for e in mailbox.of(message_id)]
    assert kinds == ["created", "updated", "updated"]  # never a deleted plus created pair


def test_a_move_out_of_the_watched_folders_is_deleted_with_reason_moved(mailbox: Mailbox) -> None:
    moved_out = mailbox.send("not for this product")
    deleted = mailbox.send("really unwanted")
    mailbox.wait("created", moved_out)
    mailbox.wait("created", deleted)
    mailbox.move(moved_out, "junkemail")
    mailbox.stack.sim("DELETE", f"/_sim/users/{mailbox.user['id']}/messages/{deleted}")
    assert mailbox.wait("deleted", moved_out)["data"]["reason"] == "moved"
    assert mailbox.wait("deleted", deleted)["data"]["reason"] == "deleted"


def test_with_dropped_doubled_and_reordered_notifications_moves_are_published_exactly_once(
    mailbox: Mailbox,
) -> None:
    sent = [mailbox.send(f"batch {n}") for n in range(6)]
    for message_id in sent:
        mailbox.wait("created", message_id)
    mailbox.stack.sim("PUT", "/_sim/faults", json={"dropRate": 0.3, "duplicateRate": 0.5, "reorder": True, "seed": 11})
    for message_id in sent[:4]:
        mailbox.move(message_id, "archive")
    mailbox.move(sent[4], "junkemail")
    time.sleep(QUIET)
    mailbox.stack.sim("DELETE", "/_sim/faults")
    [subscription] = mailbox.subscriptions()
    mailbox.stack.sim("POST", f"/_sim/subscriptions/{subscription['id']}/lifecycle", json={"event": "missed"})
    wait_for(lambda: all(len(mailbox.of(m)) == 2 for m in sent[:5]), timeout=30, what="one event per move")
    time.sleep(QUIET)
    for message_id in sent[:4]:
        assert [(e["type"].rsplit(".", 1)[1], e["data"]["folder"]) for e in mailbox.of(message_id)] == [
            ("created", "inbox"), ("updated", "archive")
        ]
    assert [e["data"].get("reason") for e in mailbox.of(sent[4])] == [None, "moved"]
    assert len(mailbox.of(sent[5])) == 1
    events = mailbox.events()
    assert len({e["id"] for e in events}) == len(events)


def test_a_subscription_recorded_without_immutable_ids_is_recreated_with_them(mailbox: Mailbox) -> None:
    [legacy] = mailbox.subscriptions()
    table = TableClient.from_connection_string(mailbox.stack.storage_connection, "subscriptions")
    record = table.get_entity(mailbox.account_id, legacy["id"])
    record["ImmutableIds"] = False  # as a subscription created before the connector asked for them
    table.update_entity(record, mode=UpdateMode.REPLACE)
    message_id = mailbox.send("to the old subscription")
    mailbox.wait("created", message_id)
    replaced = wait_for(
        lambda: [s for s in mailbox.subscriptions() if s["id"] != legacy["id"]], timeout=30, what="a new subscription"
    )
    assert [s["id"] for s in mailbox.subscriptions()] == [replaced[0]["id"]]  # the old one deleted in Graph
    assert replaced[0]["immutableIds"] is True and replaced[0]["resource"] == "/me/messages"
    assert table.get_entity(mailbox.account_id, replaced[0]["id"])["ImmutableIds"] is True
    later = mailbox.send("to the new subscription")
    mailbox.wait("created", later)
    time.sleep(QUIET)
    assert len(mailbox.of(message_id)) == 1 and len(mailbox.of(later)) == 1
