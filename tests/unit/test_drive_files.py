"""The files API's core (shared/drive_files.py) over a fake drive that keeps Graph's rules."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from shared import drive_files
from shared.bootstrap import Services
from shared.errors import (
    ConflictError,
    InvalidInputError,
    InvalidPathError,
    MissingScopeError,
    ReauthRequiredError,
    ThrottledError,
    UnknownAccountError,
    UpstreamError,
)
from shared.models import AccountStatus
from shared.ports import DriveContent
from tests.fakes import make_services
from tests.unit.drive_fakes import FakeDriveApi, drive_account

MB = 1024 * 1024


@pytest.fixture
def services() -> Services:
    return make_services(real_tokens=False, drive=FakeDriveApi())


def content(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def test_a_small_upload_is_one_put_and_is_created_then_replaced(services: Services) -> None:
    account = drive_account(services)

    first = drive_files.upload_file(services, account, "Docs/a.docx", b"one")
    again = drive_files.upload_file(services, account, "Docs/a.docx", b"two", conflict="replace")

    assert (first.created, first.session, again.created) == (True, False, False)
    assert again.item["id"] == first.item["id"] and again.item["path"] == "/Docs/a.docx"
    assert services.drive.fragments == []
    assert services.drive.items[first.item["id"]].content == b"two"


def test_a_file_over_4_mb_goes_through_an_upload_session_in_320_kib_multiples(services: Services) -> None:
    account = drive_account(services)
    data = content(6 * MB)

    result = drive_files.upload_file(services, account, "big.bin", data)

    assert result.session and result.created and result.item["size"] == len(data)
    assert [length % (320 * 1024) for _, length, _ in services.drive.fragments[:-1]] == [0]
    assert sum(length for _, length, _ in services.drive.fragments) == len(data)
    assert services.drive.find("big.bin").content == data


def test_exactly_4_mib_is_still_a_simple_upload(services: Services) -> None:
    result = drive_files.upload_file(services, drive_account(services), "edge.bin", content(4 * MB))
    assert not result.session


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_failed_fragment_is_resumed_from_next_expected_ranges(services: Services, status: int) -> None:
    account = drive_account(services)
    data = content(11 * MB)
    services.drive.fail_status = status
    services.drive.fail_next_fragments = 1
    waits: list[float] = []

    result = drive_files.upload_file(services, account, "resumed.bin", data, sleep=waits.append)

    assert result.resumes == 1 and services.drive.status_queries == 1
    assert services.drive.find("resumed.bin").content == data
    assert services.drive.fragments[0][0] == services.drive.fragments[1][0] == 0  # the lost one again
    assert waits == ([0.5] if status == 429 else [])


def test_an_upload_that_keeps_failing_gives_up_and_cancels_its_session(services: Services) -> None:
    account = drive_account(services)
    services.drive.fail_next_fragments = 100

    with pytest.raises(UpstreamError):
        drive_files.upload_file(services, account, "never.bin", content(5 * MB), sleep=lambda _: None)

    assert len(services.drive.fragments) == drive_files.MAX_UPLOAD_RESUMES + 1
    assert services.drive.cancelled and services.drive.find("never.bin") is None


def test_conflict_fail_refuses_an_existing_name_small_or_large(services: Services) -> None:
    account = drive_account(services)
    drive_files.upload_file(services, account, "x.docx", b"1")
    drive_files.upload_file(services, account, "y.bin", content(5 * MB))

    with pytest.raises(ConflictError):
        drive_files.upload_file(services, account, "x.docx", b"2", conflict="fail")
    with pytest.raises(ConflictError):
        drive_files.upload_file(services, account, "y.bin", content(5 * MB), conflict="fail")


def test_conflict_rename_keeps_both(services: Services) -> None:
    account = drive_account(services)
    drive_files.upload_file(services, account, "x.docx", b"1")
    renamed = drive_files.upload_file(services, account, "x.docx", b"2", conflict="rename")
    assert renamed.created and renamed.item["name"] == "x 1.docx"


@pytest.mark.parametrize("value", ["overwrite", "REPLACEALL", "1"])
def test_an_unknown_conflict_value_is_bad_input(services: Services, value: str) -> None:
    with pytest.raises(InvalidInputError):
        drive_files.upload_file(services, drive_account(services), "a.txt", b"", conflict=value)


@pytest.mark.parametrize("path", ["", "/", "a//b", "../etc", "a/./b", "a:b", "what?.docx", "x/ y", "trail.",
                                  "a" * 401, "tab\there"])
def test_paths_that_onedrive_refuses_are_bad_input_before_any_graph_call(services: Services, path: str) -> None:
    account = drive_account(services)
    with pytest.raises(InvalidPathError):
        drive_files.get_item_by_path(services, account, path)
    assert services.drive.tokens == []


def test_names_beyond_ascii_and_with_url_syntax_are_fine(services: Services) -> None:
    account = drive_account(services)
    drive_files.upload_file(services, account, "Rapports/été #1 & 100%.docx", b"x")
    assert drive_files.get_item_by_path(services, account, "Rapports/été #1 & 100%.docx")["name"] == "été #1 & 100%.docx"


def test_reads_need_a_files_scope_and_writes_a_readwrite_one(services: Services) -> None:
    mail_only = drive_account(services, "mail", ("User.Read", "Mail.Read"))
    read_only = drive_account(services, "reader", ("User.Read", "files.read.all"))

    with pytest.raises(MissingScopeError):
        drive_files.get_item(services, mail_only, "root")
    assert drive_files.get_item(services, read_only, "root")["path"] == "/"
    with pytest.raises(MissingScopeError):
        drive_files.upload_file(services, read_only, "a.txt", b"x")
    with pytest.raises(MissingScopeError):
        drive_files.delete_item(services, read_only, "root")


def test_a_scope_given_with_its_resource_counts() -> None:
    drive_files.require_files_scope("a", ["https://graph.microsoft.com/Files.ReadWrite.All"], write=True)


def test_unknown_and_signed_out_accounts(services: Services) -> None:
    with pytest.raises(UnknownAccountError):
        drive_files.get_item(services, "nobody", "root")
    stale = drive_account(services, "stale", status=AccountStatus.REAUTH_REQUIRED)
    with pytest.raises(ReauthRequiredError):
        drive_files.get_item(services, stale, "root")
    dead = drive_account(services, "dead")
    services.tokens.dead.add(dead)
    with pytest.raises(ReauthRequiredError):
        drive_files.get_item(services, dead, "root")


def test_the_item_shows_no_download_url(services: Services) -> None:
    account = drive_account(services)
    item = drive_files.upload_file(services, account, "Docs/a.docx", b"x").item
    shown = drive_files.get_item(services, account, item["id"])
    assert "downloadUrl" not in json.dumps(shown) and "secret" not in json.dumps(shown)
    assert shown["webUrl"].startswith("https://") and shown["path"] == "/Docs/a.docx" and not shown["isFolder"]


def test_children_come_in_pages_until_the_continuation_runs_out(services: Services) -> None:
    account = drive_account(services)
    for n in range(5):
        drive_files.upload_file(services, account, f"F/{n}.txt", b"x")
    folder = drive_files.get_item_by_path(services, account, "F")["id"]

    names, continuation, pages = [], None, 0
    while True:
        items, continuation = drive_files.list_children(services, account, folder, size=2, continuation=continuation)
        names += [i["name"] for i in items]
        pages += 1
        if continuation is None:
            break
    assert names == [f"{n}.txt" for n in range(5)] and pages == 3


def test_a_continuation_for_another_folder_or_host_is_refused(services: Services) -> None:
    account = drive_account(services)
    for n in range(3):
        drive_files.upload_file(services, account, f"F/{n}.txt", b"x")
    folder = drive_files.get_item_by_path(services, account, "F")["id"]
    _, continuation = drive_files.list_children(services, account, folder, size=1)
    assert continuation is not None
    forged = base64.urlsafe_b64encode(json.dumps(
        {"item": folder, "link": "https://evil.example.test/v1.0/me/drive/items/x/children"}).encode()).decode()

    for bad in ("not-base64!", forged):
        with pytest.raises(InvalidInputError):
            drive_files.list_children(services, account, folder, size=1, continuation=bad)
    with pytest.raises(InvalidInputError):
        drive_files.list_children(services, account, "root", size=1, continuation=continuation)


@pytest.mark.parametrize("size", ["0", "201", "ten"])
def test_a_bad_page_size_is_bad_input(size: str) -> None:
    with pytest.raises(InvalidInputError):
        drive_files.page_size(size)


def test_a_download_matches_and_a_range_gives_a_part(services: Services) -> None:
    account = drive_account(services)
    data = content(300_000)
    item = drive_files.upload_file(services, account, "d.bin", data).item

    whole = drive_files.download(services, account, item["id"])
    part = drive_files.download(services, account, item["id"], range_header="bytes=10-19")

    assert (whole.status, whole.size, drive_files.read_whole(whole)) == (200, 300_000, data)
    assert (part.status, drive_files.read_whole(part), part.content_range) == (206, data[10:20], "bytes 10-19/300000")


def test_a_download_is_handed_on_unread_and_closed_once_read(services: Services) -> None:
    account = drive_account(services)
    data = content(300_000)
    item = drive_files.upload_file(services, account, "d.bin", data).item
    pulled: list[int] = []
    closed: list[bool] = []
    inner = services.drive.open_content

    def counting(auth: Any, item_id: str, *, byte_range: str | None = None) -> DriveContent:
        opened = inner(auth, item_id, byte_range=byte_range)

        def chunks() -> Iterator[bytes]:
            for chunk in opened.chunks:
                pulled.append(len(chunk))
                yield chunk

        return DriveContent(opened.status, opened.size, opened.content_type, chunks(), lambda: closed.append(True))

    services.drive.open_content = counting  # type: ignore[method-assign]
    download = drive_files.download(services, account, item["id"])
    assert pulled == [] and closed == []  # nothing read yet: the route streams it
    first = next(download.chunks)
    assert len(first) < len(data) and len(pulled) == 1
    assert first + b"".join(download.chunks) == data and closed == [True]


def test_a_download_that_ends_short_fails_its_iteration(services: Services) -> None:
    account = drive_account(services)
    item = drive_files.upload_file(services, account, "d.bin", content(1000)).item
    inner = services.drive.open_content

    def short(auth: Any, item_id: str, *, byte_range: str | None = None) -> DriveContent:
        opened = inner(auth, item_id, byte_range=byte_range)
        return DriveContent(opened.status, 2000, opened.content_type, opened.chunks, opened.close)

    services.drive.open_content = short  # type: ignore[method-assign]
    with pytest.raises(UpstreamError, match="1000 of 2000"):
        drive_files.read_whole(drive_files.download(services, account, item["id"]))


@pytest.mark.parametrize(("header", "passed"), [("bytes=0-9", "bytes=0-9"), ("bytes=500000000-", "bytes=500000000-"),
                                                ("bytes=-300", "bytes=-300"), (" ", None)])
def test_a_range_of_any_size_is_passed_on(header: str, passed: str | None) -> None:
    assert drive_files.byte_range(header) == passed


@pytest.mark.parametrize("header", ["bytes=5-1", "items=0-1", "bytes=0-1,5-6", "bytes=-"])
def test_a_malformed_range_is_bad_input(header: str) -> None:
    with pytest.raises(InvalidInputError):
        drive_files.byte_range(header)


def test_create_link_and_delete(services: Services) -> None:
    account = drive_account(services)
    item = drive_files.upload_file(services, account, "s.docx", b"x").item

    link = drive_files.create_link(services, account, item["id"], link_type="edit", scope="organization")
    drive_files.delete_item(services, account, item["id"])

    assert link["type"] == "edit" and link["scope"] == "organization" and link["webUrl"].startswith("https://")
    assert item["id"] not in services.drive.items


@pytest.mark.parametrize("body", [None, [], {"type": "view"}, {"type": "embed", "scope": "anonymous"},
                                  {"type": "view", "scope": "users"}])
def test_a_bad_link_request_is_bad_input(body: object) -> None:
    with pytest.raises(InvalidInputError):
        drive_files.link_request(body)


def test_throttling_past_the_retries_reaches_the_caller_with_its_wait(services: Services) -> None:
    account = drive_account(services)
    services.drive.throttle_next = 1
    with pytest.raises(ThrottledError) as raised:
        drive_files.get_item(services, account, "root")
    assert drive_files.retry_after_seconds(raised.value) == 8


def test_a_refused_access_token_is_dropped_and_the_call_made_once_more_with_a_fresh_one(services: Services) -> None:
    account = drive_account(services)
    services.tokens.remember(account, "revoked-token", 3600)
    services.drive.refuse_next_tokens = 1

    assert drive_files.get_item(services, account, "root")["path"] == "/"
    assert services.tokens.cached == {} and services.tokens.issued == [account, account]


def test_the_document_tools_scopes_are_asked_as_they_are() -> None:
    from tests.fakes import make_settings

    assert make_settings(GRAPH_SCOPES="User.Read Files.ReadWrite.All").scopes == ("User.Read", "Files.ReadWrite.All")


def test_an_item_whose_parent_path_graph_left_out_has_no_path_rather_than_a_wrong_one() -> None:
    shown = drive_files.public_item({"id": "1", "name": "a.docx", "parentReference": {"id": "p", "driveId": "d"},
                                     "file": {"mimeType": "x"}})
    root = drive_files.public_item({"id": "r", "name": "root", "root": {}, "folder": {"childCount": 2}})
    nested = drive_files.public_item({"id": "2", "name": "b.txt", "parentReference": {"path": "/drive/root:/A/B"}})
    assert (shown["path"], root["path"], nested["path"]) == (None, "/", "/A/B/b.txt")
