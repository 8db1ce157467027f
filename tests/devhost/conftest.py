"""Fixtures for the devhost tests: a DevHost serving the sample app against the session's Azurite
(the ``azurite`` fixture of tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.devhost import DevHost
from tests.support import free_port
from tests.support.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite

PROJECT_ROOT = Path(__file__).resolve().parents[2]

SAMPLE_APP = "tests.devhost.sample_app"
FUNCTION_KEY = "sample-function-key"
MASTER_KEY = "sample-master-key"
# Fast poison handling: two attempts, the failed message visible again at once.
FAST_HOST_JSON = {
    "version": "2.0",
    "extensions": {
        "queues": {
            "maxPollingInterval": "00:00:00.100",
            "visibilityTimeout": "00:00:00",
            "batchSize": 4,
            "newBatchThreshold": 2,
            "maxDequeueCount": 2,
        }
    },
}


def write_host_json(directory: Path, data: dict[str, object]) -> Path:
    path = directory / "host.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def unreachable_storage() -> str:
    """A connection string whose queue endpoint nobody listens on."""
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"QueueEndpoint=http://127.0.0.1:{free_port()}/{ACCOUNT_NAME};")


@pytest.fixture(scope="module")
def devhost(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHost]:
    app_dir = tmp_path_factory.mktemp("app")
    host = DevHost(
        app_module=SAMPLE_APP,
        port=0,
        function_key=FUNCTION_KEY,
        master_key=MASTER_KEY,
        host_json=write_host_json(app_dir, FAST_HOST_JSON),
        app_dir=app_dir,
        env={
            "SampleStorage": azurite.connection_string,
            "SampleUnreachableStorage": unreachable_storage(),
            "SAMPLE_WORK_QUEUE": "sample-work",
            "SAMPLE_NIGHTLY_SCHEDULE": "0 0 3 1 1 *",
            "SAMPLE_HEARTBEAT_SCHEDULE": "*/1 * * * * *",
        },
    )
    with host:
        yield host
