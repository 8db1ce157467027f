"""``python -m devstack.devhost`` as a developer runs it: prints where it serves, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.devhost.conftest import PROJECT_ROOT
from tests.support import free_port

pytestmark = pytest.mark.integration  # a real Azurite (and, for the CLI, a real process)


def test_the_command_serves_the_app_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "local.settings.json").write_text('{"Values": {"SAMPLE_NIGHTLY_SCHEDULE": "0 0 3 * * *"}}')
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "DEVHOST_PORT": str(port),
           "DEVHOST_FUNCTION_KEY": "cli-key"}
    for name in ("SAMPLE_NIGHTLY_SCHEDULE", "SAMPLE_HEARTBEAT_SCHEDULE", "SampleStorage"):
        env.pop(name, None)
    log = tmp_path / "devhost.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.devhost", "--app", "tests.devhost.sample_app", "--app-dir", str(tmp_path)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    try:
        banner = []
        while not any("listening" in line for line in banner):
            line = process.stdout.readline() if process.stdout else ""
            assert line, f"devhost exited: {log.read_text()}"
            banner.append(line)
        base_url = f"http://127.0.0.1:{port}"
        item = requests.get(f"{base_url}/api/items/9", timeout=5)
        secret = requests.get(f"{base_url}/api/secret", headers={"x-functions-key": "cli-key"}, timeout=5)

        process.send_signal(signal.SIGTERM)
        out = process.stdout.read() if process.stdout else ""  # up to EOF: the process has ended
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    printed = "".join(banner) + out
    assert item.status_code == 200 and secret.status_code == 200
    assert process.returncode == 0
    assert base_url in printed and "cli-key" in printed
    assert f"[GET,POST] {base_url}/api/items/{{id:int}}/{{name?}} (anonymous)" in printed
    assert "nightly: timerTrigger" in printed  # its schedule came from local.settings.json
    assert "process_work: ERROR" in printed  # no SampleStorage: only that function is in error
    assert "devhost stopped" in printed
    assert "Traceback" not in log.read_text().split("devhost serving")[-1]  # none on the way out


def test_the_command_reports_an_app_that_cannot_be_imported(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "devstack.devhost", "--app", "no_such_module", "--app-dir", str(tmp_path),
         "--port", "0"],
        cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, capture_output=True, text=True,
        timeout=30)

    assert result.returncode == 1
    assert "no_such_module" in result.stderr
    assert time.monotonic() - started < 30
