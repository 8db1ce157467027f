"""What every Table Storage adapter shares: the table clients of a connection, key checks,
ETag-conditional writes, point reads and deletes (by hand: ``shared.adapters.table_plain``).

Writes that can race use ETags: a stale write raises ``ConcurrencyError``, never
overwrites silently. The SDK is imported lazily: the webhook's cold path never loads it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from typing import TYPE_CHECKING, Any

from shared.adapters.storage_http import storage_service_client
from shared.adapters.table_plain import PlainEntity, delete_plain, read_typed, write_plain
from shared.errors import InvalidInputError, PersistenceError

if TYPE_CHECKING:
    from azure.data.tables import TableClient, TableServiceClient

_FORBIDDEN_KEY_CHARS = set("/\\#?") | {chr(c) for c in range(0x20)} | {chr(0x7F)}
MIN_TIME = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)


def check_key(value: str, what: str) -> str:
    # Table keys may not hold / \ # ? or control characters (Table service data model).
    if not value or len(value) > 512 or any(ch in _FORBIDDEN_KEY_CHARS for ch in value):
        raise InvalidInputError(f"{what} is not a valid identifier")
    return value


def utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def service_client(connection: str) -> TableServiceClient:
    """A TableServiceClient for a connection string, or ``identity:<account>`` in Azure."""
    from azure.data.tables import TableServiceClient

    return storage_service_client(TableServiceClient, connection, "table")  # type: ignore[no-any-return]


class Tables:
    """Table clients shared by the stores of one connection, created on first use."""

    _registry: dict[str, Tables] = {}
    _registry_lock = threading.Lock()

    def __init__(self, connection: str) -> None:
        self._service = service_client(connection)
        self._clients: dict[str, TableClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_connection(cls, connection: str) -> Tables:
        with cls._registry_lock:
            if connection not in cls._registry:
                cls._registry[connection] = cls(connection)
            return cls._registry[connection]

    def table(self, name: str) -> TableClient:
        client = self._clients.get(name)
        if client is not None:
            return client
        with self._lock:
            if name not in self._clients:
                from azure.core.exceptions import AzureError

                try:
                    self._service.create_table_if_not_exists(name)
                except AzureError as exc:
                    raise PersistenceError(f"table {name} is not reachable: {type(exc).__name__}") from exc
                self._clients[name] = self._service.get_table_client(name)
            return self._clients[name]

    def check(self) -> None:
        next(iter(self._service.list_tables(results_per_page=1).by_page()), None)


def write_entity(client: TableClient, entity: dict[str, Any], etag: str | None) -> str:
    """Create (no etag) or replace-if-unchanged (etag); returns the new ETag
    (``ConcurrencyError`` when it exists, or changed since it was read)."""
    return write_plain(client, entity, etag)


def read_entity(client: TableClient, partition: str, row: str) -> PlainEntity | None:
    """The entity, typed as the SDK types it (``table_plain.typed``), or None."""
    return read_typed(client, partition, row)


def delete_entity(client: TableClient, partition: str, row: str) -> None:
    """Delete the entity whatever it is now; one already gone is fine."""
    delete_plain(client, partition, row)


# A page's continuation (the SDK's dict of next keys) as one opaque URL-safe string, and back.
def encode_continuation(token: Any) -> str | None:
    if not token:
        return None
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def decode_continuation(token: str | None) -> Any:
    if not token:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        raise InvalidInputError("continuation token is not valid") from None
