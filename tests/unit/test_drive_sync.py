"""OneDrive sync: one drive event per change, none twice, nothing lost (shared/drive_sync.py,
shared/drive_round.py), on the fake drive delta of tests/drive_delta_fakes.py."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from shared.delta_round import SyncResult
from shared.drive_round import content_tag
from shared.drive_sync import DRIVE_LINK_KEY, drive_delta_link, forget_drive_state, sync_drive
from shared.errors import ThrottledError
from shared.events import Change
from shared.ledger import LeaseLostError
from shared.resources import DRIVE, MAIL
from shared.sync import sync_mailbox
from shared.sync_runner import LEASE_STALE_AFTER, parse_sync_request
from tests.drive_delta_fakes import FakeDriveDelta
from tests.fakes import EPOCH, make_services
from tests.unit.pipeline_fakes import DeltaGraphApi, connected_account

BEFORE = EPOCH - dt.timedelta(days=3)


@pytest.fixture
def services():
    services = make_services(real_tokens=False, graph=DeltaGraphApi(page_size=3))
    services.drive = FakeDriveDelta(services.clock, page_size=3)  # type: ignore[misc]
    return services


@pytest.fixture
def account(services):
    return connected_account(services)


@pytest.fixture
def drive(services, account):
    return services.drive.drive(account.account_id)


def drive_events(services):
    return [json.loads(m) for m in services.queues.sent.get("drive-events", [])]


def kinds(services):
    return [(e["type"].rsplit(".", 1)[1], e["subject"]) for e in drive_events(services)]


def sync(services, account, reason="notification"):
    services.clock.advance(seconds=1)
    return sync_drive(services, account.account_id, reason=reason)


def key(account):
    return DRIVE.sync_key(account.account_id)


def test_the_first_round_publishes_no_history_and_marks_every_item(services, account, drive):
    files = [drive.put(f"Docs/old {n}.docx", b"old", created=BEFORE) for n in range(5)]
    result = sync(services, account, reason="connect")
    assert result.published == 0 and drive_events(services) == []
    marks = services.ledger.marks(key(account), [*files, drive.folder("Docs")])
    assert set(marks) == {*files, drive.folder("Docs")}  # a baseline for each item, the root left out
    assert all(m.change_key and not m.removed for m in marks.values())
    assert marks[files[0]].content_tag.startswith("quickXorHash:")  # delta has no cTag on business drives
    assert drive_delta_link(services, services.accounts.get(account.account_id))
    assert services.ledger.marks(account.account_id, files) == {}  # not in the mail's partition


def test_a_file_created_since_the_connect_is_published_by_the_first_round(services, account, drive):
    drive.put("old.docx", b"old", created=BEFORE)
    new = drive.put("Docs/new.docx", b"new")  # created at the connect's second
    sync(services, account, reason="connect")
    created = [s for k, s in kinds(services) if k == "created"]
    assert new in created and len(created) == 2  # the file and the folder it was put in


def test_a_new_file_is_one_created_event_with_what_a_consumer_needs(services, account, drive):
    sync(services, account)
    account = services.accounts.get(account.account_id)
    item_id = drive.put("Docs/Q3 report.docx", b"first draft")
    result = sync(services, account)
    assert result.created == 2  # the folder, then the file
    event = drive_events(services)[-1]
    assert event["specversion"] == "1.0" and event["datacontenttype"] == "application/json"
    assert event["type"] == "com.microsoft.graph.driveItem.created"
    assert event["subject"] == item_id
    assert event["source"] == f"/accounts/{account.account_id}/drive"
    assert event["time"].endswith("Z")
    data = event["data"]
    assert data["accountId"] == account.account_id and "ownerId" not in data
    assert data["itemId"] == item_id and data["driveId"] == drive.id
    assert data["name"] == "Q3 report.docx" and data["path"] == "/Docs/Q3 report.docx"
    assert data["cTag"] and data["eTag"] and data["size"] == len(b"first draft")
    assert data["mimeType"].endswith("wordprocessingml.document") and data["isFolder"] is False
    assert data["lastModifiedBy"] == "Adele Vance" and data["lastModifiedDateTime"]
    assert data["webUrl"].startswith("https://") and data["contentChanged"] is True
    folder = drive_events(services)[-2]["data"]
    assert folder["isFolder"] is True and folder["path"] == "/Docs" and folder["contentChanged"] is False


def test_an_edit_is_a_content_change_a_rename_is_not_and_a_delete_is_deleted(services, account, drive):
    item_id = drive.put("Docs/a.docx", b"v1", created=BEFORE)
    sync(services, account)
    drive.edit(item_id, b"v2")
    sync(services, account)
    drive.rename(item_id, "b.docx")
    sync(services, account)
    drive.delete(item_id)
    sync(services, account)
    events = drive_events(services)
    assert [(e["type"].rsplit(".", 1)[1], e["data"]["contentChanged"]) for e in events] == [
        ("updated", True), ("updated", False), ("deleted", False)
    ]
    assert events[1]["data"]["name"] == "b.docx" and events[1]["data"]["path"] == "/Docs/b.docx"
    assert events[0]["data"]["cTag"] != events[1]["data"]["eTag"]
    assert len({e["id"] for e in events}) == 3


def test_a_deletion_tells_the_name_and_path_last_published_or_baselined(services, account, drive):
    old = drive.put("Docs/old.docx", b"v1", created=BEFORE)  # there before the connect: a baseline
    sync(services, account)
    fresh = drive.put("Docs/fresh.docx", b"v1")
    sync(services, account)
    drive.rename(fresh, "renamed.docx")
    sync(services, account)
    drive.delete(fresh)
    drive.delete(old)
    sync(services, account)

    deleted = {e["subject"]: e["data"] for e in drive_events(services) if e["type"].endswith(".deleted")}
    # Delta tells only a deleted item's ids: what the event names comes from the ledger mark.
    assert (deleted[fresh]["name"], deleted[fresh]["path"]) == ("renamed.docx", "/Docs/renamed.docx")
    # A baseline keeps what delta showed: OneDrive for Business's delta gives a name, no path.
    assert (deleted[old]["name"], deleted[old]["path"]) == ("old.docx", None)


def test_parent_folders_that_come_with_a_changed_child_publish_nothing(services, account, drive):
    deep = drive.put("A/B/C/deep.docx", b"v1", created=BEFORE)
    sync(services, account)
    drive.edit(deep, b"v2")
    sync(services, account)
    assert kinds(services) == [("updated", deep)]


def test_replayed_rounds_and_triggers_publish_nothing_twice(services, account, drive):
    sync(services, account)
    item_id = drive.put("x.docx", b"x")
    for _ in range(3):
        sync(services, account)
    assert kinds(services) == [("created", item_id)]


def test_a_round_that_failed_after_publishing_publishes_the_same_event_id_again(services, account, drive):
    sync(services, account)
    account = services.accounts.get(account.account_id)
    item_id = drive.put("x.docx", b"x")
    real_commit = services.ledger.commit

    def commit_fails_once(*args, **kwargs):
        services.ledger.commit = real_commit
        raise RuntimeError("storage went away")

    services.ledger.commit = commit_fails_once
    with pytest.raises(RuntimeError):
        sync(services, account)
    sync(services, account)
    events = [e for e in drive_events(services) if e["subject"] == item_id]
    assert len(events) == 2 and events[0]["id"] == events[1]["id"]  # a consumer de-duplicates on the id
    sync(services, account)
    assert len([e for e in drive_events(services) if e["subject"] == item_id]) == 2


def test_after_410_a_full_round_reconciles_with_the_ledger(services, account, drive):
    kept = drive.put("kept.docx", b"k", created=BEFORE)
    edited = drive.put("edited.docx", b"e1", created=BEFORE)
    gone = drive.put("gone.docx", b"g", created=BEFORE)
    sync(services, account)
    drive.reset()  # every delta link of the drive answers 410 from now on
    drive.edit(edited, b"e2")
    drive.delete(gone)
    new = drive.put("new.docx", b"n")
    result = sync(services, account)
    assert result.restarted
    assert sorted(kinds(services)) == sorted([("updated", edited), ("deleted", gone), ("created", new)])
    assert kept not in {s for _, s in kinds(services)}
    before = len(drive_events(services))
    sync(services, account)  # from the new deltaLink: nothing more
    assert len(drive_events(services)) == before


def test_a_file_deleted_between_the_delta_page_and_its_read_breaks_nothing(services, account, drive):
    sync(services, account)
    edited = drive.put("edited.docx", b"1")
    vanishing = drive.put("vanishing.docx", b"1")
    sync(services, account)
    drive.edit(edited, b"2")
    drive.edit(vanishing, b"2")
    services.drive.before_read = lambda: drive.delete(vanishing) if not drive.items[vanishing].deleted else None
    sync(services, account)
    services.drive.before_read = None
    assert kinds(services)[-1] == ("updated", edited)
    sync(services, account)  # the next round sees the deletion
    assert kinds(services)[-1] == ("deleted", vanishing)
    assert [k for k, s in kinds(services) if s == vanishing] == ["created", "deleted"]


def test_a_file_created_and_deleted_before_its_read_is_never_published(services, account, drive):
    sync(services, account)
    brief = drive.put("brief.docx", b"1")
    services.drive.before_read = lambda: drive.delete(brief) if not drive.items[brief].deleted else None
    sync(services, account)
    services.drive.before_read = None
    sync(services, account)
    assert brief not in {s for _, s in kinds(services)}


def test_the_items_that_give_events_are_read_again_together(services, account, drive):
    sync(services, account)
    for n in range(7):
        drive.put(f"f{n}.docx", b"x")
    services.drive.page_size = 50
    drive.page_size = 50
    sync(services, account)
    reads = services.drive.reads
    assert len(reads) == 1 and len(reads[0]) == 7  # one read for the page (20 to a $batch in the adapter)


def test_content_changes_are_told_by_the_kind_of_tag_the_mark_keeps(services, account, drive):
    services.drive.include_ctag = True  # a delta that keeps the cTag (OneDrive personal)
    item_id = drive.put("a.docx", b"v1", created=BEFORE)
    sync(services, account)
    assert services.ledger.marks(key(account), [item_id])[item_id].content_tag.startswith("cTag:")
    drive.rename(item_id, "b.docx")
    sync(services, account)
    assert drive_events(services)[-1]["data"]["contentChanged"] is False


def test_a_tag_is_compared_with_one_of_its_own_kind_only():
    item = {"id": "x", "cTag": '"c:{X},2"', "file": {"hashes": {"quickXorHash": "abc="}}}
    assert content_tag(item) == 'cTag:"c:{X},2"'
    assert content_tag(item, like="quickXorHash:old=") == "quickXorHash:abc="
    assert content_tag({"id": "x", "cTag": "c"}, like="quickXorHash:old=") is None
    assert content_tag({"id": "x", "folder": {}, "cTag": "c"}) is None


def test_mail_and_drive_of_one_account_sync_under_their_own_leases(services, account, drive):
    sync(services, account)
    item_id = drive.put("x.docx", b"x")
    # Another worker holds the mail's lease: the drive's round runs all the same.
    assert services.ledger.acquire_lease(account.account_id, "mail-worker", services.clock.now(), LEASE_STALE_AFTER)
    assert sync(services, account).created == 1
    assert sync_mailbox(services, account.account_id, reason="notification").skipped == "busy"
    # And a held drive lease leaves the mail alone.
    assert services.ledger.acquire_lease(key(account), "drive-worker", services.clock.now(), LEASE_STALE_AFTER)
    services.ledger.release_lease(account.account_id, "mail-worker", abandon=True)
    assert sync(services, account).skipped == "busy"
    assert sync_mailbox(services, account.account_id, reason="notification").skipped is None
    assert kinds(services) == [("created", item_id)]


def test_a_round_out_of_time_keeps_its_place_and_the_queue_goes_on_from_it(services, account, drive):
    for n in range(9):
        drive.put(f"old {n}.docx", b"o", created=BEFORE)
    sync(services, account)
    account = services.accounts.get(account.account_id)
    created = [drive.put(f"new {n}.docx", b"n") for n in range(9)]
    ticks = iter(range(0, 10_000, 100))
    result = sync_drive(services, account.account_id, reason="notification", monotonic=lambda: float(next(ticks)))
    assert result.handed_over and 0 < result.created < 9
    [job] = services.queues.sent["mail-sync"]
    request = parse_sync_request(job)
    assert request.resource is DRIVE and request.account_id == account.account_id
    resumed = sync_drive(services, account.account_id, reason=request.reason)
    assert resumed.resumed
    assert sorted(s for k, s in kinds(services)) == sorted(created)


def test_a_throttled_read_leaves_the_page_to_be_done_again(services, account, drive):
    sync(services, account)
    item_id = drive.put("x.docx", b"x")
    services.drive.fail["get_items"] = [ThrottledError("Graph answered 429", 3.0)]
    with pytest.raises(ThrottledError):
        sync(services, account)
    assert drive_events(services) == []
    sync(services, account)  # the queue's retry
    assert kinds(services) == [("created", item_id)]


def test_a_disconnect_forgets_the_drives_lease_marks_and_link(services, account, drive):
    item_id = drive.put("x.docx", b"x", created=BEFORE)
    sync(services, account)
    holder = "running-round"
    services.ledger.acquire_lease(key(account), holder, services.clock.now(), LEASE_STALE_AFTER)
    waits: list[float] = []
    forget_drive_state(services, account.account_id, sleep=waits.append)
    assert waits and waits[0] > 0  # until the running round can publish no more
    assert services.ledger.marks(key(account), [item_id]) == {}
    with pytest.raises(LeaseLostError):  # the running round writes nothing more
        services.ledger.commit(key(account), holder, services.clock.now(), [], None)
    assert services.ledger.progress(key(account)) is None
    # A reconnect (a new connected_at) starts with a first round: the old link is not read.
    reconnected = services.accounts.get(account.account_id)
    reconnected.connected_at = EPOCH + dt.timedelta(hours=1)
    services.accounts.save(reconnected)
    assert drive_delta_link(services, services.accounts.get(account.account_id)) is None
    assert services.folder_deltas.links(key(account), EPOCH).get(DRIVE_LINK_KEY)  # the ended connection's


def test_sync_results_count_each_change():
    result = SyncResult("a", "test")
    result.add([Change.CREATED, Change.UPDATED, Change.UPDATED, Change.DELETED])
    assert (result.created, result.updated, result.deleted, result.published) == (1, 2, 1, 4)


def test_the_mail_sync_of_the_account_is_untouched_by_the_drives_round(services, account, drive):
    sync_mailbox(services, account.account_id, reason="connect")
    drive.put("x.docx", b"x")
    sync(services, account)
    assert services.queues.sent.get("mail-events", []) == []
    assert MAIL.sync_key(account.account_id) == account.account_id != key(account)
