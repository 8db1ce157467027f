"""Resumable uploads (shared/drive_uploads.py) and their upload ids (shared/upload_ids.py),
over a fake drive that keeps Graph's rules for a session's fragments."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from shared import drive_uploads, upload_ids
from shared.bootstrap import Services
from shared.drive_files import FRAGMENT_MULTIPLE
from shared.errors import (
    GraphError,
    InvalidInputError,
    InvalidPathError,
    MissingScopeError,
    ReauthRequiredError,
    UnknownAccountError,
    UnknownUploadError,
)
from shared.models import AccountStatus
from tests.fakes import make_services, make_settings
from tests.unit.drive_fakes import FakeDriveApi, drive_account

ACCOUNT = "acct-1"
KEY = b"test-client-state-key-0123456789abcdef"
NEW_KEY = b"the-next-client-state-key-0123456789abcdef"


@pytest.fixture
def services() -> Services:
    services = make_services(real_tokens=False, drive=FakeDriveApi())
    drive_account(services, ACCOUNT)
    return services


def content(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def send(services: Services, upload_id: str, data: bytes, first: int, last: int,
         account: str = ACCOUNT) -> drive_uploads.FragmentResult:
    return drive_uploads.put_fragment(
        services, account, upload_id, data[first:last + 1], f"bytes {first}-{last}/{len(data)}"
    )


def drive(services: Services) -> Any:
    return services.drive


def test_a_file_sent_in_fragments_becomes_the_item_at_its_path(services):
    data = content(2 * FRAGMENT_MULTIPLE + 1000)
    session = drive_uploads.open_upload(services, ACCOUNT, "Reports/Q3.pptx")
    assert session["nextExpectedRanges"] == ["0-"] and session["expirationDateTime"]
    assert session["fragmentMultiple"] == 327_680 and session["maxFragmentBytes"] < 60 * 1024 * 1024

    first = send(services, session["uploadId"], data, 0, 2 * FRAGMENT_MULTIPLE - 1)
    assert first.item is None and first.next_expected_ranges == (f"{2 * FRAGMENT_MULTIPLE}-",)
    assert drive_uploads.upload_status(services, ACCOUNT, session["uploadId"]) == (f"{2 * FRAGMENT_MULTIPLE}-",)
    last = send(services, session["uploadId"], data, 2 * FRAGMENT_MULTIPLE, len(data) - 1)

    assert last.item is not None and last.created
    assert last.item["path"] == "/Reports/Q3.pptx" and last.item["size"] == len(data)
    assert drive(services).find("Reports/Q3.pptx").content == data


def test_the_upload_id_hides_graphs_upload_url_and_opens_for_its_account_only(services):
    drive_account(services, "acct-2")
    session = drive_uploads.open_upload(services, ACCOUNT, "a.bin")
    upload_id = session["uploadId"]
    [url] = drive(services).sessions
    raw = base64.urlsafe_b64decode(upload_id + "=" * (-len(upload_id) % 4))
    assert b"upload.example.test" not in raw and "upload.example.test" not in upload_id

    with pytest.raises(UnknownUploadError):
        drive_uploads.upload_status(services, "acct-2", upload_id)
    altered = upload_id[:-2] + ("A" if upload_id[-2] != "A" else "B") + upload_id[-1]
    for forged in (altered, "", "not base64 !", "A" * 5000, upload_ids.seal(b"some other key", ACCOUNT, url)):
        with pytest.raises(UnknownUploadError):
            drive_uploads.upload_status(services, ACCOUNT, forged)
    assert drive_uploads.upload_status(services, ACCOUNT, upload_id) == ("0-",)


def test_an_upload_id_of_the_previous_key_opens_during_a_rotation_and_not_after():
    url = "https://upload.example.test/session-9"
    upload_id = upload_ids.seal(KEY, ACCOUNT, url)
    during = make_settings(CLIENT_STATE_KEY=NEW_KEY.decode(), CLIENT_STATE_KEY_PREVIOUS=KEY.decode())
    after = make_settings(CLIENT_STATE_KEY=NEW_KEY.decode())

    assert upload_ids.open_upload_id(during.client_state_keys, ACCOUNT, upload_id) == url
    with pytest.raises(UnknownUploadError):
        upload_ids.open_upload_id(after.client_state_keys, ACCOUNT, upload_id)


@pytest.mark.parametrize(("header", "length", "reason"), [
    (None, 10, "needs Content-Range"),
    ("bytes 0-9", 10, "needs Content-Range"),
    ("bytes=0-9/10", 10, "needs Content-Range"),
    ("bytes 5-4/10", 0, "not within the file"),
    ("bytes 0-10/10", 11, "not within the file"),
    ("bytes 0-9/20", 8, "the body has 8 bytes"),
    ("bytes 0-999/2000", 1000, "multiple of 327680"),
    (f"bytes 0-{192 * FRAGMENT_MULTIPLE - 1}/{10**9}", 192 * FRAGMENT_MULTIPLE, "at most"),
])
def test_a_fragment_that_breaks_graphs_rules_is_refused_before_it_goes_out(header, length, reason):
    with pytest.raises(InvalidInputError, match=reason):
        drive_uploads.fragment_range(header, length)


def test_the_last_fragment_may_be_of_any_size():
    assert drive_uploads.fragment_range("bytes 327680-328679/328680", 1000) == (327680, 328680)
    assert drive_uploads.fragment_range("bytes 0-0/1", 1) == (0, 1)


def test_a_gap_is_graphs_416_and_the_session_goes_on_from_where_it_stands(services):
    data = content(3 * FRAGMENT_MULTIPLE)
    upload_id = drive_uploads.open_upload(services, ACCOUNT, "a.bin")["uploadId"]
    send(services, upload_id, data, 0, FRAGMENT_MULTIPLE - 1)
    with pytest.raises(GraphError) as refused:
        send(services, upload_id, data, 2 * FRAGMENT_MULTIPLE, 3 * FRAGMENT_MULTIPLE - 1)
    assert refused.value.status == 416
    [expected] = drive_uploads.upload_status(services, ACCOUNT, upload_id)
    assert expected == f"{FRAGMENT_MULTIPLE}-"
    assert send(services, upload_id, data, FRAGMENT_MULTIPLE, 3 * FRAGMENT_MULTIPLE - 1).item is not None


def test_a_cancelled_or_expired_session_is_unknown(services):
    upload_id = drive_uploads.open_upload(services, ACCOUNT, "a.bin")["uploadId"]
    drive_uploads.cancel_upload(services, ACCOUNT, upload_id)
    with pytest.raises(UnknownUploadError):
        send(services, upload_id, content(10), 0, 9)
    with pytest.raises(UnknownUploadError):
        drive_uploads.upload_status(services, ACCOUNT, upload_id)


def test_who_may_upload(services):
    drive_account(services, "reader", ("User.Read", "Files.Read"))
    drive_account(services, "stale", status=AccountStatus.REAUTH_REQUIRED)
    upload_id = drive_uploads.open_upload(services, ACCOUNT, "a.bin")["uploadId"]

    with pytest.raises(MissingScopeError):
        drive_uploads.open_upload(services, "reader", "a.bin")
    with pytest.raises(ReauthRequiredError):
        drive_uploads.open_upload(services, "stale", "a.bin")
    with pytest.raises(UnknownAccountError):
        drive_uploads.open_upload(services, "nobody", "a.bin")
    with pytest.raises(InvalidPathError):
        drive_uploads.open_upload(services, ACCOUNT, "a:b.bin")
    # An account that must sign in again sends no more fragments of a session it opened.
    account = services.accounts.get(ACCOUNT)
    account.status = AccountStatus.REAUTH_REQUIRED
    services.accounts.save(account)
    with pytest.raises(ReauthRequiredError):
        send(services, upload_id, content(10), 0, 9)


def test_a_taken_name_under_conflict_fail_is_refused_when_the_session_is_opened(services):
    from shared.errors import ConflictError

    drive(services).upload_small(None, "a.bin", b"x", "replace")
    with pytest.raises(ConflictError):
        drive_uploads.open_upload(services, ACCOUNT, "a.bin", conflict="fail")
    with pytest.raises(InvalidInputError):
        drive_uploads.open_upload(services, ACCOUNT, "a.bin", conflict="overwrite")
