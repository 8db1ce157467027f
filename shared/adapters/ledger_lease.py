"""The sync lease of one ledger partition: row ``lease`` of table ``mailledger``.

The partition is the sync key (``shared.resources.Resource.sync_key``: the account id for
mail, ``{account id}|drive`` for the drive), so the lease lives beside the rows it fences.
Properties Holder, RenewedAt, Pending, Generation; the row is present only while the lease
is held, inserted to take it, changed and deleted only under its ETag, so two workers never
both believe they hold it. The common path costs one write to take the lease (an insert)
and one to let it go (a delete under the ETag of our last write); reads happen only when
someone else was there.

Why this is not a ``shared.leases.Lease`` (the renewal run's and the sweep's): the port's
take, extend and give-back (``acquire``, a ``commit``, ``release``, which may keep the lease
for pending work) have that shape, but
- the extension is the fence, not a heartbeat: every ``commit`` replaces this row under its
  ETag inside the entity-group transaction of the marks and progress it guards, so the
  writes and the proof are one; a proof the store did not answer stops the round (an event
  published unproven could go out twice), where ``Lease.keep`` keeps going until the
  lease runs out;
- the lease has no expiry of its own: a taker judges staleness from RenewedAt with its own
  ``stale_after``; a refused taker writes (the pending mark); each takeover raises the
  Generation; a disconnect seizes it whoever holds it;
- one object serves every partition and holder of the process (the port is keyed by both),
  where a ``Lease`` is one holder's hold of one name.
What they share is the ETag-conditional write of one row (``table_support.write_entity``).
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.adapters.table_batch import Operation
from shared.adapters.table_plain import delete_plain
from shared.adapters.table_support import Tables, read_entity, utc, write_entity
from shared.errors import ConcurrencyError
from shared.ledger import LEDGER_TABLE, LeaseLostError

if TYPE_CHECKING:
    from azure.data.tables import TableClient

LEASE_ROW = "lease"
# Conditional writes tried before a lease that keeps changing is given up on.
ATTEMPTS = 8


@dataclass
class Held:
    """What this process knows of a lease it holds: the ETag of its last write, the
    generation, and whether that write kept a pending mark."""

    etag: str | None
    generation: int
    pending: bool = False


def _fields(holder: str, now: Any, pending: bool, generation: int) -> dict[str, Any]:
    return {"Holder": holder, "RenewedAt": now, "Pending": pending, "Generation": generation}


def _kept_changing(partition: str) -> ConcurrencyError:
    return ConcurrencyError(f"sync lease of account {partition} kept changing")


class TableSyncLease:
    """The lease rows of table ``mailledger``, and what this process knows of the ones it
    holds (the ETag of its last write), so that the common path reads nothing."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], Held] = {}  # our lease writes: (partition, holder) -> state

    def _client(self) -> TableClient:
        return self._tables.table(LEDGER_TABLE)

    # --- the port's lease calls --------------------------------------------------------------
    def acquire(self, partition: str, holder: str, now: dt.datetime, stale_after: dt.timedelta) -> bool:
        client = self._client()
        for _ in range(ATTEMPTS):
            if self._insert(client, partition, holder, now):
                return True
            entity = read_entity(client, partition, LEASE_ROW)
            if entity is None:
                continue  # released meanwhile: insert again
            current = entity.get("Holder") or ""
            renewed = utc(entity.get("RenewedAt"))
            if not current or current == holder or renewed is None or now - renewed > stale_after:
                if self._take_over(client, partition, holder, now, entity):
                    return True
                continue
            if entity.get("Pending"):
                return False
            marked = dict(entity)
            marked["Pending"] = True
            if self._write(client, partition, marked, entity.metadata["etag"]) is not None:
                return False
        raise _kept_changing(partition)

    def seize(self, partition: str, holder: str, now: dt.datetime) -> dt.datetime | None:
        client = self._client()
        for _ in range(ATTEMPTS):
            if self._insert(client, partition, holder, now):
                return None
            entity = read_entity(client, partition, LEASE_ROW)
            if entity is None:
                continue
            if self._take_over(client, partition, holder, now, entity):
                return utc(entity.get("RenewedAt")) if entity.get("Holder") else None
        raise _kept_changing(partition)

    def release(self, partition: str, holder: str, *, abandon: bool = False) -> bool:
        client = self._client()
        known = self._known(partition, holder)
        if known is not None and known.etag and not known.pending and self._delete(client, partition, known.etag):
            self._remember(partition, holder, None)
            return True
        for _ in range(ATTEMPTS):
            entity = read_entity(client, partition, LEASE_ROW)
            if entity is None or entity.get("Holder") != holder:
                self._remember(partition, holder, None)
                return True
            etag = entity.metadata["etag"]
            generation = int(entity.get("Generation") or 0)
            if entity.get("Pending") and not abandon:
                fields = _fields(holder, entity.get("RenewedAt"), False, generation)
                new_etag = self._write(client, partition, fields, etag)
                if new_etag is not None:
                    self._remember(partition, holder, Held(new_etag, generation))
                    return False
                continue
            # Abandoning after a failure: the queue's retry (or the next trigger) runs a round.
            if self._delete(client, partition, etag):
                self._remember(partition, holder, None)
                return True
        raise _kept_changing(partition)

    # --- the fence of a commit ---------------------------------------------------------------
    def fence(self, partition: str, holder: str, now: dt.datetime) -> tuple[Operation, Held]:
        """The transaction operation that renews the lease under the ETag of our last write
        (read once when we know none), and what it was built from; ``LeaseLostError`` when the
        lease is not ours."""
        held = self._known(partition, holder) or self._current(partition, holder)
        if not held.etag:  # never written unconditionally: that would fence nothing
            held = self._current(partition, holder)
        # Replaced under its ETag: the whole transaction fails (412) if the lease changed.
        return Operation("replace", LEASE_ROW, _fields(holder, now, held.pending, held.generation), held.etag), held

    def fenced(self, partition: str, holder: str, held: Held, etag: str | None) -> None:
        """The transaction carrying ``fence``'s operation went through: ``etag`` is the lease's now."""
        self._remember(partition, holder, Held(etag, held.generation, held.pending) if etag else None)

    def refused(self, partition: str, holder: str) -> None:
        """The transaction was refused on the lease: a pending mark (still ours, the next
        ``fence`` carries it) or a takeover (``LeaseLostError``)."""
        self._remember(partition, holder, None)
        self._current(partition, holder)

    # --- rows and bookkeeping ------------------------------------------------------------------
    def _current(self, partition: str, holder: str) -> Held:
        """Our lease as stored now (after somebody marked it pending); LeaseLostError if not ours."""
        entity = read_entity(self._client(), partition, LEASE_ROW)
        if entity is None or entity.get("Holder") != holder:
            self._remember(partition, holder, None)
            raise LeaseLostError(f"sync lease of account {partition} was taken over")
        held = Held(entity.metadata["etag"], int(entity.get("Generation") or 0), bool(entity.get("Pending")))
        self._remember(partition, holder, held)
        return held

    def _insert(self, client: TableClient, partition: str, holder: str, now: dt.datetime) -> bool:
        etag = self._write(client, partition, _fields(holder, now, False, 1), None)
        if etag is not None:
            self._remember(partition, holder, Held(etag, 1))
        return etag is not None

    def _take_over(self, client: TableClient, partition: str, holder: str, now: dt.datetime, entity: Any) -> bool:
        generation = int(entity.get("Generation") or 0) + 1
        etag = self._write(client, partition, _fields(holder, now, False, generation), entity.metadata["etag"])
        if etag is not None:
            self._remember(partition, holder, Held(etag, generation))
        return etag is not None

    @staticmethod
    def _write(client: TableClient, partition: str, fields: dict[str, Any], etag: str | None) -> str | None:
        entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": LEASE_ROW}
        entity.update((name, value) for name, value in fields.items() if value is not None)
        try:
            return write_entity(client, entity, etag)
        except ConcurrencyError:
            return None

    @staticmethod
    def _delete(client: TableClient, partition: str, etag: str) -> bool:
        return delete_plain(client, partition, LEASE_ROW, etag)

    def _remember(self, partition: str, holder: str, held: Held | None) -> None:
        with self._lock:
            if held is None:
                self._held.pop((partition, holder), None)
            else:
                self._held[(partition, holder)] = held

    def _known(self, partition: str, holder: str) -> Held | None:
        with self._lock:
            return self._held.get((partition, holder))
