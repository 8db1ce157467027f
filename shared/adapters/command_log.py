"""Table Storage adapter of the mail command log (``ports.MailCommandLog``).

Table ``mailcommands``: PartitionKey ``c{sha256(command id)[:48]}`` (a consumer's ids may
hold characters a key refuses), RowKey ``command``; the id itself, the account, the state,
the claim's time and the kept result are properties. A claim is an insert, so of two
deliveries racing with one id exactly one gets it; every later write is ETag-conditional.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import TYPE_CHECKING, Any

from shared.adapters.tables import _delete, _read, _Tables, _utc, _write
from shared.config import MAIL_COMMANDS_TABLE
from shared.errors import ConcurrencyError
from shared.ports import CommandRecord, CommandState

if TYPE_CHECKING:
    from azure.data.tables import TableClient

_ROW = "command"
_MIN_TIME = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)


def _partition(command_id: str) -> str:
    return "c" + hashlib.sha256(command_id.encode("utf-8")).hexdigest()[:48]


def _entity(record: CommandRecord) -> dict[str, Any]:
    return {
        "PartitionKey": _partition(record.command_id),
        "RowKey": _ROW,
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
        claimed_at=_utc(entity.get("ClaimedAt")) or _MIN_TIME,
        account_id=str(entity.get("AccountId") or ""),
        result=entity.get("Result") or None,
        etag=entity.metadata.get("etag"),
    )


class TableMailCommandLog:
    def __init__(self, connection: str) -> None:
        self._tables = _Tables.for_connection(connection)

    def _client(self) -> TableClient:
        return self._tables.table(MAIL_COMMANDS_TABLE)

    def claim(self, command_id: str, account_id: str, now: dt.datetime) -> CommandRecord | None:
        record = CommandRecord(command_id, CommandState.CLAIMED, now, account_id)
        try:
            record.etag = _write(self._client(), _entity(record), None)
        except ConcurrencyError:
            return None
        return record

    def get(self, command_id: str) -> CommandRecord | None:
        entity = _read(self._client(), _partition(command_id), _ROW)
        return None if entity is None else _record(entity)

    def save(self, record: CommandRecord) -> CommandRecord:
        if record.etag is None:
            raise ConcurrencyError(f"command {record.command_id} was saved without being claimed")
        record.etag = _write(self._client(), _entity(record), record.etag)
        return record

    def release(self, record: CommandRecord) -> None:
        _delete(self._client(), _partition(record.command_id), _ROW)
