"""The ``MailLedger`` port (shared/ports.py) as a contract: the same assertions run against
the fake of the unit tests (tests/fakes.py) and the Table Storage adapter on a real Azurite,
so that a unit test passing against the fake means the same against the adapter.

What is checked: marks (every field, the content tag, name and path included, ids a table key cannot
hold, many at once), ``live_message_ids``, the sync lease (one holder at a time, the
pending mark, takeover of a stale lease and not of a live one, ``seize_lease``), ``commit``
under the lease (it renews the lease, keeps a pending mark, and a holder that lost the
lease writes nothing), the round's progress, ``forget_account``, and a second partition of
one account (the drive's sync key) that shares nothing with the first.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator

import pytest

from shared.adapters.ledger import TableMailLedger
from shared.ledger import LeaseLostError, LedgerMark, MailLedger, SyncProgress
from shared.resources import DRIVE
from tests.fakes import FakeMailLedger

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
STALE = dt.timedelta(seconds=60)


@pytest.fixture(params=["fake", "azurite"])
def ledger(request: pytest.FixtureRequest) -> Iterator[MailLedger]:
    if request.param == "fake":
        yield FakeMailLedger()
    else:
        yield TableMailLedger(request.getfixturevalue("azurite").connection_string)


@pytest.fixture
def account_id() -> str:
    return f"{uuid.uuid4()}.{uuid.uuid4()}"


# --- marks ------------------------------------------------------------------------------


def test_marks_are_recorded_and_read_back_by_message_id(ledger: MailLedger, account_id: str) -> None:
    # Graph ids may hold characters a RowKey refuses ("/"): the adapter hashes them.
    ids = ["AAMkAG/1+x==", "AAMkAG?2#", "AAMkAG3"]
    ledger.record(account_id, [LedgerMark(ids[0], "ck1"), LedgerMark(ids[1], None, removed=True)])
    assert ledger.marks(account_id, ids) == {
        ids[0]: LedgerMark(ids[0], "ck1"),
        ids[1]: LedgerMark(ids[1], None, removed=True),
    }
    assert list(ledger.live_message_ids(account_id)) == [ids[0]]


def test_a_mark_keeps_every_field_and_the_last_write_of_a_message_wins(ledger: MailLedger, account_id: str) -> None:
    first = LedgerMark(
        "m-1", "ck1", seen_in="full-1", folder="inbox", content_tag="ctag-1", name="Q3 report.docx",
        path="/Docs/Q3 report.docx",
    )
    ledger.record(account_id, [first])
    assert ledger.marks(account_id, ["m-1"]) == {"m-1": first}

    moved = LedgerMark("m-1", "ck2", seen_in="full-2", folder="archive", content_tag="ctag-2")
    ledger.record(account_id, [LedgerMark("m-1", "ck-between"), moved])
    assert ledger.marks(account_id, ["m-1", "m-1"]) == {"m-1": moved}  # name and path gone with the write


def test_a_large_lookup_and_a_large_record_span_several_transactions(ledger: MailLedger, account_id: str) -> None:
    marks = [LedgerMark(f"m{n}", f"ck{n}") for n in range(250)]
    ledger.record(account_id, marks)
    found = ledger.marks(account_id, [m.message_id for m in marks] + ["absent"])
    assert len(found) == 250 and found["m249"].change_key == "ck249"
    assert sorted(ledger.live_message_ids(account_id)) == sorted(m.message_id for m in marks)


# --- the sync lease ---------------------------------------------------------------------


def test_one_holder_at_a_time_and_the_pending_mark_makes_the_holder_run_again(
    ledger: MailLedger, account_id: str
) -> None:
    assert ledger.acquire_lease(account_id, "a", NOW, STALE)
    assert not ledger.acquire_lease(account_id, "b", NOW, STALE)
    assert ledger.renew_lease(account_id, "a", NOW + dt.timedelta(seconds=10))
    assert ledger.release_lease(account_id, "a") is False  # b's work is pending
    assert ledger.release_lease(account_id, "a") is True
    assert ledger.acquire_lease(account_id, "b", NOW, STALE)
    assert ledger.release_lease(account_id, "b") is True


def test_abandoning_lets_go_of_the_lease_even_with_work_pending(ledger: MailLedger, account_id: str) -> None:
    assert ledger.acquire_lease(account_id, "a", NOW, STALE)
    assert not ledger.acquire_lease(account_id, "b", NOW, STALE)
    assert ledger.release_lease(account_id, "a", abandon=True) is True
    assert ledger.acquire_lease(account_id, "b", NOW, STALE)


def test_a_stale_lease_is_taken_over_and_its_old_holder_notices(ledger: MailLedger, account_id: str) -> None:
    assert ledger.acquire_lease(account_id, "dead", NOW, STALE)
    assert not ledger.acquire_lease(account_id, "early", NOW + STALE, STALE)  # not stale yet
    assert ledger.acquire_lease(account_id, "alive", NOW + 2 * STALE, STALE)
    assert not ledger.renew_lease(account_id, "dead", NOW + 2 * STALE)
    assert ledger.release_lease(account_id, "dead") is True  # nothing of its own to release
    assert not ledger.acquire_lease(account_id, "third", NOW + 2 * STALE, STALE)


def test_of_many_concurrent_contenders_exactly_one_gets_the_lease(ledger: MailLedger, account_id: str) -> None:
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


def test_a_seized_lease_fences_out_its_holder_and_tells_its_last_proof(ledger: MailLedger, account_id: str) -> None:
    assert ledger.seize_lease(account_id, "disconnect-1", NOW) is None  # nobody held it
    ledger.forget_account(account_id)
    assert ledger.acquire_lease(account_id, "round", NOW, STALE)
    proved = NOW + dt.timedelta(seconds=7)
    assert ledger.renew_lease(account_id, "round", proved)
    assert ledger.seize_lease(account_id, "disconnect-2", NOW + dt.timedelta(seconds=8)) == proved
    assert not ledger.renew_lease(account_id, "round", NOW + dt.timedelta(seconds=9))
    assert not ledger.acquire_lease(account_id, "trigger", NOW + dt.timedelta(seconds=9), STALE)


# --- the fence: marks and progress land only while the writer holds the lease -------------


def test_a_holder_that_lost_its_lease_writes_no_mark_and_no_progress(ledger: MailLedger, account_id: str) -> None:
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


def test_a_commit_without_the_lease_writes_nothing(ledger: MailLedger, account_id: str) -> None:
    with pytest.raises(LeaseLostError):
        ledger.commit(account_id, "nobody", NOW, [LedgerMark("m-1", "ck")], SyncProgress("next", "first", "r1"))
    assert ledger.marks(account_id, ["m-1"]) == {}
    assert ledger.progress(account_id) is None


def test_a_commit_renews_the_lease(ledger: MailLedger, account_id: str) -> None:
    assert ledger.acquire_lease(account_id, "a", NOW, STALE)
    ledger.commit(account_id, "a", NOW + dt.timedelta(seconds=50), [LedgerMark("m-1", "ck")], None)
    # Stale counted from the acquire, live from the commit: the commit proved it.
    assert not ledger.acquire_lease(account_id, "b", NOW + dt.timedelta(seconds=70), STALE)
    assert ledger.release_lease(account_id, "a") is False  # b's work is pending


def test_progress_and_marks_of_a_large_page_are_committed_with_the_lease_and_cleared_at_the_end(
    ledger: MailLedger, account_id: str
) -> None:
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


def test_progress_keeps_its_folder(ledger: MailLedger, account_id: str) -> None:
    assert ledger.acquire_lease(account_id, "a", NOW, STALE)
    kept = SyncProgress("https://graph/next?skip=10", "incremental", "r-2", "archive")
    ledger.commit(account_id, "a", NOW, [], kept)
    assert ledger.progress(account_id) == kept


def test_a_pending_mark_does_not_fence_out_the_holder_and_is_kept(ledger: MailLedger, account_id: str) -> None:
    assert ledger.acquire_lease(account_id, "a", NOW, STALE)
    assert not ledger.acquire_lease(account_id, "b", NOW, STALE)  # marks work pending
    ledger.commit(account_id, "a", NOW + dt.timedelta(seconds=5), [LedgerMark("m-1", "ck")], None)
    assert ledger.marks(account_id, ["m-1"]) == {"m-1": LedgerMark("m-1", "ck")}
    assert ledger.release_lease(account_id, "a") is False  # the pending mark survived the commit


# --- forgetting an account, and a second partition of one account ---------------------------


def test_forget_account_drops_marks_lease_and_progress_and_fences_out_the_holder(
    ledger: MailLedger, account_id: str
) -> None:
    assert ledger.acquire_lease(account_id, "a", NOW, STALE)
    ledger.commit(account_id, "a", NOW, [LedgerMark(f"m-{n}", "ck") for n in range(120)], SyncProgress("n", "first", "r"))

    ledger.forget_account(account_id)
    ledger.forget_account(account_id)  # idempotent

    assert ledger.marks(account_id, ["m-0", "m-119"]) == {}
    assert list(ledger.live_message_ids(account_id)) == []
    assert ledger.progress(account_id) is None
    with pytest.raises(LeaseLostError):
        ledger.commit(account_id, "a", NOW, [LedgerMark("m-0", "ck")], None)
    assert ledger.marks(account_id, ["m-0"]) == {}
    assert ledger.acquire_lease(account_id, "b", NOW, STALE)  # free again at once


def test_the_drive_partition_of_an_account_shares_nothing_with_its_mail_partition(
    ledger: MailLedger, account_id: str
) -> None:
    drive = DRIVE.sync_key(account_id)
    assert drive != account_id
    assert ledger.acquire_lease(account_id, "mail-round", NOW, STALE)
    assert ledger.acquire_lease(drive, "drive-round", NOW, STALE)  # its own lease
    ledger.commit(drive, "drive-round", NOW, [LedgerMark("item-1", None, content_tag="ctag")], SyncProgress("d", "first", "r"))

    assert ledger.marks(account_id, ["item-1"]) == {}
    assert ledger.progress(account_id) is None
    assert ledger.marks(drive, ["item-1"]) == {"item-1": LedgerMark("item-1", None, content_tag="ctag")}
    with pytest.raises(LeaseLostError):
        ledger.commit(drive, "mail-round", NOW, [LedgerMark("item-2", "ck")], None)
    assert ledger.release_lease(account_id, "mail-round") is True
    assert ledger.release_lease(drive, "drive-round") is True
