"""Leases: one holder at a time for a piece of work that outlives a single write.

``Lease`` is the pattern: taken once, extended every heartbeat while the work lasts (a
lease not extended runs out, so a crashed holder frees it by itself), given back at the
end. Losing it (another holder took it over) ends the work; a store that cannot be reached
for an extension does not, as the lease holds until it runs out and the next heartbeat
tries again. Where it is written is the subclass's part: ``_acquire``, ``_extend``,
``_release``. A store may keep the lease for its holder on release (work arrived meanwhile):
``give_back`` then says so and the lease stays held. The heartbeat clock is the caller's: a
monotonic one, or the injected clock's ``now().timestamp()`` where tests move time by hand.

``CheckpointLease`` keeps it in a named row of the checkpoint store under the row's ETag:
the renewal run's lease and the account sweep's, whose resume point (``continuation``)
travels with it.

The mail ledger's per-partition sync lease has this shape but is not a ``Lease``: its
extension is the fence of a round's writes, carried in their entity-group transactions, and
a proof the store did not answer stops the round rather than holding on until the lease
runs out (``shared/adapters/ledger_lease.py``, docs/design.md "State").
"""

from __future__ import annotations

import datetime as dt
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.errors import ConcurrencyError, ConnectorError
from shared.models import SweepCheckpoint

if TYPE_CHECKING:
    from shared.ports import CheckpointStore, Clock

log = logging.getLogger(__name__)


class Lease(ABC):
    """A named lease (see the module docstring). ``monotonic`` paces the heartbeats:
    ``keep`` writes only when ``heartbeat_seconds`` have passed on it since the last write."""

    def __init__(
        self, name: str, *, clock: Clock, monotonic: Callable[[], float], heartbeat_seconds: float
    ) -> None:
        self.name = name
        self._clock = clock
        self._monotonic = monotonic
        self._heartbeat_seconds = heartbeat_seconds
        self._held = False
        self._extended_at = 0.0

    @property
    def held(self) -> bool:
        return self._held

    def take(self) -> bool:
        """False when another holder has it; ``ConnectorError`` when the store is unreachable."""
        if not self._acquire(self._clock.now()):
            return False
        self._held = True
        self._extended_at = self._monotonic()
        return True

    def keep(self, *, now: bool = False) -> bool:
        """Extends the lease when a heartbeat is due (or ``now``); False once it is lost."""
        if not self._held:
            return False
        if not now and self._monotonic() - self._extended_at < self._heartbeat_seconds:
            return True
        try:
            kept = self._extend(self._clock.now())
        except ConnectorError as exc:
            # Not lost yet: it holds until it runs out; tried again at the next heartbeat.
            log.warning("lease %s could not be extended (%s)", self.name, type(exc).__name__)
            return True
        if not kept:
            log.warning("lease %s was taken over by another holder; stopping", self.name)
            self._held = False
            return False
        self._extended_at = self._monotonic()
        return True

    def give_back(self, *, finished: bool = True) -> bool:
        """Lets go of the lease, saying whether the work got done. False when the store
        keeps it for this holder instead (a store may, when more work arrived meanwhile)."""
        if not self._held:
            return True
        try:
            released = self._release(self._clock.now(), finished=finished)
        except ConnectorError as exc:
            log.warning("lease %s is left to run out (%s)", self.name, type(exc).__name__)
            released = True
        self._held = not released
        return released

    @abstractmethod
    def _acquire(self, now: dt.datetime) -> bool:
        """Writes the lease as ours; False when another holder has it."""

    @abstractmethod
    def _extend(self, now: dt.datetime) -> bool:
        """Writes the lease as ours for longer; False when another holder took it over."""

    @abstractmethod
    def _release(self, now: dt.datetime, *, finished: bool) -> bool:
        """Writes the lease as free; False when the store keeps it for us."""


class CheckpointLease(Lease):
    """A lease in a named row of the checkpoint store, written under the row's ETag, valid
    for ``duration`` from each write. A holder that did not finish its work gives it back
    run out rather than cleared, and the next holder sees ``left_unfinished``."""

    def __init__(
        self,
        name: str,
        store: CheckpointStore,
        *,
        clock: Clock,
        monotonic: Callable[[], float],
        duration: dt.timedelta,
        heartbeat_seconds: float,
    ) -> None:
        super().__init__(name, clock=clock, monotonic=monotonic, heartbeat_seconds=heartbeat_seconds)
        self._store = store
        self._duration = duration
        self._row: SweepCheckpoint | None = None
        # The holder before us did not give the lease back cleanly (a crash, a stall, work
        # it could not finish): what it wrote may need checking.
        self.left_unfinished = False

    @property
    def continuation(self) -> str | None:
        return None if self._row is None else self._row.continuation

    def record(self, continuation: str | None) -> None:
        """Where the work resumes; stored with the next extension or the give-back."""
        if self._row is not None:
            self._row.continuation = continuation

    def _acquire(self, now: dt.datetime) -> bool:
        try:
            row = self._store.get(self.name) or SweepCheckpoint(self.name)
            if row.leased_until is not None and row.leased_until > now:
                return False
            unfinished = row.leased_until is not None
            row.leased_until = now + self._duration
            self._row = self._store.save(row)
        except ConcurrencyError:
            return False  # taken by another holder between our read and our write
        self.left_unfinished = unfinished
        return True

    def _extend(self, now: dt.datetime) -> bool:
        assert self._row is not None
        self._row.leased_until = now + self._duration
        try:
            self._row = self._store.save(self._row)
        except ConcurrencyError:
            self._row = None
            return False
        return True

    def _release(self, now: dt.datetime, *, finished: bool) -> bool:
        assert self._row is not None
        row, self._row = self._row, None
        row.leased_until = None if finished else now
        self._store.save(row)
        return True
