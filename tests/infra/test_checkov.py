"""checkov finds no failed check in infra/, and every skip carries its reason.

checkov runs offline (``--skip-download``) on the Bicep files only. A check that does not
fit this deployment is skipped in the template itself, next to the resource, with
``// checkov:skip=CKV_AZURE_xxx:reason``; this test refuses a skip without a reason and a
skip that no longer skips anything.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep import BICEP_FILES, INFRA

SKIP_COMMENT = re.compile(r"//\s*checkov:skip=([A-Z0-9_]+):(.*)$")


@pytest.fixture(scope="module")
def scan() -> dict[str, Any]:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "checkov.main",
            "--directory",
            str(INFRA),
            "--framework",
            "bicep",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    # checkov exits 1 when a check fails; anything else is checkov itself failing.
    assert completed.returncode in (0, 1), completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    assert isinstance(report, dict), "expected the bicep report only"
    return report


def test_checkov_parses_every_template(scan: dict[str, Any]) -> None:
    assert scan["summary"]["parsing_errors"] == 0, scan["results"].get("parsing_errors")
    scanned = {
        Path(check["file_path"]).name
        for kind in ("passed_checks", "failed_checks", "skipped_checks")
        for check in scan["results"][kind]
    }
    assert {"function.bicep", "storage.bicep", "keyvault.bicep"} <= scanned


def test_checkov_finds_no_failed_check(scan: dict[str, Any]) -> None:
    failed = [
        f"{check['check_id']} {check['check_name']} ({check['resource']}, {check['file_path']})"
        for check in scan["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)


def _skips_in_templates() -> set[tuple[str, str, str]]:
    found = set()
    for path in BICEP_FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            match = SKIP_COMMENT.search(line)
            if match:
                found.add(("/" + path.relative_to(INFRA).as_posix(), match.group(1), match.group(2).strip()))
    return found


def test_every_skip_has_a_reason_and_still_skips_something(scan: dict[str, Any]) -> None:
    written = _skips_in_templates()
    for _, check_id, reason in written:
        assert len(reason) >= 20, f"{check_id}: say why the check does not apply"
    applied = {
        (check["file_path"], check["check_id"], check["check_result"]["suppress_comment"].strip())
        for check in scan["results"]["skipped_checks"]
    }
    assert applied == written
