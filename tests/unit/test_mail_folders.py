"""Watched folders (MAIL_FOLDERS): one delta per folder, moves told from deletions
(shared/mail_folders.py, shared/sync.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.config import parse_mail_folders
from shared.errors import ConfigurationError
from shared.mail_folders import subscription_resource
from shared.sync import record_initial_delta, sync_mailbox
from tests.fakes import EPOCH, make_services, make_settings
from tests.unit.pipeline_fakes import DeltaGraphApi, connected_account, events_of

AFTER = EPOCH + dt.timedelta(minutes=5)


def services_for(mail_folders: str, page_size: int = 3):
    return make_services(
        make_settings(MAIL_FOLDERS=mail_folders), real_tokens=False, graph=DeltaGraphApi(page_size=page_size)
    )


def connect(services):
    account = connected_account(services)
    auth = services.tokens.graph_auth(account)
    record_initial_delta(services, services.accounts.get(account.account_id), auth, emit_history=False)
    return account


def sync(services, account):
    return sync_mailbox(services, account.account_id, reason="notification")


def summary(services):
    return [
        (e["type"].rsplit(".", 1)[1], e["subject"], e["data"]["folder"], e["data"].get("previousFolder"),
         e["data"].get("reason"))
        for e in events_of(services)
    ]


def test_the_setting_takes_well_known_names_or_a_star() -> None:
    assert parse_mail_folders("inbox") == ("inbox",)
    assert parse_mail_folders(" Archive , inbox,archive") == ("inbox", "archive")
    assert parse_mail_folders("*") == ("*",)
    with pytest.raises(ValueError, match="unknown folder receipts"):
        parse_mail_folders("inbox,receipts")
    with pytest.raises(ConfigurationError, match="MAIL_FOLDERS"):
        make_settings(MAIL_FOLDERS="inbox,nope")
    assert make_settings().mail_folders == ("inbox",)


def test_one_folder_has_its_own_subscription_several_share_the_mailbox_wide_one() -> None:
    assert subscription_resource(("inbox",)) == "/me/mailFolders('inbox')/messages"
    assert subscription_resource(("archive",)) == "/me/mailFolders('archive')/messages"
    assert subscription_resource(("inbox", "archive")) == "/me/messages"
    assert subscription_resource(("*",)) == "/me/messages"


def test_each_watched_folder_has_its_own_delta_and_link() -> None:
    services = services_for("inbox,archive")
    account = connect(services)
    graph = services.graph
    assert graph.delta_folders == ["inbox", "archive"]
    in_archive = graph.folder(account.account_id, "archive").deliver("filed by a rule", AFTER)
    result = sync(services, account)
    assert result.created == 1
    assert summary(services) == [("created", in_archive, "archive", None, None)]
    assert services.accounts.get(account.account_id).delta_link is not None
    assert set(services.folder_deltas.links(account.account_id, account.connected_at)) == {"archive"}


# The inbox's round runs first: a move out of it meets the source first, a move into it
# the destination first.
@pytest.mark.parametrize(("source", "destination"), [("inbox", "archive"), ("archive", "inbox")])
def test_a_move_between_watched_folders_is_one_updated_event_with_the_same_id(source, destination) -> None:
    services = services_for("inbox,archive")
    account = connect(services)
    message_id = services.graph.folder(account.account_id, source).deliver("to be filed", AFTER)
    sync(services, account)
    services.graph.move(account.account_id, message_id, source, destination)
    result = sync(services, account)
    assert (result.created, result.updated, result.deleted) == (0, 1, 0)
    assert summary(services) == [
        ("created", message_id, source, None, None),
        ("updated", message_id, destination, source, None),
    ]
    # Again: nothing new (the source's @removed and the destination's arrival are both known).
    assert sync(services, account).published == 0


def test_a_move_out_of_the_watched_folders_is_deleted_with_reason_moved() -> None:
    services = services_for("inbox")
    account = connect(services)
    message_id = services.graph.deliver(account.account_id, "to be archived", AFTER)
    sync(services, account)
    services.graph.move(account.account_id, message_id, "inbox", "archive")
    result = sync(services, account)
    assert result.deleted == 1
    assert summary(services)[-1] == ("deleted", message_id, "inbox", None, "moved")


def test_a_deletion_stays_a_deletion() -> None:
    services = services_for("inbox,archive")
    account = connect(services)
    gone = services.graph.deliver(account.account_id, "spam", AFTER)
    binned = services.graph.deliver(account.account_id, "old news", AFTER)
    sync(services, account)
    services.graph.inbox(account.account_id).delete(gone)  # permanently: Graph has it no more
    services.graph.move(account.account_id, binned, "inbox", "deleteditems")  # what DELETE does
    sync(services, account)
    assert summary(services)[-2:] == [
        ("deleted", gone, "inbox", None, "deleted"),
        ("deleted", binned, "inbox", None, "deleted"),
    ]


def test_a_message_that_comes_back_is_created_again_under_a_new_event_id() -> None:
    services = services_for("inbox")
    account = connect(services)
    message_id = services.graph.deliver(account.account_id, "boomerang", AFTER)
    sync(services, account)
    services.graph.move(account.account_id, message_id, "inbox", "archive")
    sync(services, account)
    services.graph.move(account.account_id, message_id, "archive", "inbox")
    sync(services, account)
    kinds = [(k, s) for k, s, *_ in summary(services)]
    assert kinds == [("created", message_id), ("deleted", message_id), ("created", message_id)]
    ids = [e["id"] for e in events_of(services)]
    assert len(set(ids)) == 3


def test_every_folder_with_a_star_child_folders_too() -> None:
    services = services_for("*")
    graph = services.graph
    account = connected_account(services)
    graph.folder(account.account_id, "receipts")  # a folder of the user's own
    auth = services.tokens.graph_auth(account)
    record_initial_delta(services, account, auth, emit_history=False)
    assert set(graph.delta_folders) == {"inbox", "archive", "deleteditems", "folder-receipts"}
    message_id = graph.deliver(account.account_id, "receipt", AFTER)
    sync(services, account)
    graph.move(account.account_id, message_id, "inbox", "folder-receipts")
    sync(services, account)
    assert summary(services)[-1] == ("updated", message_id, "folder-receipts", "inbox", None)


def test_a_round_resumes_in_the_folder_it_stopped_in() -> None:
    services = services_for("inbox,archive", page_size=1)
    account = connect(services)
    archive = services.graph.folder(account.account_id, "archive")
    ids = [archive.deliver(f"filed {n}", AFTER) for n in range(3)]
    clock = iter(range(0, 10_000, 200))  # every page takes longer than the budget
    result = sync_mailbox(services, account.account_id, reason="notification", monotonic=lambda: next(clock))
    assert result.handed_over
    progress = services.ledger.progress(account.account_id)
    assert progress is not None and progress.folder == "archive"
    while services.ledger.progress(account.account_id) is not None:
        sync(services, account)
    assert sorted(s for _, s, *_ in summary(services)) == sorted(ids)
