"""The mail command log's Table Storage adapter against a real Azurite: once-only claims."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest

from shared.adapters.command_log import TableMailCommandLog
from shared.errors import ConcurrencyError
from shared.ports import CommandState

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def log(azurite) -> TableMailCommandLog:  # type: ignore[no-untyped-def]
    return TableMailCommandLog(azurite.connection_string)


def test_of_racing_claims_of_one_id_exactly_one_wins(log: TableMailCommandLog) -> None:
    command_id = f"cmd/{uuid.uuid4()}?#"  # characters a table key refuses
    won: list[object] = []
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        record = log.claim(command_id, "acct.tenant", NOW)
        if record is not None:
            won.append(record)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(won) == 1
    stored = log.get(command_id)
    assert stored is not None and stored.state == CommandState.CLAIMED and stored.claimed_at == NOW
    assert stored.account_id == "acct.tenant"


def test_a_record_keeps_its_result_and_writes_only_over_its_own_version(log: TableMailCommandLog) -> None:
    command_id = f"cmd-{uuid.uuid4()}"
    record = log.claim(command_id, "acct.tenant", NOW)
    assert record is not None
    stale = log.get(command_id)
    record.state, record.result = CommandState.FINISHED, '{"type": "x.succeeded"}'
    record = log.save(record)
    assert log.get(command_id).result == '{"type": "x.succeeded"}'  # type: ignore[union-attr]
    assert stale is not None
    stale.state = CommandState.PUBLISHED
    with pytest.raises(ConcurrencyError):
        log.save(stale)
    record.state = CommandState.PUBLISHED
    log.save(record)
    assert log.get(command_id).state == CommandState.PUBLISHED  # type: ignore[union-attr]


def test_a_released_claim_can_be_claimed_again(log: TableMailCommandLog) -> None:
    command_id = f"cmd-{uuid.uuid4()}"
    record = log.claim(command_id, "acct.tenant", NOW)
    assert record is not None and log.claim(command_id, "acct.tenant", NOW) is None
    log.release(record)
    assert log.get(command_id) is None
    assert log.claim(command_id, "acct.tenant", NOW) is not None
