"""What a renewal run did: the outcome of each subscription or account it handled, added up.

``Outcome`` is what renewing one subscription, or tending one account in the sweep, came
to; ``RenewalReport`` counts them (from the run's worker threads too), with the events that
are not outcomes of their own (a throttled request, an account swept), and gives the
summary line a run logs.
"""

from __future__ import annotations

import enum
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


class Outcome(enum.Enum):
    RENEWED = "renewed"
    RECREATED = "recreated"  # Graph had dropped it: a new one made, the mailbox resynced
    REISSUED = "reissued"  # signed with a retired key or not current: replaced, resynced
    FAILED = "failed"
    SKIPPED = "skipped"  # not due, in its cooldown, or no active account to renew for
    REAUTH_REQUIRED = "reauth_required"  # the account must sign in again
    DEFERRED = "deferred"  # throttled or out of time: the next run picks it up
    CAUGHT_UP = "caught_up"  # a quiet account got a catch-up sync
    SUBSCRIBED = "subscribed"  # an account without a live subscription got one


@dataclass
class RenewalReport:
    """What one run did; logged as one line and returned (tests read it)."""

    counts: Counter[Outcome] = field(default_factory=Counter)
    swept: int = 0
    throttled: int = 0
    past_due: bool = False
    another_run: bool = False  # another run held the renewal lease: renewals left to it
    stopped_early: bool = False
    duration_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, outcome: Outcome, by: int = 1) -> None:
        with self._lock:
            self.counts[outcome] += by

    def count_throttled(self, times: int = 1) -> None:
        with self._lock:
            self.throttled += times

    @contextmanager
    def throttles_of(self, graph: object) -> Iterator[None]:
        """Counts the 429/503 answers ``graph`` met on this thread meanwhile, retried by it
        or not (its ``throttle_count``). A client that does not count them: nothing here,
        each ``ThrottledError`` counts one (``count_throttled_error``)."""
        before = _throttles(graph)
        try:
            yield
        finally:
            after = _throttles(graph)
            if before is not None and after is not None and after > before:
                self.count_throttled(after - before)

    def count_throttled_error(self, graph: object) -> None:
        """A ``ThrottledError`` reached the run: counted here unless ``graph`` counts its
        throttled answers itself (then ``throttles_of`` has it)."""
        if _throttles(graph) is None:
            self.count_throttled()

    def count_swept(self, accounts: int) -> None:
        with self._lock:
            self.swept += accounts

    @property
    def renewed(self) -> int:
        return self.counts[Outcome.RENEWED]

    @property
    def recreated(self) -> int:
        return self.counts[Outcome.RECREATED]

    @property
    def reissued(self) -> int:
        return self.counts[Outcome.REISSUED]

    @property
    def failed(self) -> int:
        return self.counts[Outcome.FAILED]

    @property
    def skipped(self) -> int:
        return self.counts[Outcome.SKIPPED]

    @property
    def reauth_required(self) -> int:
        return self.counts[Outcome.REAUTH_REQUIRED]

    @property
    def deferred(self) -> int:
        return self.counts[Outcome.DEFERRED]

    @property
    def caught_up(self) -> int:
        return self.counts[Outcome.CAUGHT_UP]

    @property
    def subscribed(self) -> int:
        return self.counts[Outcome.SUBSCRIBED]

    def summary(self) -> str:
        return (
            f"renewed={self.renewed} recreated={self.recreated} reissued={self.reissued} failed={self.failed} "
            f"skipped={self.skipped} reauth_required={self.reauth_required} deferred={self.deferred} "
            f"caught_up={self.caught_up} subscribed={self.subscribed} swept={self.swept} "
            f"throttled={self.throttled} past_due={self.past_due} another_run={self.another_run} "
            f"stopped_early={self.stopped_early} "
            f"duration={self.duration_seconds:.1f}s"
        )


def _throttles(graph: object) -> int | None:
    # Only the real Graph adapter counts the throttled answers it absorbed (per thread);
    # the port does not promise it.
    counter = getattr(graph, "throttle_count", None)
    return counter() if callable(counter) else None
