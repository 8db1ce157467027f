"""Table Storage adapter of the watched folders' delta links (``FolderDeltaLinks`` port).

Rows of table ``mailledger`` in the account's partition (the ledger's own rows are the
marks ``m...``, ``lease`` and ``progress``; these are ``d...``): RowKey
``d{sha256(folder key)[:40]}`` with the folder key, its deltaLink and the account's
``connected_at`` it belongs to. Keeping them in the ledger's partition means the ledger's
reset of an account (a reconnect after a disconnect) drops them too; a link of an older
connection is ignored anyway. The inbox's link stays on the account record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import TYPE_CHECKING, Any

from shared.adapters.table_support import Tables, utc
from shared.errors import PersistenceError
from shared.ledger import LEDGER_TABLE

if TYPE_CHECKING:
    from azure.data.tables import TableClient

_PREFIX = "d"


def _row(folder: str) -> str:
    return _PREFIX + hashlib.sha256(folder.encode()).hexdigest()[:40]


class TableFolderDeltaLinks:
    def __init__(self, connection: str) -> None:
        self._tables = Tables.for_connection(connection)

    def _client(self) -> TableClient:
        return self._tables.table(LEDGER_TABLE)

    def links(self, account_id: str, connected_at: dt.datetime | None) -> dict[str, str]:
        from azure.core.exceptions import AzureError

        found: dict[str, str] = {}
        try:
            entities: Any = self._client().query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": account_id, "lo": _PREFIX, "hi": chr(ord(_PREFIX) + 1)},
            )
            for entity in entities:
                if utc(entity.get("ConnectedAt")) == connected_at and entity.get("Link"):
                    found[str(entity["Folder"])] = str(entity["Link"])
        except AzureError as exc:
            raise PersistenceError(f"read from table {LEDGER_TABLE} failed: {type(exc).__name__}") from exc
        return found

    def save(self, account_id: str, folder: str, link: str, connected_at: dt.datetime | None) -> None:
        from azure.core.exceptions import AzureError

        entity: dict[str, Any] = {
            "PartitionKey": account_id,
            "RowKey": _row(folder),
            "Folder": folder,
            "Link": link,
            "ConnectedAt": connected_at,
        }
        try:
            self._client().upsert_entity(entity)
        except AzureError as exc:
            raise PersistenceError(f"write to table {LEDGER_TABLE} failed: {type(exc).__name__}") from exc

    def forget_account(self, account_id: str) -> None:
        from azure.core.exceptions import AzureError

        client = self._client()
        try:
            for entity in client.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": account_id, "lo": _PREFIX, "hi": chr(ord(_PREFIX) + 1)},
                select=["RowKey"],
            ):
                client.delete_entity(account_id, entity["RowKey"])
        except AzureError as exc:
            raise PersistenceError(f"delete from table {LEDGER_TABLE} failed: {type(exc).__name__}") from exc
