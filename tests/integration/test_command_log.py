"""The mail command log's Table Storage adapter against a real Azurite: once-only claims."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest

from shared.adapters.command_log import TableMailCommandLog
from shared.errors import ConcurrencyError
from shared.ports import CommandRecord, CommandState

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
        won.extend(log.claim("acct.tenant", [command_id], NOW).values())

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(won) == 1
    stored = log.get("acct.tenant", command_id)
    assert stored is not None and stored.state == CommandState.CLAIMED and stored.claimed_at == NOW
    assert stored.account_id == "acct.tenant"


def test_a_batch_is_claimed_together_and_known_ids_are_left_out(log: TableMailCommandLog) -> None:
    account = f"{uuid.uuid4()}.tenant"
    ids = [f"cmd-{n}-{uuid.uuid4()}" for n in range(30)]
    assert set(log.claim(account, ids[:20], NOW)) == set(ids[:20])
    assert set(log.claim(account, ids[10:], NOW)) == set(ids[20:])  # one transaction refused, then one by one
    assert log.get("another.tenant", ids[0]) is None  # the same id of another account is another command


def test_records_keep_their_results_and_write_only_over_their_own_version(log: TableMailCommandLog) -> None:
    account = f"{uuid.uuid4()}.tenant"
    ids = [f"cmd-{n}" for n in range(3)]
    records = list(log.claim(account, ids, NOW).values())
    stale = log.get(account, ids[0])
    for record in records:
        record.state, record.result = CommandState.FINISHED, f'{{"id": "{record.command_id}"}}'
    assert len(log.save(records)) == 3
    assert log.get(account, ids[2]).result == '{"id": "cmd-2"}'  # type: ignore[union-attr]
    assert stale is not None
    stale.state = CommandState.PUBLISHED
    others = [log.get(account, i) for i in ids[1:]]
    written = log.save([stale, *[o for o in others if o is not None]])  # the stale one loses, alone
    assert [r.command_id for r in written] == ids[1:]
    assert log.get(account, ids[0]).state == CommandState.FINISHED  # type: ignore[union-attr]
    with pytest.raises(ConcurrencyError):
        log.save([CommandRecord("never-claimed", CommandState.FINISHED, NOW, account)])


def test_a_released_claim_can_be_claimed_again(log: TableMailCommandLog) -> None:
    account = f"{uuid.uuid4()}.tenant"
    record = log.claim(account, ["cmd"], NOW)["cmd"]
    assert log.claim(account, ["cmd"], NOW) == {}
    log.release([record])
    assert log.get(account, "cmd") is None
    assert set(log.claim(account, ["cmd"], NOW)) == {"cmd"}


def test_prune_deletes_records_claimed_before_the_time_and_keeps_the_rest(log: TableMailCommandLog) -> None:
    old_account, new_account = f"old.{uuid.uuid4()}", f"new.{uuid.uuid4()}"
    old_ids = [f"old-{n}" for n in range(130)]  # more than one transaction's worth
    log.claim(old_account, old_ids[:100], NOW - dt.timedelta(days=9))
    log.claim(old_account, old_ids[100:], NOW - dt.timedelta(days=9))
    log.claim(new_account, ["fresh"], NOW - dt.timedelta(days=1))
    log.claim(old_account, ["kept"], NOW)

    pruned = log.prune(NOW - dt.timedelta(days=8))

    assert pruned >= 130  # other tests' records of the shared table may be older too
    assert all(log.get(old_account, c) is None for c in old_ids)
    assert log.get(new_account, "fresh") is not None and log.get(old_account, "kept") is not None
    # A pruned id is a new command again.
    assert set(log.claim(old_account, ["old-0"], NOW)) == {"old-0"}
