"""Table Storage adapter of the mail ledger (``shared.ledger``).

Table ``mailledger``, PartitionKey = account id:
- RowKey ``m{sha256(message id)[:40]}``: one mark per published message (Graph ids may
  hold characters a RowKey refuses, hence the hash; the id itself is a property);
- RowKey ``lease``: the account's sync lease (Holder, RenewedAt, Pending, Generation),
  present only while held; inserted to take it, changed and deleted only under its ETag,
  so two workers never both believe they hold it;
- RowKey ``progress``: where an unfinished round resumes (Link, Mode, RoundId; an empty
  Link when no round is under way).
Marks of a page are read by parallel point reads. A round writes its marks and its progress
with ``commit``: entity-group transactions of up to 98 marks plus the lease row (replaced
under its ETag, which renews it) plus, in the last one, the progress row. One partition,
so the store applies each transaction whole or not at all: a holder that lost the lease
writes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.adapters.table_batch import BatchRefusedError, Operation, read_plain, submit_changeset
from shared.adapters.table_support import Tables, read_entity, utc, write_entity
from shared.errors import ConcurrencyError, PersistenceError
from shared.ledger import LEDGER_TABLE, LeaseLostError, LedgerMark, SyncProgress

if TYPE_CHECKING:
    from azure.data.tables import TableClient

_LEASE_ROW = "lease"
_PROGRESS_ROW = "progress"
_MARK_PREFIX = "m"
_BATCH = 100
_MARKS_PER_COMMIT = _BATCH - 2  # the lease row and the progress row ride along
# Threads for the point reads of every round of the process: one page's reads run side by
# side, and so do the rounds of many accounts (a burst): a pool of 8 made them wait for
# each other's reads.
_READ_THREADS = 64
_ATTEMPTS = 8


def _row(message_id: str) -> str:
    return _MARK_PREFIX + hashlib.sha256(message_id.encode()).hexdigest()[:40]


def _mark_from(entity: Any) -> LedgerMark:
    return LedgerMark(
        str(entity["MessageId"]),
        entity.get("ChangeKey") or None,
        bool(entity.get("Removed", False)),
        entity.get("SeenIn") or None,
        entity.get("Folder") or None,
        entity.get("ContentTag") or None,
    )


def _mark_entity(account_id: str, mark: LedgerMark) -> dict[str, Any]:
    return {
        "PartitionKey": account_id,
        "RowKey": _row(mark.message_id),
        "MessageId": mark.message_id,
        "ChangeKey": mark.change_key or "",
        "Removed": mark.removed,
        "SeenIn": mark.seen_in or "",
        "Folder": mark.folder or "",
        "ContentTag": mark.content_tag or "",
    }


def _mark_operation(mark: LedgerMark) -> Operation:
    entity = _mark_entity("", mark)
    del entity["PartitionKey"], entity["RowKey"]
    return Operation("upsert", _row(mark.message_id), entity)


@dataclass
class _Held:
    """What this process knows of a lease it holds: the ETag of its last write, the
    generation, and whether that write kept a pending mark."""

    etag: str | None
    generation: int
    pending: bool = False


class TableMailLedger:
    def __init__(self, connection: str) -> None:
        self._tables = Tables.for_connection(connection)
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], _Held] = {}  # our lease writes: (account, holder) -> state
        self._pool = ThreadPoolExecutor(max_workers=_READ_THREADS, thread_name_prefix="mailledger")

    def _client(self) -> TableClient:
        return self._tables.table(LEDGER_TABLE)

    # marks ------------------------------------------------------------------------------
    def marks(self, account_id: str, message_ids: Sequence[str]) -> dict[str, LedgerMark]:
        # Point reads only, in parallel for a page: their cost does not grow with the
        # account's history, a partition scan's would.
        client = self._client()
        wanted = list(dict.fromkeys(message_ids))

        def read(message_id: str) -> Any | None:
            return read_plain(client, account_id, _row(message_id))

        if len(wanted) <= 1:
            entities = [read(m) for m in wanted]
        else:
            entities = list(self._pool.map(read, wanted))
        return {m: _mark_from(e) for m, e in zip(wanted, entities, strict=True) if e is not None}

    def record(self, account_id: str, marks: Sequence[LedgerMark]) -> None:
        client = self._client()
        operations = [_mark_operation(mark) for mark in {m.message_id: m for m in marks}.values()]
        try:
            for start in range(0, len(operations), _BATCH):
                submit_changeset(client, account_id, operations[start : start + _BATCH])
        except BatchRefusedError as exc:
            raise PersistenceError(f"write to table {LEDGER_TABLE} failed: {exc}") from exc

    def live_message_ids(self, account_id: str, *, unseen_in: str | None = None) -> Iterator[str]:
        for entity in self._partition_marks(self._client(), account_id):
            if entity.get("Removed", False):
                continue
            if unseen_in is not None and entity.get("SeenIn") == unseen_in:
                continue
            yield str(entity["MessageId"])

    def progress(self, account_id: str) -> SyncProgress | None:
        entity = read_entity(self._client(), account_id, _PROGRESS_ROW)
        if entity is None or not entity.get("Link"):
            return None
        return SyncProgress(
            str(entity["Link"]),
            str(entity.get("Mode") or ""),
            str(entity.get("RoundId") or ""),
            entity.get("Folder") or None,
        )

    def forget_account(self, account_id: str) -> None:
        from azure.core.exceptions import AzureError

        client = self._client()
        try:
            entities = client.query_entities(
                "PartitionKey eq @pk", parameters={"pk": account_id}, select=["RowKey"]
            )
            rows = [e["RowKey"] for e in entities]
            for start in range(0, len(rows), _BATCH):
                client.submit_transaction(
                    [
                        ("delete", {"PartitionKey": account_id, "RowKey": row})
                        for row in rows[start : start + _BATCH]
                    ]
                )
        except AzureError as exc:
            raise PersistenceError(f"delete from table {LEDGER_TABLE} failed: {type(exc).__name__}") from exc

    @staticmethod
    def _partition_marks(client: TableClient, account_id: str) -> Iterator[Any]:
        from azure.core.exceptions import AzureError

        try:
            yield from client.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": account_id, "lo": _MARK_PREFIX, "hi": chr(ord(_MARK_PREFIX) + 1)},
            )
        except AzureError as exc:
            raise PersistenceError(f"read from table {LEDGER_TABLE} failed: {type(exc).__name__}") from exc

    # lease ------------------------------------------------------------------------------
    # The common path costs one write to take the lease (an insert) and one to let it go (a
    # delete under the ETag of our last write); reads happen only when someone else was there.
    def _lease_write(
        self, client: TableClient, account_id: str, fields: dict[str, Any], etag: str | None
    ) -> str | None:
        entity: dict[str, Any] = {"PartitionKey": account_id, "RowKey": _LEASE_ROW}
        entity.update((name, value) for name, value in fields.items() if value is not None)
        try:
            return write_entity(client, entity, etag)
        except ConcurrencyError:
            return None

    def _lease_delete(self, client: TableClient, account_id: str, etag: str) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError

        try:
            client.delete_entity(
                account_id, _LEASE_ROW, etag=etag, match_condition=MatchConditions.IfNotModified
            )
            return True
        except ResourceNotFoundError:
            return True
        except ResourceModifiedError:
            return False
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 412:
                return False
            raise PersistenceError(f"delete from table {LEDGER_TABLE} failed: {type(exc).__name__}") from exc

    def _remember(self, account_id: str, holder: str, held: _Held | None) -> None:
        with self._lock:
            if held is None:
                self._held.pop((account_id, holder), None)
            else:
                self._held[(account_id, holder)] = held

    def _known(self, account_id: str, holder: str) -> _Held | None:
        with self._lock:
            return self._held.get((account_id, holder))

    @staticmethod
    def _lease_fields(holder: str, now: Any, pending: bool, generation: int) -> dict[str, Any]:
        return {"Holder": holder, "RenewedAt": now, "Pending": pending, "Generation": generation}

    def acquire_lease(
        self, account_id: str, holder: str, now: dt.datetime, stale_after: dt.timedelta
    ) -> bool:
        client = self._client()
        for _ in range(_ATTEMPTS):
            etag = self._lease_write(client, account_id, self._lease_fields(holder, now, False, 1), None)
            if etag is not None:
                self._remember(account_id, holder, _Held(etag, 1))
                return True
            entity = read_entity(client, account_id, _LEASE_ROW)
            if entity is None:
                continue  # released meanwhile: insert again
            current = entity.get("Holder") or ""
            renewed = utc(entity.get("RenewedAt"))
            generation = int(entity.get("Generation") or 0) + 1
            if not current or current == holder or renewed is None or now - renewed > stale_after:
                fresh = self._lease_fields(holder, now, False, generation)
                etag = self._lease_write(client, account_id, fresh, entity.metadata["etag"])
                if etag is not None:
                    self._remember(account_id, holder, _Held(etag, generation))
                    return True
                continue
            if entity.get("Pending"):
                return False
            marked = dict(entity)
            marked["Pending"] = True
            if self._lease_write(client, account_id, marked, entity.metadata["etag"]) is not None:
                return False
        raise ConcurrencyError(f"sync lease of account {account_id} kept changing")

    def seize_lease(self, account_id: str, holder: str, now: dt.datetime) -> dt.datetime | None:
        client = self._client()
        for _ in range(_ATTEMPTS):
            etag = self._lease_write(client, account_id, self._lease_fields(holder, now, False, 1), None)
            if etag is not None:
                self._remember(account_id, holder, _Held(etag, 1))
                return None
            entity = read_entity(client, account_id, _LEASE_ROW)
            if entity is None:
                continue
            generation = int(entity.get("Generation") or 0) + 1
            fields = self._lease_fields(holder, now, False, generation)
            etag = self._lease_write(client, account_id, fields, entity.metadata["etag"])
            if etag is not None:
                self._remember(account_id, holder, _Held(etag, generation))
                return utc(entity.get("RenewedAt")) if entity.get("Holder") else None
        raise ConcurrencyError(f"sync lease of account {account_id} kept changing")

    def _current(self, client: TableClient, account_id: str, holder: str) -> _Held:
        """Our lease as stored now (after somebody marked it pending); LeaseLostError if not ours."""
        entity = read_entity(client, account_id, _LEASE_ROW)
        if entity is None or entity.get("Holder") != holder:
            self._remember(account_id, holder, None)
            raise LeaseLostError(f"sync lease of account {account_id} was taken over")
        held = _Held(entity.metadata["etag"], int(entity.get("Generation") or 0), bool(entity.get("Pending")))
        self._remember(account_id, holder, held)
        return held

    def renew_lease(self, account_id: str, holder: str, now: dt.datetime) -> bool:
        try:
            self.commit(account_id, holder, now, (), None, progress_too=False)
        except LeaseLostError:
            return False
        return True

    def commit(
        self,
        account_id: str,
        holder: str,
        now: dt.datetime,
        marks: Sequence[LedgerMark],
        progress: SyncProgress | None,
        *,
        progress_too: bool = True,
    ) -> None:
        client = self._client()
        unique = list({m.message_id: m for m in marks}.values())
        chunks = [unique[i : i + _MARKS_PER_COMMIT] for i in range(0, len(unique), _MARKS_PER_COMMIT)] or [[]]
        for number, chunk in enumerate(chunks):
            last = number == len(chunks) - 1
            for _ in range(_ATTEMPTS):
                held = self._known(account_id, holder) or self._current(client, account_id, holder)
                if not held.etag:  # never written unconditionally: that would fence nothing
                    held = self._current(client, account_id, holder)
                lease = self._lease_fields(holder, now, held.pending, held.generation)
                # Replaced under its ETag: the whole changeset fails (412) if the lease changed.
                operations = [Operation("replace", _LEASE_ROW, lease, held.etag)]
                operations += [_mark_operation(mark) for mark in chunk]
                if last and progress_too:
                    operations.append(
                        Operation(
                            "upsert",
                            _PROGRESS_ROW,
                            {
                                "Link": progress.link if progress else "",
                                "Mode": progress.mode if progress else "",
                                "RoundId": progress.round_id if progress else "",
                                "Folder": (progress.folder or "") if progress else "",
                                "Generation": held.generation,
                            },
                        )
                    )
                try:
                    etags = submit_changeset(client, account_id, operations)
                except BatchRefusedError as exc:
                    if exc.status in (404, 409, 412):
                        # The lease changed: a pending mark (still ours) or a takeover.
                        self._remember(account_id, holder, None)
                        self._current(client, account_id, holder)
                        continue
                    raise PersistenceError(f"write to table {LEDGER_TABLE} failed: {exc}") from exc
                etag = etags[0] if etags else None
                self._remember(
                    account_id, holder, _Held(str(etag), held.generation, held.pending) if etag else None
                )
                break
            else:
                raise ConcurrencyError(f"sync lease of account {account_id} kept changing")

    def release_lease(self, account_id: str, holder: str, *, abandon: bool = False) -> bool:
        client = self._client()
        known = self._known(account_id, holder)
        if known is not None and known.etag and not known.pending and self._lease_delete(client, account_id, known.etag):
            self._remember(account_id, holder, None)
            return True
        for _ in range(_ATTEMPTS):
            entity = read_entity(client, account_id, _LEASE_ROW)
            if entity is None or entity.get("Holder") != holder:
                self._remember(account_id, holder, None)
                return True
            etag = entity.metadata["etag"]
            generation = int(entity.get("Generation") or 0)
            if entity.get("Pending") and not abandon:
                fields = self._lease_fields(holder, entity.get("RenewedAt"), False, generation)
                new_etag = self._lease_write(client, account_id, fields, etag)
                if new_etag is not None:
                    self._remember(account_id, holder, _Held(new_etag, generation))
                    return False
                continue
            # Abandoning after a failure: the queue's retry (or the next trigger) runs a round.
            if self._lease_delete(client, account_id, etag):
                self._remember(account_id, holder, None)
                return True
        raise ConcurrencyError(f"sync lease of account {account_id} kept changing")

