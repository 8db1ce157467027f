"""Table Storage adapter of the mail ledger (``shared.ledger``).

Table ``mailledger``, PartitionKey = account id:
- RowKey ``m{sha256(message id)[:40]}``: one mark per published message (Graph ids may
  hold characters a RowKey refuses, hence the hash; the id itself is a property);
- RowKey ``lease``: the account's sync lease (Holder, RenewedAt, Pending), changed only
  by ETag-conditional writes, so two workers never both believe they hold it.
Marks of a page are written in one entity-group transaction per 100 (one partition).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from shared.adapters.tables import _read, _Tables, _write
from shared.errors import ConcurrencyError, PersistenceError
from shared.ledger import LEDGER_TABLE, LedgerMark

if TYPE_CHECKING:
    from azure.data.tables import TableClient

_LEASE_ROW = "lease"
_MARK_PREFIX = "m"
_BATCH = 100
_POINT_READS_UP_TO = 16
_ATTEMPTS = 8


def _row(message_id: str) -> str:
    return _MARK_PREFIX + hashlib.sha256(message_id.encode()).hexdigest()[:40]


def _mark_from(entity: Any) -> LedgerMark:
    return LedgerMark(
        str(entity["MessageId"]), entity.get("ChangeKey") or None, bool(entity.get("Removed", False))
    )


class TableMailLedger:
    def __init__(self, connection: str) -> None:
        self._tables = _Tables.for_connection(connection)

    def _client(self) -> TableClient:
        return self._tables.table(LEDGER_TABLE)

    # marks ------------------------------------------------------------------------------
    def marks(self, account_id: str, message_ids: Sequence[str]) -> dict[str, LedgerMark]:
        wanted = set(message_ids)
        client = self._client()
        found: dict[str, LedgerMark] = {}
        if len(wanted) > _POINT_READS_UP_TO:
            for entity in self._partition_marks(client, account_id):
                mark = _mark_from(entity)
                if mark.message_id in wanted:
                    found[mark.message_id] = mark
            return found
        for message_id in wanted:
            entity = _read(client, account_id, _row(message_id))
            if entity is not None:
                found[message_id] = _mark_from(entity)
        return found

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
    def _lease_write(
        self, client: TableClient, account_id: str, fields: dict[str, Any], etag: str | None
    ) -> bool:
        entity = {"PartitionKey": account_id, "RowKey": _LEASE_ROW}
        entity.update((name, value) for name, value in fields.items() if value is not None)
        try:
            _write(client, entity, etag)
            return True
        except ConcurrencyError:
            return False

    def acquire_lease(
        self, account_id: str, holder: str, now: dt.datetime, stale_after: dt.timedelta
    ) -> bool:
        client = self._client()
        for _ in range(_ATTEMPTS):
            entity = _read(client, account_id, _LEASE_ROW)
            fresh = {"Holder": holder, "RenewedAt": now, "Pending": False}
            if entity is None:
                if self._lease_write(client, account_id, fresh, None):
                    return True
                continue
            etag = entity.metadata["etag"]
            current = entity.get("Holder") or ""
            renewed = entity.get("RenewedAt")
            if renewed is not None and renewed.tzinfo is None:
                renewed = renewed.replace(tzinfo=dt.UTC)
            if not current or current == holder or renewed is None or now - renewed > stale_after:
                if self._lease_write(client, account_id, fresh, etag):
                    return True
                continue
            if entity.get("Pending"):
                return False
            if self._lease_write(
                client, account_id, {"Holder": current, "RenewedAt": renewed, "Pending": True}, etag
            ):
                return False
        raise ConcurrencyError(f"sync lease of account {account_id} kept changing")

    def renew_lease(self, account_id: str, holder: str, now: dt.datetime) -> bool:
        client = self._client()
        for _ in range(_ATTEMPTS):
            entity = _read(client, account_id, _LEASE_ROW)
            if entity is None or entity.get("Holder") != holder:
                return False
            fields = {"Holder": holder, "RenewedAt": now, "Pending": bool(entity.get("Pending", False))}
            if self._lease_write(client, account_id, fields, entity.metadata["etag"]):
                return True
        raise ConcurrencyError(f"sync lease of account {account_id} kept changing")

    def release_lease(self, account_id: str, holder: str, *, abandon: bool = False) -> bool:
        client = self._client()
        for _ in range(_ATTEMPTS):
            entity = _read(client, account_id, _LEASE_ROW)
            if entity is None or entity.get("Holder") != holder:
                return True
            pending = bool(entity.get("Pending", False))
            etag = entity.metadata["etag"]
            if pending and not abandon:
                fields = {"Holder": holder, "RenewedAt": entity.get("RenewedAt"), "Pending": False}
                if self._lease_write(client, account_id, fields, etag):
                    return False
                continue
            # Abandoning keeps the pending mark: whoever takes the lease next runs a round anyway.
            if self._lease_write(
                client, account_id, {"Holder": "", "RenewedAt": None, "Pending": False}, etag
            ):
                return True
        raise ConcurrencyError(f"sync lease of account {account_id} kept changing")
