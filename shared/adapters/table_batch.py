"""Entity-group transactions for the expiry index and the mail ledger, serialized by hand.

The SDK's ``TableClient.submit_transaction`` builds the multipart request and parses the
multipart answer with the standard library's ``email`` package: about 1.5 ms of CPU per
operation, more than a single write costs. The renewal run moves two index entries per
renewed subscription (bench/bench_renewal.py), so that was a fifth of its CPU; a delta
round commits each page's marks with its lease row in one (shared/adapters/ledger.py), a
third of a burst's CPU in the devhost. Three operations are needed: insert-or-replace of
an entity, replace under an ETag, and delete (string, boolean, integer and date-time
properties). Their batch body is plain text (Table service "Performing entity group
transactions"), whether the changeset succeeded is told by the status lines of the
answer, and each operation's new ETag by the header of its part.

Single entities (the ledger's point read of each changed message, the account, the lease)
are read and written the same way, in ``shared.adapters.table_plain``: through the SDK a
point read costs 1.05-1.15 ms of CPU, most of it turning the JSON into a ``TableEntity`` and,
for the usual miss, building the ``ResourceNotFoundError``; by hand 0.72 ms (Azurite, one
thread, 500 reads, December 2026).

The request goes through the table client's own pipeline (shared key or managed identity,
retries, the pooled transport): ``TableClient._client`` is the generated client, whose
``send_request`` is the SDK's public way to send a raw request (azure-data-tables is pinned
in requirements.txt).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from shared.adapters.table_plain import entity_json, key_literal
from shared.errors import PersistenceError

if TYPE_CHECKING:
    from azure.data.tables import TableClient

MAX_OPERATIONS = 100  # per changeset (Table service limit)
_STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3})", re.MULTILINE)
# A part of the answer: its status line and its headers, up to the blank line.
_PART = re.compile(rb"^HTTP/1\.1 (\d{3})[^\r\n]*\r?\n((?:[^\r\n]+\r?\n)*)", re.MULTILINE)
_ETAG = re.compile(rb"^ETag:[ \t]*([^\r\n]+)", re.MULTILINE | re.IGNORECASE)


class BatchRefusedError(PersistenceError):
    """The service refused the changeset as a whole (one operation failed: nothing done)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"entity group transaction refused ({status})")
        self.status = status


@dataclass(frozen=True)
class Operation:
    """One operation of a changeset: ``upsert`` (insert or replace), ``replace`` (only the
    entity of ``etag``: If-Match) or ``delete`` (``etag`` or any: If-Match ``*``)."""

    kind: Literal["upsert", "replace", "delete"]
    row: str
    properties: Mapping[str, Any] | None = None
    etag: str | None = None


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
    submit_changeset(
        client,
        partition,
        [Operation("upsert", row, properties) for row, properties in upserts]
        + [Operation("delete", row) for row in deletes],
    )


def submit_changeset(client: TableClient, partition: str, operations: Sequence[Operation]) -> list[str | None]:
    """Run ``operations`` in ``partition`` as one entity-group transaction, all or nothing;
    returns each operation's new ETag (None for a delete). Raises ``BatchRefusedError``
    (with the failing operation's status: 412 for an ETag that no longer matches) or
    ``PersistenceError``."""
    from azure.core.exceptions import AzureError
    from azure.core.rest import HttpRequest

    if len(operations) > MAX_OPERATIONS:
        raise ValueError(f"at most {MAX_OPERATIONS} operations per changeset")
    if not operations:
        return []
    base = client.url.rstrip("/")
    table = client.table_name
    changeset = f"changeset_{uuid.uuid4()}"
    parts: list[str] = []
    for operation in operations:
        address = f"{base}/{table}(PartitionKey='{key_literal(partition)}',RowKey='{key_literal(operation.row)}') HTTP/1.1\r\n"
        if operation.kind == "delete":
            parts.append(
                f"DELETE {address}"
                "Accept: application/json;odata=minimalmetadata\r\n"
                f"If-Match: {operation.etag or '*'}\r\n"
                "DataServiceVersion: 3.0\r\n"
                "\r\n"
            )
            continue
        entity = entity_json(partition, operation.row, operation.properties or {})
        condition = f"If-Match: {operation.etag}\r\n" if operation.kind == "replace" else ""
        parts.append(
            f"PUT {address}"
            "Content-Type: application/json\r\n"
            "Accept: application/json;odata=minimalmetadata\r\n"
            f"{condition}"
            "DataServiceVersion: 3.0\r\n"
            "\r\n"
            f"{json.dumps(entity)}\r\n"
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
    etags: list[str | None] = []
    for status, headers in _PART.findall(answer):
        if not 200 <= int(status) < 300:
            raise BatchRefusedError(int(status))
        etag = _ETAG.search(headers)
        etags.append(etag.group(1).decode("ascii", "replace").strip() if etag else None)
    if len(etags) != len(operations):
        raise PersistenceError(f"entity group transaction answered {len(etags)} of {len(operations)} operations")
    return etags
