"""Moving the clock of a local stack's processes with libfaketime (Debian's ``faketime``;
``make test`` installs it), so that "a month later" takes no month.

A process started with ``faketime_env(file)`` reads its wall-clock offset from ``file``
(``+3600``: an hour ahead); its monotonic clocks (timeouts, the HTTP servers' waits) stay
real. ``Clock`` writes the offset and waits until the processes tell the new time in the
``Date`` header of their answers.
"""

from __future__ import annotations

import datetime as dt
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests

from devstack.stack import LocalStack
from tests.support.stack import wait_for

FAKETIME_LIBRARY = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def faketime_env(clock_file: Path) -> dict[str, str]:
    if not FAKETIME_LIBRARY.exists():
        pytest.fail("libfaketime is not installed (make test installs Debian's faketime)")
    if not clock_file.exists():
        clock_file.write_text("+0\n")
    return {
        "LD_PRELOAD": str(FAKETIME_LIBRARY),
        "FAKETIME_TIMESTAMP_FILE": str(clock_file),
        "FAKETIME_CACHE_DURATION": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",
    }


class Clock:
    """The offset of the processes that run on ``path``: the devhost, and the simulator
    with ``simulator=True`` (both then agree on the time, as Graph and Azure do)."""

    def __init__(self, path: Path, stack: LocalStack, *, simulator: bool = False) -> None:
        self.path = path
        self.stack = stack
        self.simulator = simulator
        self.offset = 0
        self.set(0)

    def _offset_of(self, url: str) -> float:
        answer = requests.get(url, timeout=10, verify=str(self.stack.ca_file))
        return parsedate_to_datetime(answer.headers["Date"]).timestamp() - time.time()

    def devhost_offset(self) -> float:
        return self._offset_of(f"{self.stack.devhost_url}/admin/host/ping")

    def simulator_offset(self) -> float:
        return self._offset_of(f"{self.stack.graphsim_url}/_sim/health")

    def set(self, seconds: int) -> None:
        self.path.write_text(f"{seconds:+d}\n")
        self.offset = seconds
        # libfaketime re-reads the file once its cached read is a second old.
        wait_for(lambda: abs(self.devhost_offset() - seconds) < 3, timeout=30, interval=0.25,
                 what=f"the devhost's clock to move to {seconds:+d} s")
        if self.simulator:
            wait_for(lambda: abs(self.simulator_offset() - seconds) < 3, timeout=30, interval=0.25,
                     what=f"the simulator's clock to move to {seconds:+d} s")

    def advance(self, by: dt.timedelta) -> None:
        self.set(self.offset + int(by.total_seconds()))

    def now(self) -> dt.datetime:
        """What the processes on this clock take for now."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.offset)
