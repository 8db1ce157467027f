"""Point reads, writes and deletes of single entities, serialized by hand.

Through the SDK (``TableClient.get_entity``, ``create_entity``, ``update_entity``,
``delete_entity``) each costs about 1.1-1.5 ms of the caller's CPU, most of it spent outside
the wire: the entity's JSON turned into a ``TableEntity`` property by property, the answer's
metadata decoded, and for the usual miss of a ledger read a ``ResourceNotFoundError`` built
with its message. A delta round makes five of them besides its marks (the account read and
its deltaLink write, the progress read, the lease taken and let go), so in a burst of mail
they were a fifth of the connector's CPU (bench/bench_burst.py --profile-devhost). Here the
request is written and the answer read as plain JSON; what a store needs comes back the same
way the SDK gives it: strings, booleans and numbers as such, ``Edm.DateTime`` as an aware
``datetime``, ``Edm.Int64`` as an ``int``, the ETag in ``metadata["etag"]``.

Written properties: strings, booleans, integers (``Edm.Int32`` when they fit, else
``Edm.Int64``, as the SDK writes them) and date-times, what the stores hold; ``None`` is left
out, as the SDK leaves it out (an absent property reads back as ``None``).

The requests go through the table client's own pipeline (shared key or managed identity,
retries, the pooled transport): ``TableClient._client`` is the generated client, whose
``send_request`` sends a raw request (azure-data-tables is pinned in requirements.txt).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.errors import ConcurrencyError, PersistenceError

if TYPE_CHECKING:
    from azure.core.rest import HttpResponse
    from azure.data.tables import TableClient

_INT32 = range(-(2**31), 2**31)
_ACCEPT = "application/json;odata=minimalmetadata"


class PlainEntity(dict[str, Any]):
    """An entity as a store reads it: its properties, and ``metadata`` (``etag``, ``timestamp``)
    as the SDK's ``TableEntity`` has them."""

    metadata: dict[str, Any]

    def __init__(self, properties: Mapping[str, Any], metadata: dict[str, Any]) -> None:
        super().__init__(properties)
        self.metadata = metadata


def key_literal(value: str) -> str:
    # OData string literal in the URL: quotes doubled, then percent-encoded.
    return quote(value.replace("'", "''"), safe="")


def edm_datetime(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entity_json(partition: str, row: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of an entity, typed where JSON alone would lose the type."""
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row}
    for name, value in properties.items():
        if value is None or name in ("PartitionKey", "RowKey"):
            continue
        if isinstance(value, dt.datetime):
            entity[name] = edm_datetime(value)
            entity[f"{name}@odata.type"] = "Edm.DateTime"
        elif isinstance(value, (str, bool)):  # a JSON boolean is an Edm.Boolean
            entity[name] = value
        elif isinstance(value, int):
            if value in _INT32:
                entity[name] = value
            else:
                entity[name] = str(value)
                entity[f"{name}@odata.type"] = "Edm.Int64"
        else:
            raise TypeError(f"property {name}: only strings, booleans, integers and date-times are written here")
    return entity


def _address(client: TableClient, partition: str | None = None, row: str | None = None) -> str:
    base, _, sas = client.url.partition("?")  # a SAS connection string's token rides in the URL
    address = f"{base.rstrip('/')}/{client.table_name}"
    if partition is not None and row is not None:
        address += f"(PartitionKey='{key_literal(partition)}',RowKey='{key_literal(row)}')"
    return address + (f"?{sas}" if sas else "")


def _send(client: TableClient, method: str, address: str, headers: dict[str, str], body: bytes | None) -> HttpResponse:
    from azure.core.exceptions import AzureError
    from azure.core.rest import HttpRequest

    headers = {"Accept": _ACCEPT, "x-ms-version": client.api_version, "DataServiceVersion": "3.0", **headers}
    try:
        return client._client.send_request(HttpRequest(method, address, headers=headers, content=body))  # noqa: SLF001 - see the module docstring
    except AzureError as exc:
        raise PersistenceError(f"{method} on table {client.table_name} failed: {type(exc).__name__}") from exc


def read_plain(client: TableClient, partition: str, row: str) -> dict[str, Any] | None:
    """The entity at (``partition``, ``row``) as its JSON says it, None when there is none.

    Strings, booleans and Int32 numbers come back as such; a property of another type as its
    JSON text with its ``<name>@odata.type`` beside. Raises ``PersistenceError``."""
    response = _send(client, "GET", _address(client, partition, row), {}, None)
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise PersistenceError(f"read from table {client.table_name} failed: {response.status_code}")
    entity = json.loads(response.content)
    if not isinstance(entity, dict):
        raise PersistenceError(f"read from table {client.table_name}: not an entity")
    return entity


def typed(entity: Mapping[str, Any]) -> PlainEntity:
    """A plain read's JSON as the SDK would give it (see the module docstring)."""
    properties: dict[str, Any] = {}
    metadata: dict[str, Any] = {"etag": entity.get("odata.etag")}
    for name, value in entity.items():
        if name.startswith("odata.") or name.endswith("@odata.type"):
            continue
        kind = entity.get(f"{name}@odata.type")
        if kind == "Edm.DateTime":
            value = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        elif kind == "Edm.Int64":
            value = int(value)
        elif kind == "Edm.Double":
            value = float(value)
        if name == "Timestamp":
            metadata["timestamp"] = value
            continue
        properties[name] = value
    return PlainEntity(properties, metadata)


def read_typed(client: TableClient, partition: str, row: str) -> PlainEntity | None:
    entity = read_plain(client, partition, row)
    return None if entity is None else typed(entity)


def write_plain(client: TableClient, entity: Mapping[str, Any], etag: str | None) -> str:
    """Insert (no ``etag``) or replace under ``etag``; returns the new ETag. ``ConcurrencyError``
    when the entity exists already (insert) or changed or vanished since it was read (replace)."""
    partition, row = str(entity["PartitionKey"]), str(entity["RowKey"])
    body = json.dumps(entity_json(partition, row, entity)).encode()
    headers = {"Content-Type": "application/json"}
    if etag is None:
        headers["Prefer"] = "return-no-content"
        response = _send(client, "POST", _address(client), headers, body)
        refused = {409: "already exists"}
    else:
        headers["If-Match"] = etag
        response = _send(client, "PUT", _address(client, partition, row), headers, body)
        refused = {412: "changed since it was read", 404: "changed since it was read"}
    if response.status_code in refused:
        raise ConcurrencyError(f"{client.table_name} entity {refused[response.status_code]}")
    if response.status_code not in (201, 204):
        raise PersistenceError(f"write to table {client.table_name} failed: {response.status_code}")
    new_etag = response.headers.get("ETag")
    if not new_etag:
        raise PersistenceError(f"write to table {client.table_name}: no ETag in the answer")
    return new_etag


def delete_plain(client: TableClient, partition: str, row: str, etag: str | None = None) -> bool:
    """Delete the entity (under ``etag``, or whatever it is); True when it is gone (already
    gone included), False when it changed since ``etag`` was read."""
    response = _send(client, "DELETE", _address(client, partition, row), {"If-Match": etag or "*"}, None)
    if response.status_code in (204, 404):
        return True
    if response.status_code == 412:
        return False
    raise PersistenceError(f"delete from table {client.table_name} failed: {response.status_code}")
