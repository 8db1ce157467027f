"""Azure Queue Storage: the adapter behind ``ports.QueueSender``.

Messages are base64-encoded, as the Functions host writes and expects them, so a message
sent here is read unchanged by a queue trigger and by consumers using the host's defaults.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.adapters.storage_http import storage_service_client
from shared.errors import PersistenceError

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient, QueueServiceClient


def queue_service_client(connection: str) -> QueueServiceClient:
    from azure.storage.queue import QueueServiceClient

    return storage_service_client(QueueServiceClient, connection, "queue")  # type: ignore[no-any-return]


class StorageQueueSender:
    def __init__(self, connection: str) -> None:
        self._service = queue_service_client(connection)
        self._clients: dict[str, QueueClient] = {}
        self._lock = threading.Lock()

    def _queue(self, name: str) -> QueueClient:
        client = self._clients.get(name)
        if client is not None:
            return client
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

        with self._lock:
            if name not in self._clients:
                client = self._service.get_queue_client(
                    name,
                    message_encode_policy=TextBase64EncodePolicy(),
                    message_decode_policy=TextBase64DecodePolicy(),
                )
                try:
                    client.create_queue()
                except ResourceExistsError:
                    pass
                self._clients[name] = client
            return self._clients[name]

    def send(self, queue: str, messages: Sequence[str]) -> None:
        from azure.core.exceptions import AzureError

        try:
            client = self._queue(queue)
            for message in messages:
                client.send_message(message)
        except AzureError as exc:
            raise PersistenceError(f"sending to queue {queue} failed: {type(exc).__name__}") from exc

    def check(self) -> None:
        next(iter(self._service.list_queues(results_per_page=1).by_page()), None)
