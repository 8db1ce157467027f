"""Table Storage adapter of the mail ledger (``shared.ledger``).

Table ``mailledger``, PartitionKey = account id:
- RowKey ``m{sha256(message id)[:40]}``: one mark per published message (Graph ids may
  hold characters a RowKey refuses, hence the hash; the id itself is a property);
- RowKey ``lease``: the account's sync lease (Holder, RenewedAt, Pending), present only
  while held; inserted to take it, changed and deleted only under its ETag, so two
  workers never both believe they hold it.
Marks of a page are read by parallel point reads and written in one entity-group
transaction per 100 (one partition).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from shared.adapters.table_support import Tables, read_entity, write_entity
from shared.errors import ConcurrencyError, PersistenceError
from shared.ledger import LEDGER_TABLE, LedgerMark

if TYPE_CHECKING:
    from azure.data.tables import TableClient

_LEASE_ROW = "lease"
_MARK_PREFIX = "m"
_BATCH = 100
_READ_PARALLELISM = 8
_ATTEMPTS = 8


def _row(message_id: str) -> str:
    return _MARK_PREFIX + hashlib.sha256(message_id.encode()).hexdigest()[:40]


def _mark_from(entity: Any) -> LedgerMark:
    return LedgerMark(
        str(entity["MessageId"]), entity.get("ChangeKey") or None, bool(entity.get("Removed", False))
    )


class TableMailLedger:
    def __init__(self, connection: str) -> None:
        self._tables = Tables.for_connection(connection)
        self._lock = threading.Lock()
        self._etags: dict[tuple[str, str], str] = {}  # our lease writes: (account, holder) -> ETag
        self._pool = ThreadPoolExecutor(max_workers=_READ_PARALLELISM, thread_name_prefix="mailledger")

    def _client(self) -> TableClient:
        return self._tables.table(LEDGER_TABLE)

    # marks ------------------------------------------------------------------------------
    def marks(self, account_id: str, message_ids: Sequence[str]) -> dict[str, LedgerMark]:
        # Point reads only, in parallel for a page: their cost does not grow with the
        # account's history, a partition scan's would.
        client = self._client()
        wanted = list(dict.fromkeys(message_ids))

        def read(message_id: str) -> Any | None:
            return read_entity(client, account_id, _row(message_id))

        if len(wanted) <= 1:
            entities = [read(m) for m in wanted]
        else:
            entities = list(self._pool.map(read, wanted))
        return {m: _mark_from(e) for m, e in zip(wanted, entities, strict=True) if e is not None}

    def record(self, account_id: str, marks: Sequence[LedgerMark]) -> None:
        from azure.core.exceptions import AzureError

        client = self._client()
        operations: list[Any] = [
            (
                "upsert",
                {
                    "PartitionKey": account_id,
                    "RowKey": _row(mark.message_id),
                    "MessageId": mark.message_id,
                    "ChangeKey": mark.change_key or "",
                    "Removed": mark.removed,
                },
            )
            for mark in {m.message_id: m for m in marks}.values()
        ]
        try:
            for start in range(0, len(operations), _BATCH):
                client.submit_transaction(operations[start : start + _BATCH])
        except AzureError as exc:
            raise PersistenceError(f"write to table {LEDGER_TABLE} failed: {type(exc).__name__}") from exc

    def live_message_ids(self, account_id: str) -> Iterator[str]:
        for entity in self._partition_marks(self._client(), account_id):
            if not entity.get("Removed", False):
                yield str(entity["MessageId"])

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

    def _remember(self, account_id: str, holder: str, etag: str | None) -> None:
        with self._lock:
            if etag is None:
                self._etags.pop((account_id, holder), None)
            else:
                self._etags[(account_id, holder)] = etag

    def _known_etag(self, account_id: str, holder: str) -> str | None:
        with self._lock:
            return self._etags.get((account_id, holder))

    def acquire_lease(
        self, account_id: str, holder: str, now: dt.datetime, stale_after: dt.timedelta
    ) -> bool:
        client = self._client()
        fresh = {"Holder": holder, "RenewedAt": now, "Pending": False}
        for _ in range(_ATTEMPTS):
            etag = self._lease_write(client, account_id, fresh, None)
            if etag is not None:
                self._remember(account_id, holder, etag)
                return True
            entity = read_entity(client, account_id, _LEASE_ROW)
            if entity is None:
                continue  # released meanwhile: insert again
            current = entity.get("Holder") or ""
            renewed = entity.get("RenewedAt")
            if renewed is not None and renewed.tzinfo is None:
                renewed = renewed.replace(tzinfo=dt.UTC)
            if not current or current == holder or renewed is None or now - renewed > stale_after:
                etag = self._lease_write(client, account_id, fresh, entity.metadata["etag"])
                if etag is not None:
                    self._remember(account_id, holder, etag)
                    return True
                continue
            if entity.get("Pending"):
                return False
            marked = {"Holder": current, "RenewedAt": renewed, "Pending": True}
            if self._lease_write(client, account_id, marked, entity.metadata["etag"]) is not None:
                return False
        raise ConcurrencyError(f"sync lease of account {account_id} kept changing")

    def renew_lease(self, account_id: str, holder: str, now: dt.datetime) -> bool:
        client = self._client()
        known = self._known_etag(account_id, holder)
        if known is not None:
            etag = self._lease_write(
                client, account_id, {"Holder": holder, "RenewedAt": now, "Pending": False}, known
            )
            if etag is not None:
                self._remember(account_id, holder, etag)
                return True
        for _ in range(_ATTEMPTS):
            entity = read_entity(client, account_id, _LEASE_ROW)
            if entity is None or entity.get("Holder") != holder:
                self._remember(account_id, holder, None)
                return False
            pending = bool(entity.get("Pending", False))
            fields = {"Holder": holder, "RenewedAt": now, "Pending": pending}
            etag = self._lease_write(client, account_id, fields, entity.metadata["etag"])
            if etag is not None:
                # With work pending, the release must read the lease: no shortcut ETag then.
                self._remember(account_id, holder, None if pending else etag)
                return True
        raise ConcurrencyError(f"sync lease of account {account_id} kept changing")

    def release_lease(self, account_id: str, holder: str, *, abandon: bool = False) -> bool:
        client = self._client()
        known = self._known_etag(account_id, holder)
        if known is not None and self._lease_delete(client, account_id, known):
            self._remember(account_id, holder, None)
            return True
        for _ in range(_ATTEMPTS):
            entity = read_entity(client, account_id, _LEASE_ROW)
            if entity is None or entity.get("Holder") != holder:
                self._remember(account_id, holder, None)
                return True
            etag = entity.metadata["etag"]
            if entity.get("Pending") and not abandon:
                fields = {"Holder": holder, "RenewedAt": entity.get("RenewedAt"), "Pending": False}
                new_etag = self._lease_write(client, account_id, fields, etag)
                if new_etag is not None:
                    self._remember(account_id, holder, new_etag)
                    return False
                continue
            # Abandoning after a failure: the queue's retry (or the next trigger) runs a round.
            if self._lease_delete(client, account_id, etag):
                self._remember(account_id, holder, None)
                return True
        raise ConcurrencyError(f"sync lease of account {account_id} kept changing")
