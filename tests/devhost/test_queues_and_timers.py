"""Queue triggers, queue outputs and timers through the devhost, against a real Azurite."""

from __future__ import annotations

import base64
import time
import uuid

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from devstack.devhost import DevHost
from tests.devhost.conftest import FUNCTION_KEY, MASTER_KEY
from tests.devhost.sample_app import RECORD
from tests.support.azurite import Azurite

pytestmark = pytest.mark.integration  # a real Azurite (and, for the CLI, a real process)


def bodies_seen(function: str) -> list[str]:
    return [entry["body"] for entry in RECORD.seen(function)]


def wait_for_body(function: str, body: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, object]]:
    RECORD.wait_for(function, lambda seen: sum(1 for e in seen if e["body"] == body) >= count, timeout)
    return [entry for entry in RECORD.seen(function) if entry["body"] == body]


def find_message(azurite: Azurite, queue: str, text: str, timeout: float = 10.0) -> str:
    """The raw text of the first message in ``queue`` whose text or base64-decoded body is ``text``."""
    client = QueueClient.from_connection_string(azurite.connection_string, queue)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            messages = client.peek_messages(max_messages=32)
        except ResourceNotFoundError:  # the devhost creates the poison queue on first use
            messages = []
        for message in messages:
            raw = message.content or ""
            decoded = base64.b64decode(raw).decode("utf-8", "replace") if raw else ""
            if text in (raw, decoded):
                return raw
        time.sleep(0.05)
    raise AssertionError(f"no message {text!r} in {queue}")


def test_a_message_written_by_an_output_binding_is_base64_and_consumed_by_the_trigger(
        devhost: DevHost, azurite: Azurite) -> None:
    body = f"hello {uuid.uuid4()}"

    response = requests.post(f"{devhost.base_url}/api/enqueue", data=body.encode(), timeout=5)

    assert response.status_code == 202
    assert find_message(azurite, "sample-outbox", body) == base64.b64encode(body.encode()).decode()
    [entry] = wait_for_body("process_work", body)
    assert entry["dequeue_count"] == 1
    assert entry["inserted"] is True
    assert entry["invocation_id"]


def test_an_output_queue_deleted_while_the_host_runs_is_created_again(devhost: DevHost, azurite: Azurite) -> None:
    requests.post(f"{devhost.base_url}/api/enqueue", data=b"before", timeout=5)
    QueueClient.from_connection_string(azurite.connection_string, "sample-outbox").delete_queue()
    body = f"after {uuid.uuid4()}"

    response = requests.post(f"{devhost.base_url}/api/enqueue", data=body.encode(), timeout=5)

    assert response.status_code == 202
    find_message(azurite, "sample-outbox", body)


def test_a_list_set_on_an_output_binding_becomes_one_message_each(devhost: DevHost) -> None:
    first, second = f"one {uuid.uuid4()}", f"two {uuid.uuid4()}"

    response = requests.post(f"{devhost.base_url}/api/enqueue", json=[first, second], timeout=5)

    assert response.status_code == 202
    wait_for_body("process_work", first)
    wait_for_body("process_work", second)


def test_a_message_that_is_not_base64_is_read_as_raw_text(devhost: DevHost, azurite: Azurite) -> None:
    body = f"plain text {uuid.uuid4()}!"
    QueueClient.from_connection_string(azurite.connection_string, "sample-work").send_message(body)

    wait_for_body("process_work", body)


def test_a_message_that_fails_max_dequeue_count_times_moves_to_poison_with_its_body(
        devhost: DevHost, azurite: Azurite) -> None:
    body = f"fail {uuid.uuid4()}"
    QueueClient.from_connection_string(azurite.connection_string, "sample-work").send_message(
        base64.b64encode(body.encode()).decode())

    attempts = wait_for_body("process_work", body, count=2)
    raw = find_message(azurite, "sample-work-poison", body)

    assert [a["dequeue_count"] for a in attempts] == [1, 2]
    assert base64.b64decode(raw).decode() == body
    time.sleep(0.3)  # no third attempt: the message left the queue
    assert bodies_seen("process_work").count(body) == 2
    assert requests.get(f"{devhost.base_url}/api/items/1", timeout=5).status_code == 200


