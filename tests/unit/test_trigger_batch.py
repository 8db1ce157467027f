"""The queue settings the trigger batch counts on are the ones host.json gives the host."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared import trigger_batch

HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"


def queue_settings() -> dict[str, object]:
    return json.loads(HOST_JSON.read_text())["extensions"]["queues"]  # type: ignore[no-any-return]


def test_a_failed_trigger_is_tried_as_often_as_the_host_tries_a_message() -> None:
    assert trigger_batch.MAX_ATTEMPTS == queue_settings()["maxDequeueCount"]


def test_a_failed_trigger_waits_as_long_as_the_host_lets_a_failed_message_wait() -> None:
    hours, minutes, seconds = (int(part) for part in re.fullmatch(
        r"(\d\d):(\d\d):(\d\d)", str(queue_settings()["visibilityTimeout"])).groups())  # type: ignore[union-attr]
    assert trigger_batch.RETRY_DELAY_SECONDS == hours * 3600 + minutes * 60 + seconds
