"""Entity-group transactions for the expiry index, serialized by hand.

The SDK's ``TableClient.submit_transaction`` builds the multipart request and parses the
multipart answer with the standard library's ``email`` package: about 1.5 ms of CPU per
operation, more than a single write costs. The renewal run moves two index entries per
renewed subscription (bench/bench_renewal.py), so that was a fifth of its CPU. The index
needs two operations only: insert-or-replace of an entry (string and date-time properties)
and delete. Their batch body is plain text (Table service "Performing entity group
transactions"), and whether the changeset succeeded is told by the status lines of the
answer.

The request goes through the table client's own pipeline (shared key or managed identity,
retries, the pooled transport): ``TableClient._client`` is the generated client, whose
``send_request`` is the SDK's public way to send a raw request (azure-data-tables is pinned
in requirements.txt).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.errors import PersistenceError

if TYPE_CHECKING:
    from azure.data.tables import TableClient

MAX_OPERATIONS = 100  # per changeset (Table service limit)
_STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3})", re.MULTILINE)


class BatchRefusedError(PersistenceError):
    """The service refused the changeset as a whole (one operation failed: nothing done)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"entity group transaction refused ({status})")
        self.status = status


def _key(value: str) -> str:
    # OData string literal in the URL: quotes doubled, then percent-encoded.
    return quote(value.replace("'", "''"), safe="")


def _edm_datetime(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _entity(partition: str, row: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of an entity: strings and booleans as they are, date-times typed ``Edm.DateTime`` (with
    microseconds), None left out (an absent property reads back as None)."""
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row}
    for name, value in properties.items():
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            entity[name] = _edm_datetime(value)
            entity[f"{name}@odata.type"] = "Edm.DateTime"
        elif isinstance(value, (str, bool)):  # a JSON boolean is an Edm.Boolean
            entity[name] = value
        else:
            raise TypeError(f"property {name}: only strings, booleans and date-times are written here")
    return entity


def move_index_entries(
    client: TableClient,
    partition: str,
    *,
    upserts: Sequence[tuple[str, Mapping[str, Any]]] = (),
    deletes: Sequence[str] = (),
) -> None:
    """One changeset in ``partition``: ``upserts`` are (row key, properties), each entity
    replaced as a whole; ``deletes`` are row keys (``If-Match: *``: a missing entity fails the
    changeset with 404). All or nothing; raises ``BatchRefusedError`` or ``PersistenceError``."""
    from azure.core.exceptions import AzureError
    from azure.core.rest import HttpRequest

    if len(upserts) + len(deletes) > MAX_OPERATIONS:
        raise ValueError(f"at most {MAX_OPERATIONS} operations per changeset")
    if not upserts and not deletes:
        return
    base = client.url.rstrip("/")
    table = client.table_name
    changeset = f"changeset_{uuid.uuid4()}"
    parts: list[str] = []
    for row, properties in upserts:
        entity = _entity(partition, row, properties)
        parts.append(
            f"PUT {base}/{table}(PartitionKey='{_key(partition)}',RowKey='{_key(row)}') HTTP/1.1\r\n"
            "Content-Type: application/json\r\n"
            "Accept: application/json;odata=minimalmetadata\r\n"
            "DataServiceVersion: 3.0\r\n"
            "\r\n"
            f"{json.dumps(entity)}\r\n"
        )
    for row in deletes:
        parts.append(
            f"DELETE {base}/{table}(PartitionKey='{_key(partition)}',RowKey='{_key(row)}') HTTP/1.1\r\n"
            "Accept: application/json;odata=minimalmetadata\r\n"
            "If-Match: *\r\n"
            "DataServiceVersion: 3.0\r\n"
            "\r\n"
        )
    inner = "".join(
        f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n{part}"
        for part in parts
    )
    batch = f"batch_{uuid.uuid4()}"
    body = (
        f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
        f"{inner}--{changeset}--\r\n--{batch}--\r\n"
    ).encode()
    request = HttpRequest(
        "POST",
        f"{base}/$batch",
        headers={
            "Content-Type": f"multipart/mixed; boundary={batch}",
            "x-ms-version": client.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Accept": "application/json",
        },
        content=body,
    )
    try:
        # stream: the answer is multipart, not the JSON the pipeline would decode.
        response = client._client.send_request(request, stream=True)  # noqa: SLF001 - see the module docstring
        answer = response.read()
    except AzureError as exc:
        raise PersistenceError(f"entity group transaction failed: {type(exc).__name__}") from exc
    if response.status_code != 202:
        raise BatchRefusedError(response.status_code)
    for status in _STATUS_LINE.findall(answer):
        if not 200 <= int(status) < 300:
            raise BatchRefusedError(int(status))
