"""Azure Table Storage adapters of the embedding: connect sessions, the owner index, purging.

- ``connectsessions``: PartitionKey = session id, RowKey = "session". Point reads only.
  ``PurgeAfter`` (the session's expiry plus its retention) is what the purge looks at.
- ``accountowners``: PartitionKey = owner id, RowKey = account id. "The accounts of owner
  X" is one partition query, whatever the size of ``accounts``. An entry is written
  before the account names its owner and removed after it moved to another one, so a
  reader checks each entry against the account (a crash leaves an entry too many, never
  an account its owner cannot find).
- The purge deletes rows whose expiry passed: ``authflows`` by ``ExpiresAt`` (every
  ``/api/connect`` start writes one, and an abandoned start never comes back to take it),
  ``connectsessions`` by ``PurgeAfter``. Table Storage has no TTL, so the query is a
  filter on a property: a scan of these two tables, which the purge itself keeps small
  (what is live, plus what expired since the previous run). Each row is its own
  partition, so the deletes go one by one, from a few threads.

The SDK is imported lazily, as in ``tables.py``.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from shared.adapters.table_support import (
    Tables,
    check_key,
    decode_continuation,
    delete_entity,
    encode_continuation,
    read_entity,
    utc,
    write_entity,
)
from shared.config import ACCOUNT_OWNERS_TABLE, AUTHFLOWS_TABLE, CONNECT_SESSIONS_TABLE
from shared.errors import PersistenceError
from shared.models import ConnectSession, ConnectSessionStatus

if TYPE_CHECKING:
    from azure.data.tables import TableClient

_SESSION_ROW = "session"
# Sessions stay readable (GET answers "expired", "completed", ...) this long after they expire.
SESSION_RETENTION = dt.timedelta(hours=1)
PURGE_THREADS = 16
_PAGE = 1000


def _session_entity(s: ConnectSession) -> dict[str, Any]:
    return {
        "PartitionKey": check_key(s.session_id, "session id"),
        "RowKey": _SESSION_ROW,
        "OwnerId": s.owner_id,
        "ExpiresAt": s.expires_at,
        "CreatedAt": s.created_at,
        "PurgeAfter": s.expires_at + SESSION_RETENTION,
        "ReturnUrl": s.return_url,
        "LoginHint": s.login_hint,
        "Status": s.status.value,
        "OpenedAt": s.opened_at,
        "AccountId": s.account_id,
        "Error": s.error,
        "Reconnected": s.reconnected,
    }


def _session_from(e: Any) -> ConnectSession:
    return ConnectSession(
        session_id=e["PartitionKey"],
        owner_id=e.get("OwnerId", ""),
        expires_at=utc(e.get("ExpiresAt")) or dt.datetime.min.replace(tzinfo=dt.UTC),
        created_at=utc(e.get("CreatedAt")) or dt.datetime.min.replace(tzinfo=dt.UTC),
        return_url=e.get("ReturnUrl") or None,
        login_hint=e.get("LoginHint") or None,
        status=ConnectSessionStatus(e.get("Status", ConnectSessionStatus.PENDING.value)),
        opened_at=utc(e.get("OpenedAt")),
        account_id=e.get("AccountId") or None,
        error=e.get("Error") or None,
        reconnected=bool(e.get("Reconnected")),
        etag=e.metadata.get("etag"),
    )


class TableConnectSessionStore:
    def __init__(self, connection: str) -> None:
        self._tables = Tables.for_connection(connection)

    @property
    def _client(self) -> TableClient:
        return self._tables.table(CONNECT_SESSIONS_TABLE)

    def get(self, session_id: str) -> ConnectSession | None:
        entity = read_entity(self._client, check_key(session_id, "session id"), _SESSION_ROW)
        return None if entity is None else _session_from(entity)

    def save(self, session: ConnectSession) -> ConnectSession:
        session.etag = write_entity(self._client, _session_entity(session), session.etag)
        return session


class TableAccountOwnerIndex:
    def __init__(self, connection: str) -> None:
        self._tables = Tables.for_connection(connection)

    @property
    def _client(self) -> TableClient:
        return self._tables.table(ACCOUNT_OWNERS_TABLE)

    def add(self, owner_id: str, account_id: str) -> None:
        from azure.core.exceptions import AzureError
        from azure.data.tables import UpdateMode

        entity = {
            "PartitionKey": check_key(owner_id, "owner id"),
            "RowKey": check_key(account_id, "account id"),
        }
        try:
            self._client.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except AzureError as exc:
            raise PersistenceError(f"write to the owner index failed: {type(exc).__name__}") from exc

    def remove(self, owner_id: str, account_id: str) -> None:
        delete_entity(self._client, check_key(owner_id, "owner id"), check_key(account_id, "account id"))

    def page(
        self, owner_id: str, *, size: int = 100, continuation: str | None = None
    ) -> tuple[list[str], str | None]:
        pager = self._client.query_entities(
            "PartitionKey eq @owner",
            parameters={"owner": check_key(owner_id, "owner id")},
            select=["RowKey"],
            results_per_page=max(1, min(size, 1000)),
        ).by_page(continuation_token=decode_continuation(continuation))
        try:
            ids = [str(e["RowKey"]) for e in next(pager, [])]
        except Exception as exc:  # noqa: BLE001 - the SDK raises several error types here
            raise PersistenceError(f"listing an owner's accounts failed: {type(exc).__name__}") from exc
        return ids, encode_continuation(pager.continuation_token)  # type: ignore[attr-defined]


class TableExpiredRowPurger:
    """``ports.ExpiredRowPurger`` over ``authflows`` and ``connectsessions``."""

    def __init__(self, connection: str, *, threads: int = PURGE_THREADS) -> None:
        self._tables = Tables.for_connection(connection)
        self._threads = threads

    def purge_expired(self, now: dt.datetime) -> dict[str, int]:
        return {
            AUTHFLOWS_TABLE: self._purge(AUTHFLOWS_TABLE, "ExpiresAt", now),
            CONNECT_SESSIONS_TABLE: self._purge(CONNECT_SESSIONS_TABLE, "PurgeAfter", now),
        }

    def _purge(self, table: str, field: str, now: dt.datetime) -> int:
        from azure.core.exceptions import AzureError

        client = self._tables.table(table)
        deleted = 0
        try:
            while True:
                # Deleting while paging through the same filter would move the continuation
                # past rows not seen yet: each round reads one page from the start again.
                page = next(
                    client.query_entities(
                        f"{field} lt @now",
                        parameters={"now": now},
                        select=["PartitionKey", "RowKey"],
                        results_per_page=_PAGE,
                    ).by_page(),
                    None,
                )
                keys = [(str(e["PartitionKey"]), str(e["RowKey"])) for e in page or []]
                if not keys:
                    return deleted
                with ThreadPoolExecutor(max_workers=self._threads) as pool:
                    list(pool.map(lambda key: delete_entity(client, *key), keys))
                deleted += len(keys)
        except AzureError as exc:
            raise PersistenceError(f"purging table {table} failed: {type(exc).__name__}") from exc
