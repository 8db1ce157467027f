"""``python -m shared.cli files list|upload|download`` over fakes of every port."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from shared import cli, drive_files
from shared.bootstrap import Services
from tests.fakes import make_services
from tests.unit.drive_fakes import FakeDriveApi, drive_account


@pytest.fixture
def services() -> Services:
    installed = make_services(real_tokens=False, drive=FakeDriveApi())
    drive_account(installed, "acct")
    return installed


def run(services: Services, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), services=services, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_upload_then_list_then_download_to_a_file(services: Services, tmp_path: Path) -> None:
    source = tmp_path / "report.docx"
    source.write_bytes(b"quarterly numbers")

    code, out, _ = run(services, "files", "upload", "acct", str(source), "Documents/report.docx")
    uploaded = json.loads(out)
    _, listed, _ = run(services, "files", "list", "acct", "--path", "Documents")
    target = tmp_path / "back.docx"
    down, _, _ = run(services, "files", "download", "acct", uploaded["id"], "--output", str(target))

    assert code == 0 and uploaded["created"] and uploaded["path"] == "/Documents/report.docx"
    assert [i["name"] for i in json.loads(listed)["items"]] == ["report.docx"]
    assert down == 0 and target.read_bytes() == b"quarterly numbers"


def test_a_large_file_is_written_chunk_by_chunk_from_one_download(services: Services, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytes(i % 251 for i in range(300_000))
    item = drive_files.upload_file(services, "acct", "big.bin", data).item
    ranges: list[str | None] = []
    open_content = services.drive.open_content

    def recording(auth: Any, item_id: str, *, byte_range: str | None = None) -> Any:
        ranges.append(byte_range)
        return open_content(auth, item_id, byte_range=byte_range)

    monkeypatch.setattr(services.drive, "open_content", recording)
    target = tmp_path / "big.bin"

    assert run(services, "files", "download", "acct", item["id"], "--output", str(target))[0] == 0
    assert target.read_bytes() == data and ranges == [None]


def test_a_taken_name_with_conflict_fail_and_a_missing_scope_exit_1(services: Services, tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"x")
    run(services, "files", "upload", "acct", str(source), "a.txt")
    drive_account(services, "mail-only", ("User.Read", "Mail.Read"))

    conflict = run(services, "files", "upload", "acct", str(source), "a.txt", "--conflict", "fail")
    no_scope = run(services, "files", "list", "mail-only")

    assert conflict[0] == 1 and "ConflictError" in conflict[2]
    assert no_scope[0] == 1 and "MissingScopeError" in no_scope[2]
