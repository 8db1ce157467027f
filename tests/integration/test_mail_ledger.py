"""The mail ledger's Table Storage adapter against a real Azurite: marks and the sync lease."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest

from shared.adapters.ledger import TableMailLedger
from shared.ledger import LedgerMark

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
STALE = dt.timedelta(seconds=60)


@pytest.fixture
def ledger(azurite) -> TableMailLedger:  # type: ignore[no-untyped-def]
    return TableMailLedger(azurite.connection_string)


@pytest.fixture
def account_id() -> str:
    return f"{uuid.uuid4()}.{uuid.uuid4()}"


def test_marks_are_recorded_and_read_back_by_message_id(ledger: TableMailLedger, account_id: str) -> None:
    # Graph ids may hold characters a RowKey refuses ("/"): the adapter hashes them.
    ids = ["AAMkAG/1+x==", "AAMkAG?2#", "AAMkAG3"]
    ledger.record(account_id, [LedgerMark(ids[0], "ck1"), LedgerMark(ids[1], None, removed=True)])
    assert ledger.marks(account_id, ids) == {
        ids[0]: LedgerMark(ids[0], "ck1"),
        ids[1]: LedgerMark(ids[1], None, removed=True),
    }
    assert list(ledger.live_message_ids(account_id)) == [ids[0]]


def test_a_large_lookup_and_a_large_record_span_several_transactions(
    ledger: TableMailLedger, account_id: str
) -> None:
    marks = [LedgerMark(f"m{n}", f"ck{n}") for n in range(250)]
    ledger.record(account_id, marks)
    found = ledger.marks(account_id, [m.message_id for m in marks] + ["absent"])
    assert len(found) == 250 and found["m249"].change_key == "ck249"
    ledger.forget_account(account_id)
    assert ledger.marks(account_id, ["m1"]) == {}


def test_one_holder_at_a_time_and_the_pending_mark_makes_the_holder_run_again(
    ledger: TableMailLedger, account_id: str
) -> None:
    assert ledger.acquire_lease(account_id, "a", NOW, STALE)
    assert not ledger.acquire_lease(account_id, "b", NOW, STALE)
    assert ledger.renew_lease(account_id, "a", NOW + dt.timedelta(seconds=10))
    assert ledger.release_lease(account_id, "a") is False  # b's work is pending
    assert ledger.release_lease(account_id, "a") is True
    assert ledger.acquire_lease(account_id, "b", NOW, STALE)
    assert ledger.release_lease(account_id, "b") is True


def test_a_stale_lease_is_taken_over_and_its_old_holder_notices(
    ledger: TableMailLedger, account_id: str
) -> None:
    assert ledger.acquire_lease(account_id, "dead", NOW, STALE)
    assert ledger.acquire_lease(account_id, "alive", NOW + 2 * STALE, STALE)
    assert not ledger.renew_lease(account_id, "dead", NOW + 2 * STALE)
    assert ledger.release_lease(account_id, "dead") is True  # nothing of its own to release
    assert not ledger.acquire_lease(account_id, "third", NOW + 2 * STALE, STALE)


def test_of_many_concurrent_contenders_exactly_one_gets_the_lease(
    ledger: TableMailLedger, account_id: str
) -> None:
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def contend(name: str) -> None:
        barrier.wait()
        if ledger.acquire_lease(account_id, name, NOW, STALE):
            winners.append(name)

    threads = [threading.Thread(target=contend, args=(f"w{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert ledger.release_lease(account_id, winners[0]) is False  # the others left work pending


# -- the fence: marks and progress land only while the writer holds the lease -------------


def test_a_holder_that_lost_its_lease_writes_no_mark_and_no_progress(
    ledger: TableMailLedger, account_id: str
) -> None:
    from shared.ledger import LeaseLostError, SyncProgress

    assert ledger.acquire_lease(account_id, "slow", NOW, STALE)
    # "slow" is stuck in a Graph call; its lease goes stale and "fresh" takes over.
    assert ledger.acquire_lease(account_id, "fresh", NOW + 2 * STALE, STALE)
    ledger.commit(account_id, "fresh", NOW + 2 * STALE, [LedgerMark("m-1", None, removed=True)], None)
    with pytest.raises(LeaseLostError):
        ledger.commit(
            account_id, "slow", NOW + 2 * STALE, [LedgerMark("m-1", "ck-old")], SyncProgress("next", "first", "r1")
        )
    assert ledger.marks(account_id, ["m-1"])["m-1"].removed is True
    assert ledger.progress(account_id) is None


def test_progress_and_marks_of_a_large_page_are_committed_with_the_lease_and_cleared_at_the_end(
    ledger: TableMailLedger, account_id: str
) -> None:
    from shared.ledger import SyncProgress

    assert ledger.acquire_lease(account_id, "a", NOW, STALE)
    marks = [LedgerMark(f"m-{n}", f"ck-{n}", seen_in="full-1") for n in range(150)]
    ledger.commit(account_id, "a", NOW, marks, SyncProgress("https://graph/next?skip=150", "full", "full-1"))
    assert ledger.progress(account_id) == SyncProgress("https://graph/next?skip=150", "full", "full-1")
    assert len(ledger.marks(account_id, [m.message_id for m in marks])) == 150
    ledger.commit(account_id, "a", NOW, [LedgerMark("m-old", "x")], SyncProgress("later", "full", "full-1"))
    assert list(ledger.live_message_ids(account_id, unseen_in="full-1")) == ["m-old"]
    ledger.commit(account_id, "a", NOW, [], None)
    assert ledger.progress(account_id) is None
    assert ledger.release_lease(account_id, "a") is True


def test_a_pending_mark_does_not_fence_out_the_holder_and_is_kept(
    ledger: TableMailLedger, account_id: str
) -> None:
    assert ledger.acquire_lease(account_id, "a", NOW, STALE)
    assert not ledger.acquire_lease(account_id, "b", NOW, STALE)  # marks work pending
    ledger.commit(account_id, "a", NOW + dt.timedelta(seconds=5), [LedgerMark("m-1", "ck")], None)
    assert ledger.release_lease(account_id, "a") is False  # the pending mark survived the commit


def test_a_seized_lease_fences_out_its_holder_and_tells_its_last_proof(
    ledger: TableMailLedger, account_id: str
) -> None:
    assert ledger.seize_lease(account_id, "disconnect-1", NOW) is None  # nobody held it
    ledger.forget_account(account_id)
    assert ledger.acquire_lease(account_id, "round", NOW, STALE)
    proved = NOW + dt.timedelta(seconds=7)
    assert ledger.renew_lease(account_id, "round", proved)
    assert ledger.seize_lease(account_id, "disconnect-2", NOW + dt.timedelta(seconds=8)) == proved
    assert not ledger.renew_lease(account_id, "round", NOW + dt.timedelta(seconds=9))
    assert not ledger.acquire_lease(account_id, "trigger", NOW + dt.timedelta(seconds=9), STALE)
