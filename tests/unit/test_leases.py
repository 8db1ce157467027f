"""Leases (shared/leases.py) over the fake checkpoint store, a fixed clock and a counted
monotonic clock."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest

from shared.clock import FixedClock
from shared.errors import PersistenceError
from shared.leases import CheckpointLease, Lease
from shared.models import SweepCheckpoint
from tests.fakes import EPOCH, FakeCheckpointStore

DURATION = dt.timedelta(minutes=5)
HEARTBEAT = 60.0


class Seconds:
    """The monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FlakyCheckpoints(FakeCheckpointStore):
    """Refuses the next ``failures`` saves as an unreachable store would."""

    failures = 0

    def save(self, checkpoint: SweepCheckpoint) -> SweepCheckpoint:
        if self.failures:
            self.failures -= 1
            raise PersistenceError("table unreachable")
        return super().save(checkpoint)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(EPOCH)


@pytest.fixture
def seconds() -> Seconds:
    return Seconds()


@pytest.fixture
def store() -> FlakyCheckpoints:
    return FlakyCheckpoints()


def lease(store: Any, clock: FixedClock, seconds: Seconds, name: str = "work") -> CheckpointLease:
    return CheckpointLease(
        name, store, clock=clock, monotonic=seconds, duration=DURATION, heartbeat_seconds=HEARTBEAT
    )


def test_a_taken_lease_keeps_a_second_holder_off_until_it_runs_out(store, clock, seconds):
    first, second = lease(store, clock, seconds), lease(store, clock, seconds)

    assert first.take()
    assert store.get("work").leased_until == EPOCH + DURATION
    assert not second.take()
    clock.advance(minutes=6)  # the first holder died without giving it back
    assert second.take()
    assert second.left_unfinished


def test_the_first_lease_ever_taken_has_nothing_unfinished_to_check(store, clock, seconds):
    taken = lease(store, clock, seconds)

    assert taken.take()
    assert not taken.left_unfinished


def test_keep_writes_only_when_a_heartbeat_is_due(store, clock, seconds):
    held = lease(store, clock, seconds)
    held.take()
    etag = store.get("work").etag

    clock.advance(minutes=1)
    seconds.now = HEARTBEAT - 1
    assert held.keep()
    assert store.get("work").etag == etag
    seconds.now = HEARTBEAT
    assert held.keep()
    assert store.get("work").leased_until == EPOCH + dt.timedelta(minutes=1) + DURATION
    extended = store.get("work").etag
    assert held.keep()  # the next heartbeat is not due yet
    assert store.get("work").etag == extended
    assert held.keep(now=True)  # asked for: written at once
    assert store.get("work").etag not in (etag, extended)


def test_a_lease_taken_over_is_lost_and_the_new_holders_row_is_left_alone(store, clock, seconds):
    first, second = lease(store, clock, seconds), lease(store, clock, seconds)
    first.take()
    clock.advance(minutes=6)  # the first holder stalled past its lease ...
    second.take()  # ... and another took it

    assert not first.keep(now=True)
    assert not first.held
    assert first.give_back()
    assert store.get("work").leased_until == clock.now() + DURATION  # still the second's


def test_an_unreachable_store_does_not_lose_the_lease_and_the_next_heartbeat_writes(store, clock, seconds, caplog):
    held = lease(store, clock, seconds)
    held.take()
    store.failures = 1
    clock.advance(minutes=1)

    with caplog.at_level(logging.WARNING, logger="shared.leases"):
        assert held.keep(now=True)
    assert store.get("work").leased_until == EPOCH + DURATION  # not written yet
    assert any("could not be extended" in r.getMessage() for r in caplog.records)
    assert held.keep(now=True)
    assert store.get("work").leased_until == EPOCH + dt.timedelta(minutes=1) + DURATION


def test_a_lease_given_back_finished_is_free_and_clean_for_the_next_holder(store, clock, seconds):
    first = lease(store, clock, seconds)
    first.take()
    first.give_back()
    nxt = lease(store, clock, seconds)

    assert store.get("work").leased_until is None
    assert nxt.take() and not nxt.left_unfinished


def test_a_lease_given_back_unfinished_is_free_but_tells_the_next_holder(store, clock, seconds):
    first = lease(store, clock, seconds)
    first.take()
    first.give_back(finished=False)
    nxt = lease(store, clock, seconds)

    assert store.get("work").leased_until == EPOCH
    assert nxt.take() and nxt.left_unfinished


def test_a_give_back_the_store_refuses_leaves_the_lease_to_run_out(store, clock, seconds):
    first = lease(store, clock, seconds)
    first.take()
    store.failures = 1

    assert first.give_back()
    assert not first.held
    assert store.get("work").leased_until == EPOCH + DURATION


def test_the_resume_point_travels_with_the_lease_to_the_next_holder(store, clock, seconds):
    first = lease(store, clock, seconds)
    first.take()
    first.record("page-2")
    first.keep(now=True)
    assert store.get("work").continuation == "page-2"
    first.record("page-3")
    first.give_back()
    nxt = lease(store, clock, seconds)
    nxt.take()

    assert nxt.continuation == "page-3"


def test_leases_of_different_names_do_not_meet(store, clock, seconds):
    assert lease(store, clock, seconds, "one").take()
    assert lease(store, clock, seconds, "two").take()


# --- the pattern over another store -----------------------------------------------------------


class HolderLease(Lease):
    """A lease held by a holder id in a dict, whose store keeps it for the holder on release
    while work is pending (as a per-account sync lease does)."""

    def __init__(self, rows: dict[str, str], holder: str, **kwargs: Any) -> None:
        super().__init__("account-1", **kwargs)
        self.rows, self.holder = rows, holder
        self.pending_work = False

    def _acquire(self, now: dt.datetime) -> bool:
        return self.rows.setdefault(self.name, self.holder) == self.holder

    def _extend(self, now: dt.datetime) -> bool:
        return self.rows.get(self.name) == self.holder

    def _release(self, now: dt.datetime, *, finished: bool) -> bool:
        if self.pending_work:
            self.pending_work = False
            return False
        self.rows.pop(self.name, None)
        return True


def test_a_store_that_keeps_the_lease_on_release_leaves_it_held(clock, seconds):
    rows: dict[str, str] = {}
    held = HolderLease(rows, "me", clock=clock, monotonic=seconds, heartbeat_seconds=HEARTBEAT)
    other = HolderLease(rows, "them", clock=clock, monotonic=seconds, heartbeat_seconds=HEARTBEAT)
    held.take()
    held.pending_work = True

    assert not other.take()
    assert not held.give_back()  # more work arrived: still ours
    assert held.held and held.keep(now=True)
    assert held.give_back()
    assert not held.held and other.take()