def test_a_batch_of_messages_is_processed_concurrently(devhost: DevHost, azurite: Azurite) -> None:
    batch = [f"slow {n} {uuid.uuid4()}" for n in range(4)]  # batchSize is 4 in the test host.json
    client = QueueClient.from_connection_string(azurite.connection_string, "sample-slow")
    for body in batch:
        client.send_message(base64.b64encode(body.encode()).decode())

    RECORD.wait_for("process_slowly", lambda seen: {e["body"] for e in seen} >= set(batch), timeout=10)
    runs = [e for e in RECORD.seen("process_slowly") if e["body"] in batch]

    # The sends are separate requests: a poll may fall between two of them and split the
    # batch. Run one by one, each would start after the previous ended; here they overlap.
    ordered = sorted(runs, key=lambda run: run["start"])
    overlapping = sum(1 for a, b in zip(ordered, ordered[1:], strict=False) if b["start"] < a["end"])
    assert overlapping >= 2, ordered


def test_when_an_output_binding_cannot_be_written_the_http_invocation_fails(devhost: DevHost) -> None:
    started = time.monotonic()

    response = requests.post(f"{devhost.base_url}/api/enqueue-unreachable", data=b"x", timeout=30)

    assert response.status_code == 500
    assert time.monotonic() - started < 10
    assert requests.get(f"{devhost.base_url}/api/items/1", timeout=5).status_code == 200


def test_admin_api_runs_a_timer_function_now(devhost: DevHost) -> None:
    before = len(RECORD.seen("nightly"))
    url = f"{devhost.base_url}/admin/functions/nightly"

    assert requests.post(url, json={}, headers={"x-functions-key": FUNCTION_KEY}, timeout=5).status_code == 401
    response = requests.post(url, json={"input": ""}, headers={"x-functions-key": MASTER_KEY}, timeout=5)

    assert response.status_code == 202
    assert RECORD.wait_for("nightly", lambda seen: len(seen) > before, timeout=5)[-1] is False


def test_admin_api_runs_a_queue_function_with_the_input_as_body(devhost: DevHost) -> None:
    body = f"manual {uuid.uuid4()}"

    response = requests.post(f"{devhost.base_url}/admin/functions/process_work", json={"input": body},
                             params={"code": MASTER_KEY}, timeout=5)

    assert response.status_code == 202
    wait_for_body("process_work", body)


def test_admin_api_refuses_unknown_and_http_functions(devhost: DevHost) -> None:
    headers = {"x-functions-key": MASTER_KEY}

    assert requests.post(f"{devhost.base_url}/admin/functions/nope", headers=headers, timeout=5).status_code == 404
    assert requests.post(f"{devhost.base_url}/admin/functions/secret", headers=headers, timeout=5).status_code == 400


def test_timer_runs_on_its_schedule(devhost: DevHost) -> None:
    # heartbeat runs on "*/1 * * * * *", resolved from %SAMPLE_HEARTBEAT_SCHEDULE%.
    before = len(RECORD.seen("heartbeat"))

    seen = RECORD.wait_for("heartbeat", lambda runs: len(runs) >= before + 3, timeout=6)

    assert 0.7 < seen[-1]["at"] - seen[-2]["at"] < 1.3


def test_timer_with_run_on_startup_runs_as_the_host_starts(tmp_path) -> None:
    env = {"SAMPLE_HEARTBEAT_SCHEDULE": "0 0 0 29 2 *"}  # next due on a 29 February

    def startup_runs(seen: list[dict[str, str]]) -> list[dict[str, str]]:
        return [run for run in seen if (run["next"] or "")[4:10] == "-02-29"]

    with DevHost(app_module="tests.devhost.sample_app", app_dir=tmp_path, env=env, functions=["heartbeat"]):
        RECORD.wait_for("heartbeat", lambda seen: len(startup_runs(seen)) == 1, timeout=5)
        time.sleep(0.2)

    assert len(startup_runs(RECORD.seen("heartbeat"))) == 1


def test_a_missing_setting_puts_only_that_function_in_error(
        azurite: Azurite, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAMPLE_NIGHTLY_SCHEDULE", raising=False)  # the module's devhost set it process-wide
    env = {"SampleStorage": azurite.connection_string, "SAMPLE_WORK_QUEUE": "sample-idle",
           "SAMPLE_HEARTBEAT_SCHEDULE": "0 0 0 1 1 *"}
    with DevHost(app_module="tests.devhost.sample_app", app_dir=tmp_path, env=env,
                 functions=["nightly", "show_item"]) as host:
        status = requests.get(f"{host.base_url}/admin/host/status", params={"code": host.function_key},
                              timeout=5).json()
        served = requests.get(f"{host.base_url}/api/items/5", timeout=5).status_code

    assert "SAMPLE_NIGHTLY_SCHEDULE" in status["errors"]["nightly"]
    assert served == 200
