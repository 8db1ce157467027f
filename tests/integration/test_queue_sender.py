"""The queue adapter's sends (shared/adapters/queues.py), read back by the SDK a consumer uses, on a real Azurite."""

from __future__ import annotations

import json
import uuid

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from shared.adapters.queues import StorageQueueSender
from shared.errors import PersistenceError


def consumer(connection: str, queue: str) -> QueueClient:
    return QueueClient.from_connection_string(connection, queue, message_decode_policy=TextBase64DecodePolicy())


def test_events_are_read_by_a_consumer_exactly_as_sent(azurite) -> None:  # type: ignore[no-untyped-def]
    queue = f"events-{uuid.uuid4().hex[:10]}"
    sender = StorageQueueSender(azurite.connection_string)
    texts = [json.dumps({"id": str(n), "subject": "<Grüße> & 'quotes' \"\u2603\""}) for n in range(12)]

    sender.send(queue, texts[:1])
    sender.send(queue, texts[1:])  # several: side by side

    read = [m.content for m in consumer(azurite.connection_string, queue).receive_messages(messages_per_page=32)]
    assert sorted(read) == sorted(texts)


def test_a_queue_deleted_under_the_sender_is_a_persistence_error(azurite) -> None:  # type: ignore[no-untyped-def]
    queue = f"events-{uuid.uuid4().hex[:10]}"
    sender = StorageQueueSender(azurite.connection_string)
    sender.send(queue, ["first"])
    consumer(azurite.connection_string, queue).delete_queue()

    with pytest.raises(PersistenceError, match="404"):
        sender.send(queue, ["second"])


def test_a_delayed_message_stays_hidden_until_its_delay_has_passed(azurite) -> None:  # type: ignore[no-untyped-def]
    import time

    queue = f"retries-{uuid.uuid4().hex[:10]}"
    sender = StorageQueueSender(azurite.connection_string)
    reader = consumer(azurite.connection_string, queue)

    sender.send(queue, ["later", "later too"], delay_seconds=2)
    sender.send(queue, ["now"])

    assert [m.content for m in reader.receive_messages(messages_per_page=32, visibility_timeout=30)] == ["now"]
    time.sleep(2.5)
    assert sorted(m.content for m in reader.receive_messages(messages_per_page=32)) == ["later", "later too"]
