"""Table Storage adapter of the mail ledger (``shared.ledger``).

Table ``mailledger``, PartitionKey = the sync key (``shared.resources.Resource.sync_key``:
the account id for mail):
- RowKey ``m{sha256(message id)[:40]}``: one mark per published message (Graph ids may
  hold characters a RowKey refuses, hence the hash; the id itself is a property);
- RowKey ``lease``: the partition's sync lease (``shared.adapters.ledger_lease``, composed
  here), present only while held;
- RowKey ``progress``: where an unfinished round resumes (Link, Mode, RoundId, Folder; an
  empty Link when no round is under way).
Marks of a page are read by parallel point reads. A round writes its marks and its progress
with ``commit``: entity-group transactions of up to 98 marks plus the lease row (replaced
under its ETag, which renews it) plus, in the last one, the progress row. One partition,
so the store applies each transaction whole or not at all: a holder that lost the lease
writes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from shared.adapters.ledger_lease import ATTEMPTS, TableSyncLease
from shared.adapters.table_batch import (
    MAX_OPERATIONS,
    BatchRefusedError,
    Operation,
    submit_changeset,
)
from shared.adapters.table_plain import read_plain
from shared.adapters.table_support import Tables, read_entity
from shared.errors import ConcurrencyError, PersistenceError
from shared.ledger import LEDGER_TABLE, LeaseLostError, LedgerMark, SyncProgress

if TYPE_CHECKING:
    from azure.data.tables import TableClient

_PROGRESS_ROW = "progress"
_MARK_PREFIX = "m"
_MARKS_PER_COMMIT = MAX_OPERATIONS - 2  # the lease row and the progress row ride along
# Threads for the point reads of every round of the process: one page's reads run side by
# side, and so do the rounds of many accounts (a burst): a pool of 8 made them wait for
# each other's reads.
_READ_THREADS = 64


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
        entity.get("Name") or None,
        entity.get("Path") or None,
    )


def _mark_entity(partition: str, mark: LedgerMark) -> dict[str, Any]:
    return {
        "PartitionKey": partition,
        "RowKey": _row(mark.message_id),
        "MessageId": mark.message_id,
        "ChangeKey": mark.change_key or "",
        "Removed": mark.removed,
        "SeenIn": mark.seen_in or "",
        "Folder": mark.folder or "",
        "ContentTag": mark.content_tag or "",
        "Name": mark.name,  # None: left out (a mail mark keeps none)
        "Path": mark.path,
    }


def _mark_operation(mark: LedgerMark) -> Operation:
    entity = _mark_entity("", mark)
    del entity["PartitionKey"], entity["RowKey"]
    return Operation("upsert", _row(mark.message_id), entity)


def _progress_operation(progress: SyncProgress | None, generation: int) -> Operation:
    return Operation(
        "upsert",
        _PROGRESS_ROW,
        {
            "Link": progress.link if progress else "",
            "Mode": progress.mode if progress else "",
            "RoundId": progress.round_id if progress else "",
            "Folder": (progress.folder or "") if progress else "",
            "Generation": generation,
        },
    )


def _write_failed(exc: Exception) -> PersistenceError:
    return PersistenceError(f"write to table {LEDGER_TABLE} failed: {type(exc).__name__}")


class TableMailLedger:
    """The ``MailLedger`` port: marks, progress and ``commit`` here, the lease in ``TableSyncLease``."""

    def __init__(self, connection: str) -> None:
        self._tables = Tables.for_connection(connection)
        self._lease = TableSyncLease(self._tables)
        self._pool = ThreadPoolExecutor(max_workers=_READ_THREADS, thread_name_prefix="mailledger")

    def _client(self) -> TableClient:
        return self._tables.table(LEDGER_TABLE)

    # --- marks and progress ------------------------------------------------------------------
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
            for start in range(0, len(operations), MAX_OPERATIONS):
                submit_changeset(client, account_id, operations[start : start + MAX_OPERATIONS])
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
        """Every row of the partition: marks, lease, progress (and the folders' delta links,
        ``shared.adapters.folder_deltas``, which live there too)."""
        from azure.core.exceptions import AzureError

        client = self._client()
        try:
            entities = client.query_entities(
                "PartitionKey eq @pk", parameters={"pk": account_id}, select=["RowKey"]
            )
            rows = [e["RowKey"] for e in entities]
            for start in range(0, len(rows), MAX_OPERATIONS):
                client.submit_transaction(
                    [
                        ("delete", {"PartitionKey": account_id, "RowKey": row})
                        for row in rows[start : start + MAX_OPERATIONS]
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

    # --- writes fenced by the lease ----------------------------------------------------------
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
            with_progress = last and progress_too
            self._fenced_transaction(client, account_id, holder, now, chunk, progress, with_progress=with_progress)

    def _fenced_transaction(
        self,
        client: TableClient,
        account_id: str,
        holder: str,
        now: dt.datetime,
        marks: Sequence[LedgerMark],
        progress: SyncProgress | None,
        *,
        with_progress: bool,
    ) -> None:
        """One entity-group transaction: the lease under its ETag, the marks and, with
        ``with_progress``, the progress row (``progress`` None: the round is over)."""
        # Written by hand (shared.adapters.table_batch): the SDK builds and parses a batch with
        # the ``email`` package, a third of the process's CPU in a burst of mail.
        for _ in range(ATTEMPTS):
            fence, held = self._lease.fence(account_id, holder, now)
            operations = [fence, *(_mark_operation(mark) for mark in marks)]
            if with_progress:
                operations.append(_progress_operation(progress, held.generation))
            try:
                etags = submit_changeset(client, account_id, operations)
            except BatchRefusedError as exc:
                if exc.status in (404, 409, 412):
                    self._lease.refused(account_id, holder)  # a pending mark (still ours) or a takeover
                    continue
                raise PersistenceError(f"write to table {LEDGER_TABLE} failed: {exc}") from exc
            etag = etags[0] if etags else None
            self._lease.fenced(account_id, holder, held, str(etag) if etag else None)
            return
        raise ConcurrencyError(f"sync lease of account {account_id} kept changing")

    # --- the sync lease ------------------------------------------------------------------------
    def acquire_lease(
        self, account_id: str, holder: str, now: dt.datetime, stale_after: dt.timedelta
    ) -> bool:
        return self._lease.acquire(account_id, holder, now, stale_after)

    def seize_lease(self, account_id: str, holder: str, now: dt.datetime) -> dt.datetime | None:
        return self._lease.seize(account_id, holder, now)

    def renew_lease(self, account_id: str, holder: str, now: dt.datetime) -> bool:
        # A commit of nothing: the lease row alone, under its ETag.
        try:
            self.commit(account_id, holder, now, (), None, progress_too=False)
        except LeaseLostError:
            return False
        return True

    def release_lease(self, account_id: str, holder: str, *, abandon: bool = False) -> bool:
        return self._lease.release(account_id, holder, abandon=abandon)
