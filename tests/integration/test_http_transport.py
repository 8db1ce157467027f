"""The table and queue SDKs over ``HttpClientTransport``, against a real Azurite.

Each test goes through the SDK's public calls as the adapters do, so what is checked is what
the app sees: entities, ETag conditions and their errors, paged queries, transactions,
base64 queue messages.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.adapters.http_transport import HttpClientTransport

pytestmark = pytest.mark.integration


@pytest.fixture()
def table(azurite) -> TableClient:  # type: ignore[no-untyped-def]
    service = TableServiceClient.from_connection_string(
        azurite.connection_string, transport=HttpClientTransport()
    )
    return service.create_table(f"transport{uuid.uuid4().hex[:12]}")


@pytest.fixture()
def queue(azurite) -> QueueClient:  # type: ignore[no-untyped-def]
    client = QueueClient.from_connection_string(
        azurite.connection_string, f"transport-{uuid.uuid4().hex[:12]}",
        message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy(),
        transport=HttpClientTransport(),
    )
    client.create_queue()
    return client


def test_an_entity_round_trips_with_non_ascii_text(table: TableClient) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "r", "Subject": "Grüße aus Köln ✉", "Count": 3})
    stored = table.get_entity("p", "r")
    assert stored["Subject"] == "Grüße aus Köln ✉" and stored["Count"] == 3
    assert stored.metadata["etag"]


def test_a_missing_entity_and_a_second_create_map_to_the_sdk_errors(table: TableClient) -> None:
    with pytest.raises(ResourceNotFoundError):
        table.get_entity("p", "absent")
    table.create_entity({"PartitionKey": "p", "RowKey": "r"})
    with pytest.raises(ResourceExistsError):
        table.create_entity({"PartitionKey": "p", "RowKey": "r"})


def test_an_update_with_a_stale_etag_is_rejected_and_keeps_the_winner(table: TableClient) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "r", "Status": "active"})
    first, second = table.get_entity("p", "r"), table.get_entity("p", "r")
    first["Status"] = "reauth"
    table.update_entity(first, mode=UpdateMode.MERGE, etag=first.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified)
    second["Status"] = "written from a stale read"
    with pytest.raises(ResourceModifiedError):
        table.update_entity(second, mode=UpdateMode.REPLACE, etag=second.metadata["etag"],
                            match_condition=MatchConditions.IfNotModified)
    assert table.get_entity("p", "r")["Status"] == "reauth"


def test_a_transaction_of_100_operations_is_applied_whole(table: TableClient) -> None:
    results = table.submit_transaction(
        [("upsert", {"PartitionKey": "batch", "RowKey": f"{n:03}", "N": n}) for n in range(100)]
    )
    assert len(results) == 100 and all(result.get("etag") for result in results)
    assert sorted(e["N"] for e in table.query_entities("PartitionKey eq 'batch'")) == list(range(100))


def test_a_failing_transaction_applies_none_of_its_operations(table: TableClient) -> None:
    table.create_entity({"PartitionKey": "batch", "RowKey": "taken"})
    operations = [("create", {"PartitionKey": "batch", "RowKey": f"new{n}"}) for n in range(5)]
    with pytest.raises(TableTransactionError):
        table.submit_transaction([*operations, ("create", {"PartitionKey": "batch", "RowKey": "taken"})])
    assert [e["RowKey"] for e in table.list_entities()] == ["taken"]


def test_a_query_over_more_than_1000_entities_follows_the_continuation(table: TableClient) -> None:
    for start in range(0, 1500, 100):
        table.submit_transaction(
            [("upsert", {"PartitionKey": "many", "RowKey": f"{n:05}"}) for n in range(start, start + 100)]
        )
    pages = [list(page) for page in table.query_entities("PartitionKey eq 'many'").by_page()]
    assert len(pages) >= 2 and max(len(page) for page in pages) <= 1000
    assert [e["RowKey"] for page in pages for e in page] == [f"{n:05}" for n in range(1500)]


def test_32_threads_share_one_table_client(table: TableClient) -> None:
    failures: list[BaseException] = []

    def worker(thread: int) -> None:
        try:
            for n in range(10):
                table.upsert_entity({"PartitionKey": f"t{thread}", "RowKey": f"{n}", "N": n})
                assert table.get_entity(f"t{thread}", f"{n}")["N"] == n
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(list(table.list_entities())) == 320


def test_queue_messages_are_sent_received_and_deleted(queue: QueueClient) -> None:
    for text in ("first", '{"event": "Grüße ✉"}', "third"):
        queue.send_message(text)
    received = list(queue.receive_messages(messages_per_page=32, visibility_timeout=30))
    assert sorted(m.content for m in received) == sorted(["first", '{"event": "Grüße ✉"}', "third"])
    for message in received:
        queue.delete_message(message)
    assert queue.get_queue_properties().approximate_message_count == 0
    assert list(queue.receive_messages()) == []
