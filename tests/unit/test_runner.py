"""The bounded runner (shared/runner.py) with trivial jobs: numbers, sleeps and a fake clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.runner import BoundedRunner, KeyedGates, Retry


class FakeTime:
    """A monotonic clock that moves only when slept on (or advanced by a job)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class Gauge:
    """How many jobs run at once, at most."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self.running -= 1


def counted(items: list[int], pulled: list[int]) -> Iterator[int]:
    for item in items:
        pulled.append(item)
        yield item


def runner(pool: ThreadPoolExecutor, **kwargs: Any) -> BoundedRunner[Any, Any]:
    values: dict[str, Any] = {"capacity": 4, "deadline": float("inf")}
    values.update(kwargs)
    return BoundedRunner(pool, **values)


def test_every_item_is_handed_back_once_in_the_calling_thread():
    handed: list[tuple[int, int, str]] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        end = runner(pool).run(
            range(50), lambda n: n * n, lambda n, square: handed.append((n, square, threading.current_thread().name))
        )

    assert sorted((n, square) for n, square, _ in handed) == [(n, n * n) for n in range(50)]
    assert {thread for _, _, thread in handed} == {threading.current_thread().name}
    assert not end.stopped and end.left == []


def test_no_more_than_capacity_items_run_at_once_even_on_a_larger_pool():
    gauge = Gauge()

    def work(n: int) -> int:
        with gauge:
            time.sleep(0.01)
        return n

    done: list[int] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        runner(pool, capacity=3).run(range(30), work, lambda n, _: done.append(n))

    assert sorted(done) == list(range(30))
    assert 1 < gauge.peak <= 3


def test_items_are_read_only_as_capacity_frees():
    release = threading.Event()
    pulled: list[int] = []
    done: list[int] = []

    def work(n: int) -> int:
        release.wait(5)
        return n

    with ThreadPoolExecutor(max_workers=2) as pool:
        thread = threading.Thread(
            target=runner(pool, capacity=3).run, args=(counted(list(range(100)), pulled), work, lambda n, _: done.append(n))
        )
        thread.start()
        deadline = time.monotonic() + 5
        while len(pulled) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # time enough to read more, were it not bounded
        read_while_blocked = len(pulled)
        release.set()
        thread.join(10)

    assert read_while_blocked == 3
    assert sorted(done) == list(range(100))


def test_a_job_asking_for_a_retry_runs_again_once_its_time_has_come():
    clock = FakeTime()
    started_at: list[float] = []

    def work(n: int) -> Any:
        started_at.append(clock.monotonic())
        return Retry(30.0) if len(started_at) == 1 else "done"

    done: list[tuple[int, Any]] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        end = runner(pool, monotonic=clock.monotonic, sleep=clock.sleep).run([7], work, lambda n, r: done.append((n, r)))

    assert done == [(7, "done")]
    assert started_at == [0.0, 30.0]
    assert not end.stopped


def test_other_items_run_while_one_waits_for_its_retry():
    clock = FakeTime()
    order: list[str] = []

    def work(name: str) -> Any:
        order.append(name)
        if name == "slow" and order.count("slow") == 1:
            return Retry(10.0)
        clock.advance(4.0)  # each other job takes 4 seconds
        return name

    with ThreadPoolExecutor(max_workers=1) as pool:
        runner(pool, capacity=1, monotonic=clock.monotonic, sleep=clock.sleep).run(
            ["slow", "a", "b", "c", "d"], work, lambda *_: None
        )

    assert order == ["slow", "a", "b", "c", "slow", "d"]  # due at 10 s, run after c (at 12 s)


def test_nothing_starts_after_the_deadline_and_what_runs_finishes():
    clock = FakeTime()
    pulled: list[int] = []

    def work(n: int) -> int:
        clock.advance(10.0)
        return n

    done: list[int] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        end = runner(pool, capacity=1, deadline=25.0, monotonic=clock.monotonic).run(
            counted(list(range(10)), pulled), work, lambda n, _: done.append(n)
        )

    assert done == [0, 1, 2]  # started at 0, 10 and 20 s
    assert pulled == [0, 1, 2]
    assert end.stopped and end.left == []


def test_a_keep_alive_that_fails_stops_new_starts():
    alive = True

    def finished(n: int, _: int) -> None:
        nonlocal alive
        done.append(n)
        if n == 1:
            alive = False

    done: list[int] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        end = runner(pool, capacity=1, keep_alive=lambda: alive).run(range(10), lambda n: n, finished)

    assert done == [0, 1]
    assert end.stopped


def test_the_keep_alive_is_asked_while_a_long_job_runs():
    asked = 0

    def keep_alive() -> bool:
        nonlocal asked
        asked += 1
        return True

    with ThreadPoolExecutor(max_workers=1) as pool:
        runner(pool, keep_alive=keep_alive, keep_alive_every=0.02).run([1], lambda n: time.sleep(0.3), lambda *_: None)

    assert asked >= 5


def test_jobs_still_waiting_for_their_retry_at_the_deadline_are_left():
    clock = FakeTime()
    done: list[str] = []

    def work(name: str) -> Any:
        return Retry(100.0) if name == "throttled" else name

    with ThreadPoolExecutor(max_workers=1) as pool:
        end = runner(pool, deadline=50.0, monotonic=clock.monotonic, sleep=clock.sleep).run(
            ["throttled", "fine"], work, lambda name, _: done.append(name)
        )

    assert done == ["fine"]
    assert end.stopped and end.left == ["throttled"]
    assert clock.now == 50.0  # waited for the deadline, not the full 100 s


def test_a_retry_asked_for_by_a_job_in_flight_when_the_run_stops_is_left():
    alive = True
    go = threading.Event()

    def work(name: str) -> Any:
        if name == "throttled":
            go.wait(5)
            return Retry(0.0)
        return name

    def finished(name: str, _: Any) -> None:
        nonlocal alive
        alive = False  # the lease is lost while "throttled" is still running
        go.set()

    with ThreadPoolExecutor(max_workers=2) as pool:
        end = runner(pool, keep_alive=lambda: alive).run(["throttled", "fine"], work, finished)

    assert end.stopped and end.left == ["throttled"]


def test_an_error_the_work_raises_comes_out_of_the_run():
    def work(n: int) -> int:
        raise RuntimeError("unhandled")

    with ThreadPoolExecutor(max_workers=1) as pool, pytest.raises(RuntimeError):
        runner(pool).run([1], work, lambda *_: None)


def test_a_capacity_below_one_is_refused():
    with ThreadPoolExecutor(max_workers=1) as pool, pytest.raises(ValueError):
        BoundedRunner(pool, capacity=0, deadline=1.0)


# --- one at a time per key ------------------------------------------------------------------


def test_gates_let_one_holder_at_a_time_per_key_and_different_keys_together():
    per_key = {"a": Gauge(), "b": Gauge()}
    overall = Gauge()
    gates = KeyedGates()

    def hold(key: str) -> None:
        with gates.hold(key), per_key[key], overall:
            time.sleep(0.02)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(hold, ["a", "b"] * 6))

    assert per_key["a"].peak == 1 and per_key["b"].peak == 1
    assert overall.peak == 2
