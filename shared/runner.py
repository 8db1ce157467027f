"""Many small jobs on a thread pool, within bounds: the scheduler under the renewal run.

``BoundedRunner`` knows nothing of subscriptions or Graph. It reads its items lazily, keeps
at most ``capacity`` of them in flight on the pool it is given, and stops picking new ones
at a deadline or as soon as a keep-alive callback says so (the caller's lease was lost,
say). A job's work returns its result, or ``Retry`` to be run again once some seconds have
passed (a throttled request's Retry-After); results are handed back one at a time, in the
calling thread, in the order the jobs finish. When it stops early, what is in flight
finishes, and the jobs still waiting for their retry are handed back as ``left``.

``KeyedGates`` lets one job at a time hold a key (a mailbox, for example).
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True)
class Retry:
    """A job's answer for "not now": run it again after ``after_seconds``."""

    after_seconds: float


@dataclass
class RunnerEnd(Generic[J]):
    """How a run of the runner ended."""

    # Stopped by the deadline or the keep-alive before every item had run.
    stopped: bool = False
    # Jobs that asked for a retry and were not run again before the stop.
    left: list[J] = field(default_factory=list)


def _alive() -> bool:
    return True


class BoundedRunner(Generic[J, R]):
    """Runs ``work`` over items on ``pool``: at most ``capacity`` submitted and not yet
    handed back, none started at or after ``deadline`` (on the ``monotonic`` clock), and
    ``keep_alive`` asked before each new start and at least every ``keep_alive_every``
    seconds while waiting. ``work`` handles its own failures: an exception it raises comes
    out of ``run``."""

    def __init__(
        self,
        pool: Executor,
        *,
        capacity: int,
        deadline: float,
        monotonic: Callable[[], float] = time.monotonic,
        keep_alive: Callable[[], bool] = _alive,
        keep_alive_every: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._pool = pool
        self._capacity = capacity
        self._deadline = deadline
        self._monotonic = monotonic
        self._keep_alive = keep_alive
        self._keep_alive_every = keep_alive_every
        self._sleep = sleep

    def run(self, items: Iterable[J], work: Callable[[J], R | Retry], done: Callable[[J, R], None]) -> RunnerEnd[J]:
        """Runs every item (or until stopped); ``done(item, result)`` for each result."""
        end: RunnerEnd[J] = RunnerEnd()
        source: Iterator[J] = iter(items)
        pending: dict[Future[R | Retry], J] = {}
        # Finished jobs arrive here, one at a time: waiting on all pending futures at once
        # (concurrent.futures.wait) would cost work in proportion to how many are pending.
        finished: queue.SimpleQueue[Future[R | Retry]] = queue.SimpleQueue()
        retries: list[tuple[float, int, J]] = []  # (ready at, tie-breaker, item)
        order = itertools.count()
        exhausted = False

        def submit(item: J) -> None:
            future = self._pool.submit(work, item)
            pending[future] = item
            future.add_done_callback(finished.put)

        while True:
            if self._monotonic() >= self._deadline or not self._keep_alive():
                end.stopped = True
                break
            clock = self._monotonic()
            while retries and retries[0][0] <= clock and len(pending) < self._capacity:
                submit(heapq.heappop(retries)[2])
            if not exhausted and len(pending) < self._capacity:
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                else:
                    submit(item)
                continue
            if exhausted and not pending and not retries:
                break
            timeout = max(0.0, min(retries[0][0] - clock, self._deadline - clock)) if retries else None
            if not pending:
                self._sleep(timeout or 0.0)
                continue
            if timeout is None:
                timeout = self._keep_alive_every
            try:
                future = finished.get(timeout=timeout)
            except queue.Empty:
                continue
            item = pending.pop(future)
            result = future.result()
            if isinstance(result, Retry):
                heapq.heappush(retries, (self._monotonic() + result.after_seconds, next(order), item))
            else:
                done(item, result)
        # Stopped: what is in flight finishes; a retry it asks for is left, like the waiting ones.
        for future in list(pending):
            result = future.result()
            item = pending.pop(future)
            if isinstance(result, Retry):
                end.left.append(item)
            else:
                done(item, result)
        end.left.extend(item for _, _, item in retries)
        return end


class KeyedGates:
    """One holder at a time per key; entries vanish when unused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._lock:
            gate, users = self._gates.get(key, (threading.Lock(), 0))
            self._gates[key] = (gate, users + 1)
        try:
            with gate:
                yield
        finally:
            with self._lock:
                gate, users = self._gates[key]
                if users <= 1:
                    del self._gates[key]
                else:
                    self._gates[key] = (gate, users - 1)
