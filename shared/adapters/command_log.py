"""Table Storage adapter of the mail command log (``mail_ports.MailCommandLog``).

Table ``mailcommands``: PartitionKey ``a{sha256(account id)[:40]}``, RowKey
``c{sha256(command id)[:48]}`` (a consumer's ids may hold characters a key refuses); the ids
themselves, the state, the claim's time and the kept result are properties. The commands of
one account share a partition, so the records of a batch are claimed, finished and marked
in one entity-group transaction each (up to 100 entities). A claim is an insert: when a
transaction finds one of its records existing, the batch is claimed one by one, and of two
deliveries racing with one id exactly one gets it. Every later write is ETag-conditional.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shared.adapters.table_support import MIN_TIME, Tables, delete_entity, read_entity, utc, write_entity
from shared.config import MAIL_COMMANDS_TABLE
from shared.errors import ConcurrencyError, PersistenceError
from shared.ports import CommandRecord, CommandState

if TYPE_CHECKING:
    from azure.data.tables import TableClient

MAX_TRANSACTION = 100  # entity-group transactions take at most 100 operations


def _partition(account_id: str) -> str:
    return "a" + hashlib.sha256(account_id.encode("utf-8")).hexdigest()[:40]


def _row(command_id: str) -> str:
    return "c" + hashlib.sha256(command_id.encode("utf-8")).hexdigest()[:48]


def _entity(record: CommandRecord) -> dict[str, Any]:
    return {
        "PartitionKey": _partition(record.account_id),
        "RowKey": _row(record.command_id),
        "CommandId": record.command_id,
        "AccountId": record.account_id,
        "State": record.state,
        "ClaimedAt": record.claimed_at,
        "Result": record.result,
    }


def _record(entity: Any) -> CommandRecord:
    return CommandRecord(
        command_id=str(entity["CommandId"]),
        state=str(entity.get("State") or CommandState.CLAIMED),
        claimed_at=utc(entity.get("ClaimedAt")) or MIN_TIME,
        account_id=str(entity.get("AccountId") or ""),
        result=entity.get("Result") or None,
        etag=entity.metadata.get("etag"),
    )


class TableMailCommandLog:
    def __init__(self, connection: str) -> None:
        self._tables = Tables.for_connection(connection)

    def _client(self) -> TableClient:
        return self._tables.table(MAIL_COMMANDS_TABLE)

    def _transaction(self, operations: list[tuple[Any, ...]]) -> list[str] | None:
        """The new ETags, or None when the service refused the transaction as a whole."""
        from azure.core.exceptions import AzureError
        from azure.data.tables import TableTransactionError

        if not operations or len(operations) > MAX_TRANSACTION:
            return None
        try:
            answers = self._client().submit_transaction(operations)
        except TableTransactionError:
            return None
        except AzureError as exc:
            raise PersistenceError(f"write to table {MAIL_COMMANDS_TABLE} failed: {type(exc).__name__}") from exc
        return [str(answer["etag"]) for answer in answers]

    def claim(self, account_id: str, command_ids: Sequence[str], now: dt.datetime) -> dict[str, CommandRecord]:
        records = [CommandRecord(c, CommandState.CLAIMED, now, account_id) for c in dict.fromkeys(command_ids)]
        etags = self._transaction([("create", _entity(r)) for r in records])
        if etags is not None:
            for record, etag in zip(records, etags, strict=True):
                record.etag = etag
            return {r.command_id: r for r in records}
        claimed: dict[str, CommandRecord] = {}
        for record in records:  # one of them exists already: each on its own
            try:
                record.etag = write_entity(self._client(), _entity(record), None)
            except ConcurrencyError:
                continue
            claimed[record.command_id] = record
        return claimed

    def get(self, account_id: str, command_id: str) -> CommandRecord | None:
        entity = read_entity(self._client(), _partition(account_id), _row(command_id))
        return None if entity is None else _record(entity)

    def save(self, records: Sequence[CommandRecord]) -> list[CommandRecord]:
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        if any(r.etag is None for r in records):
            raise ConcurrencyError("a command record was saved without being claimed")
        operations = [
            ("update", _entity(r), {"mode": UpdateMode.REPLACE, "etag": r.etag,
                                    "match_condition": MatchConditions.IfNotModified})
            for r in records
        ]
        etags = self._transaction(operations) if len(records) > 1 else None
        if etags is not None:
            for record, etag in zip(records, etags, strict=True):
                record.etag = etag
            return list(records)
        written: list[CommandRecord] = []
        for record in records:
            try:
                record.etag = write_entity(self._client(), _entity(record), record.etag)
            except ConcurrencyError:
                continue
            written.append(record)
        return written

    def release(self, records: Sequence[CommandRecord]) -> None:
        for record in records:
            delete_entity(self._client(), _partition(record.account_id), _row(record.command_id))

    def prune(self, claimed_before: dt.datetime) -> int:
        """A scan of the table (Table Storage has no TTL) for records claimed before the
        time, deleted per partition in transactions of up to 100."""
        from azure.core.exceptions import AzureError

        client = self._client()
        by_partition: dict[str, list[str]] = {}
        try:
            for entity in client.query_entities(
                "ClaimedAt lt @before", parameters={"before": claimed_before}, select=["PartitionKey", "RowKey"]
            ):
                by_partition.setdefault(str(entity["PartitionKey"]), []).append(str(entity["RowKey"]))
            for partition, rows in by_partition.items():
                for start in range(0, len(rows), MAX_TRANSACTION):
                    client.submit_transaction(
                        [("delete", {"PartitionKey": partition, "RowKey": row}) for row in rows[start : start + MAX_TRANSACTION]]
                    )
        except AzureError as exc:
            raise PersistenceError(f"prune of table {MAIL_COMMANDS_TABLE} failed: {type(exc).__name__}") from exc
        return sum(len(rows) for rows in by_partition.values())
