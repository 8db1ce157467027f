"""Mail actions in the core (shared/mail_actions.py) over the fake Graph mailbox."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from shared import mail_actions
from shared.errors import (
    GraphError,
    GraphUnauthorizedError,
    InvalidInputError,
    MissingScopeError,
    NotFoundError,
    ReauthRequiredError,
)
from shared.models import Account, AccountStatus
from tests.fakes import EPOCH, make_services
from tests.mail_fakes import FakeMailCommandLog, FakeMailGraph

ACCOUNT = "00000000-0000-0000-0000-00000000a11c.tenant"
READ_WRITE = ("User.Read", "Mail.ReadWrite")


def services_with(scopes: tuple[str, ...] = READ_WRITE, status: AccountStatus = AccountStatus.ACTIVE) -> Any:
    graph = FakeMailGraph()
    services: Any = make_services(real_tokens=False, graph=graph, command_log=FakeMailCommandLog())
    services.accounts.save(
        Account(ACCOUNT, "tenant", "user", "alice@contoso.test", scopes=scopes, status=status, connected_at=EPOCH)
    )
    return services


def test_a_message_reads_with_its_body_attachments_and_well_known_folder() -> None:
    services = services_with()
    sent = services.graph.add_message(ACCOUNT, "Invoice", attachments=[("invoice.pdf", "application/pdf", b"%PDF")])
    message = mail_actions.get_message(services, ACCOUNT, sent["id"])
    assert message["id"] == sent["id"] and message["subject"] == "Invoice"
    assert message["from"] == "sender@fabrikam.test" and message["toRecipients"] == ["me@contoso.test"]
    assert message["body"]["contentType"] == "html" and "<p>" in message["body"]["content"]
    assert message["folder"] == "inbox" and message["parentFolderId"] == sent["parentFolderId"]
    assert message["hasAttachments"] is True
    [attachment] = message["attachments"]
    assert set(attachment) == {"id", "name", "contentType", "size"}
    assert attachment["name"] == "invoice.pdf" and attachment["size"] == 4
    for name in ("isRead", "importance", "categories", "flag", "conversationId", "internetMessageId", "webLink",
                 "receivedDateTime", "bodyPreview", "ccRecipients"):
        assert name in message


def test_the_body_comes_as_text_when_asked_and_a_bad_body_type_is_refused() -> None:
    services = services_with()
    sent = services.graph.add_message(ACCOUNT, "Plain", body_html="<p>Hello <b>there</b></p>")
    message = mail_actions.get_message(services, ACCOUNT, sent["id"], body_type="text")
    assert message["body"] == {"contentType": "text", "content": "Hello there"}
    with pytest.raises(InvalidInputError, match="bodyType"):
        mail_actions.get_message(services, ACCOUNT, sent["id"], body_type="rtf")


def test_well_known_folder_ids_are_looked_up_once_per_mailbox_in_one_batch() -> None:
    services = services_with()
    first = services.graph.add_message(ACCOUNT, "one")
    second = services.graph.add_message(ACCOUNT, "two")
    mail_actions.get_message(services, ACCOUNT, first["id"])
    mail_actions.get_message(services, ACCOUNT, second["id"])
    assert len(services.graph.batches) == 1
    assert {r.url.split("?")[0].rsplit("/", 1)[1] for r in services.graph.batches[0]} >= {"inbox", "archive"}


def test_unknown_message_account_and_reauth_are_told_apart() -> None:
    services = services_with()
    with pytest.raises(NotFoundError):
        mail_actions.get_message(services, ACCOUNT, "AAkALg-no-such-message")
    with pytest.raises(NotFoundError):
        mail_actions.get_message(services, "nobody.tenant", "AAkALg-x")
    blocked = services_with(status=AccountStatus.REAUTH_REQUIRED)
    with pytest.raises(ReauthRequiredError):
        mail_actions.list_folders(blocked, ACCOUNT)
    assert blocked.graph.mail_calls() == 0


def test_listing_pages_newest_first_with_since_and_a_continuation() -> None:
    services = services_with()
    for n in range(5):
        services.graph.add_message(ACCOUNT, f"mail {n}", received=EPOCH + dt.timedelta(minutes=n))
    services.graph.add_message(ACCOUNT, "archived", folder="archive", received=EPOCH + dt.timedelta(hours=1))
    since = EPOCH + dt.timedelta(minutes=1)
    page, continuation = mail_actions.list_messages(services, ACCOUNT, folder="inbox", since=since, top=3)
    assert [m["subject"] for m in page] == ["mail 4", "mail 3", "mail 2"]
    assert "body" not in page[0] and page[0]["folder"] == "inbox"
    assert continuation is not None and "graph.example.test" not in continuation
    rest, end = mail_actions.list_messages(services, ACCOUNT, continuation=continuation)
    assert [m["subject"] for m in rest] == ["mail 1"] and end is None
    archived, _ = mail_actions.list_messages(services, ACCOUNT, folder="archive")
    assert [m["subject"] for m in archived] == ["archived"]


@pytest.mark.parametrize("top", ["0", "101", "ten"])
def test_a_bad_top_is_refused(top: str) -> None:
    with pytest.raises(InvalidInputError, match="top"):
        mail_actions.check_top(top)


def test_a_bad_since_or_continuation_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="since"):
        mail_actions.check_since("yesterday")
    assert mail_actions.check_since("2026-11-20T12:00:00Z") == EPOCH
    with pytest.raises(InvalidInputError, match="continuation"):
        mail_actions.list_messages(services_with(), ACCOUNT, continuation="%%%")


def test_folders_include_child_folders_and_well_known_names_only_where_they_are() -> None:
    services = services_with()
    projects = services.graph.add_folder(ACCOUNT, "Projects")
    services.graph.add_folder(ACCOUNT, "Apollo", parent=projects["id"])
    services.graph.add_folder(ACCOUNT, "Receipts", parent="inbox")
    services.graph.add_message(ACCOUNT, "unread")
    folders = {f["displayName"]: f for f in mail_actions.list_folders(services, ACCOUNT)}
    assert folders["Apollo"]["parentFolderId"] == projects["id"] and "wellKnownName" not in folders["Apollo"]
    assert folders["Receipts"]["parentFolderId"] == folders["Inbox"]["id"]
    assert folders["Inbox"]["wellKnownName"] == "inbox"
    assert folders["Inbox"]["totalItemCount"] == 1 and folders["Inbox"]["unreadItemCount"] == 1
    assert set(folders["Projects"]) >= {"id", "displayName", "parentFolderId", "totalItemCount", "unreadItemCount"}


def test_a_move_keeps_the_id_and_lands_in_the_named_folder() -> None:
    services = services_with()
    sent = services.graph.add_message(ACCOUNT, "file me")
    receipts = services.graph.add_folder(ACCOUNT, "Receipts")
    moved = mail_actions.move_message(services, ACCOUNT, sent["id"], "archive")
    assert moved["id"] == sent["id"] and moved["folder"] == "archive"
    moved = mail_actions.move_message(services, ACCOUNT, sent["id"], receipts["id"])
    assert moved["folder"] == receipts["id"] and moved["parentFolderId"] == receipts["id"]
    assert mail_actions.get_message(services, ACCOUNT, sent["id"])["parentFolderId"] == receipts["id"]


def test_a_move_without_a_destination_is_refused_before_graph() -> None:
    services = services_with()
    sent = services.graph.add_message(ACCOUNT, "x")
    for destination in (None, "", 7):
        with pytest.raises(InvalidInputError, match="destination"):
            mail_actions.move_message(services, ACCOUNT, sent["id"], destination)
    with pytest.raises(GraphError) as caught:
        mail_actions.move_message(services, ACCOUNT, sent["id"], "no-such-folder")
    assert caught.value.status == 400


def test_changes_set_read_categories_and_flag() -> None:
    services = services_with()
    sent = services.graph.add_message(ACCOUNT, "todo")
    changed = mail_actions.update_message(
        services, ACCOUNT, sent["id"], {"isRead": True, "categories": ["Red"], "flag": {"flagStatus": "flagged"}}
    )
    assert changed["isRead"] is True and changed["categories"] == ["Red"]
    assert changed["flag"] == {"flagStatus": "flagged"}


@pytest.mark.parametrize(
    "body, reason",
    [
        ({}, "nothing to change"),
        ({"subject": "x"}, "only isRead"),
        ({"isRead": "yes"}, "isRead"),
        ({"categories": "Red"}, "categories"),
        ({"flag": {"flagStatus": "maybe"}}, "flagStatus"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_changes_are_refused_with_the_reason(body: Any, reason: str) -> None:
    services = services_with()
    sent = services.graph.add_message(ACCOUNT, "todo")
    with pytest.raises(InvalidInputError, match=reason):
        mail_actions.update_message(services, ACCOUNT, sent["id"], body)


def test_delete_moves_to_deleted_items_and_permanent_delete_removes() -> None:
    services = services_with()
    soft = services.graph.add_message(ACCOUNT, "soft")
    hard = services.graph.add_message(ACCOUNT, "hard")
    mail_actions.delete_message(services, ACCOUNT, soft["id"])
    assert mail_actions.get_message(services, ACCOUNT, soft["id"])["folder"] == "deleteditems"
    mail_actions.delete_message(services, ACCOUNT, hard["id"], permanent=True)
    with pytest.raises(NotFoundError):
        mail_actions.get_message(services, ACCOUNT, hard["id"])


def test_a_read_only_grant_reads_but_is_refused_actions_before_any_graph_call() -> None:
    services = services_with(scopes=("User.Read", "Mail.Read"))
    sent = services.graph.add_message(ACCOUNT, "look, don't touch")
    assert mail_actions.get_message(services, ACCOUNT, sent["id"])["id"] == sent["id"]
    calls = services.graph.mail_calls()
    for act in (
        lambda: mail_actions.move_message(services, ACCOUNT, sent["id"], "archive"),
        lambda: mail_actions.update_message(services, ACCOUNT, sent["id"], {"isRead": True}),
        lambda: mail_actions.delete_message(services, ACCOUNT, sent["id"]),
    ):
        with pytest.raises(MissingScopeError) as caught:
            act()
        assert caught.value.scope == "Mail.ReadWrite"
    assert services.graph.mail_calls() == calls


def test_a_403_from_graph_is_a_missing_scope() -> None:
    services = services_with(scopes=())  # nothing recorded: Graph decides
    services.graph.granted[ACCOUNT] = {"Mail.Read"}
    sent = services.graph.add_message(ACCOUNT, "x")
    with pytest.raises(MissingScopeError):
        mail_actions.move_message(services, ACCOUNT, sent["id"], "archive")


def test_a_refused_access_token_is_replaced_once() -> None:
    services = services_with()
    sent = services.graph.add_message(ACCOUNT, "x")
    services.graph.fail["get_message"] = [GraphUnauthorizedError("InvalidAuthenticationToken", "expired")]
    assert mail_actions.get_message(services, ACCOUNT, sent["id"])["id"] == sent["id"]
    assert services.tokens.issued.count(ACCOUNT) == 2
    services.graph.fail["move_message"] = [GraphUnauthorizedError("InvalidAuthenticationToken", "x")] * 2
    with pytest.raises(GraphError) as caught:
        mail_actions.move_message(services, ACCOUNT, sent["id"], "archive")
    assert caught.value.status == 401


def test_a_message_id_with_control_characters_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="message id"):
        mail_actions.get_message(services_with(), ACCOUNT, "bad\nid")
