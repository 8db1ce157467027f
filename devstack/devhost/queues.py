"""Storage queues for queue triggers and queue output bindings, against Azurite or Azure.

Message text on the wire is base64 of the body, as the host writes and reads it
(host.json ``messageEncoding``, default ``base64``); reading falls back to the raw text
when a message is not base64. The listener follows the host's queue listener
(Microsoft docs "Azure Queue storage trigger", sections "Poison messages", "Polling
algorithm" and "Concurrency"): it fetches ``batchSize`` messages, runs them concurrently,
fetches again when no more than ``newBatchThreshold`` are still running, backs off
exponentially up to ``maxPollingInterval`` while the queue is empty (and polls at once
when a function of this host wrote to the queue through an output binding), deletes a message
after success, makes it visible again after ``visibilityTimeout`` after a failure, and
moves it, body intact, to ``<queue>-poison`` once it has been dequeued
``maxDequeueCount`` times.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.request import getproxies_environment

import azure.functions as func
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.queue import LinearRetry, QueueClient
from azure.storage.queue import QueueMessage as StorageMessage

from .config import QueueOptions, resolve_setting_refs
from .queue_rest import ConnectionPool, QueueRestClient, ReceivedMessage, account_of

logger = logging.getLogger("devstack.devhost")

DEFAULT_CONNECTION = "AzureWebJobsStorage"
# The host keeps a message it is processing invisible this long (it renews; the devhost
# uses functionTimeout instead, capped by the service's 7 days).
MAX_INVISIBLE_SECONDS = 7 * 24 * 3600
MIN_POLLING_INTERVAL = 0.005
SEND_PARALLELISM = 32  # messages of output bindings written at once
MAX_FAILURE_BACKOFF = 10.0
# Azurite is local: fail fast and let the listener's own back-off wait, instead of the SDK's
# default exponential retry that starts at 15 s and would hold up the webhook and shutdown.
def fast_retry() -> LinearRetry:
    # Annotated as int, but the policy computes with floats (random.uniform).
    return LinearRetry(backoff=0.2, random_jitter_range=0.1, retry_total=2)  # type: ignore[arg-type]


def encode_message(body: str | bytes, base64_encoding: bool = True) -> str:
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if not base64_encoding:
        return data.decode("utf-8")
    return base64.b64encode(data).decode("ascii")


def decode_message(text: str, base64_encoding: bool = True) -> bytes:
    """Body bytes of a message; text that is not base64 is taken as it is."""
    if base64_encoding:
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            pass
    return text.encode("utf-8")


def message_bodies(value: Any) -> list[str | bytes]:
    """The messages an output binding value stands for: str, bytes, QueueMessage or a list."""
    if value is None:
        return []
    if isinstance(value, str | bytes | bytearray):
        return [bytes(value) if isinstance(value, bytearray) else value]
    if isinstance(value, func.QueueMessage):
        return [value.get_body()]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        bodies: list[str | bytes] = []
        for item in value:
            if isinstance(item, func.QueueMessage):
                bodies.append(item.get_body())
            elif isinstance(item, str | bytes):
                bodies.append(item)
            else:
                raise TypeError(f"queue output list item of type {type(item).__name__}")
        return bodies
    raise TypeError(f"queue output of type {type(value).__name__}")


class QueueClients:
    """One long-lived client per (connection setting, queue), created on first use: the
    devhost's own lean one (queue_rest.py) for a Shared Key connection string, Azurite's
    included, else the SDK's ``QueueClient``."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._senders: ThreadPoolExecutor | None = None
        self._session: Any = None  # requests.Session, made with the first SDK client
        self._pool = ConnectionPool(size=64, connect_timeout=5, read_timeout=30)

    def connection_string(self, connection: str | None) -> str:
        setting = resolve_setting_refs(connection or DEFAULT_CONNECTION, self._environ)
        value = self._environ.get(setting)
        if not value:
            raise RuntimeError(f"queue connection setting {setting!r} is not set")
        return value

    def get(self, connection: str | None, queue_name: str) -> Any:
        """A ``QueueRestClient`` or a ``QueueClient``: the calls the devhost makes are the same."""
        key = (connection or DEFAULT_CONNECTION, queue_name)
        with self._lock:
            client = self._clients.get(key)
        if client is not None:
            return client
        # Created outside the lock: a slow or unreachable account must not hold up the others.
        text = self.connection_string(connection)
        account = account_of(text)
        if account is not None:
            client = QueueRestClient(account, queue_name, self._pool)
        else:
            client = QueueClient.from_connection_string(
                text, queue_name,
                retry_policy=fast_retry(), connection_timeout=5, read_timeout=30, transport=self._transport())
        ensure_queue(client)
        with self._lock:
            return self._clients.setdefault(key, client)

    def _transport(self) -> Any:
        """One ``requests`` session for every queue client. Without proxy variables it does
        not consult the environment (proxies, ``.netrc``) on each request, as ``requests``
        otherwise does: a few hundred microseconds of CPU per poll, delete and send."""
        import requests
        from azure.core.pipeline.transport import RequestsTransport

        with self._lock:
            if self._session is None:
                self._session = requests.Session()
                self._session.trust_env = bool(getproxies_environment())
                adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
                self._session.mount("http://", adapter)
                self._session.mount("https://", adapter)
            return RequestsTransport(session=self._session, session_owner=False)

    def send(self, connection: str | None, queue_name: str, bodies: list[str | bytes], base64_encoding: bool) -> None:
        """Writes every message of an output binding; Storage queues take one message per
        request, so several are written side by side (all are written before this returns)."""
        client = self.get(connection, queue_name)

        def send_one(body: str | bytes) -> None:
            text = encode_message(body, base64_encoding)
            try:
                client.send_message(text)
            except ResourceNotFoundError:  # deleted since it was created: as the host, create it again
                ensure_queue(client)
                client.send_message(text)

        if len(bodies) <= 1:
            for body in bodies:
                send_one(body)
            return
        with self._lock:
            if self._senders is None:
                self._senders = ThreadPoolExecutor(max_workers=SEND_PARALLELISM, thread_name_prefix="devhost-send")
            senders = self._senders
        for future in [senders.submit(send_one, body) for body in bodies]:
            future.result()

    def close(self) -> None:
        with self._lock:
            if self._senders is not None:
                self._senders.shutdown(wait=True)
                self._senders = None
            for client in self._clients.values():
                client.close()
            self._clients.clear()
            if self._session is not None:
                self._session.close()
                self._session = None
        self._pool.close()


def ensure_queue(client: Any) -> None:
    try:
        client.create_queue()
    except ResourceExistsError:
        pass


def to_function_message(message: StorageMessage | ReceivedMessage, body: bytes) -> QueueMessage:
    return QueueMessage(
        id=message.id,
        body=body,
        dequeue_count=message.dequeue_count,
        expiration_time=message.expires_on,
        insertion_time=message.inserted_on,
        time_next_visible=message.next_visible_on,
        pop_receipt=message.pop_receipt,
    )


def manual_message(body: bytes) -> QueueMessage:
    """The message an admin invocation passes to a queue trigger (never stored)."""
    return QueueMessage(id=str(uuid.uuid4()), body=body, dequeue_count=1, pop_receipt=None)


class QueueListener:
    """Polls one queue for one function until stopped."""

    def __init__(
        self,
        function_name: str,
        client: Callable[[], Any],
        poison_client: Callable[[], Any],
        options: QueueOptions,
        process: Callable[[QueueMessage], bool],
        stop: threading.Event,
        invisible_seconds: float,
    ) -> None:
        self.function_name = function_name
        self._client = client
        self._poison_client = poison_client
        self._options = options
        self._process = process
        self._stop = stop
        self._invisible = int(max(1, min(invisible_seconds, MAX_INVISIBLE_SECONDS)))
        self._in_flight = 0
        self._idle = threading.Condition()
        self._pool = ThreadPoolExecutor(
            max_workers=options.batch_size + options.new_batch_threshold,
            thread_name_prefix=f"devhost-queue-{function_name}",
        )
        self._thread = threading.Thread(target=self._run, name=f"devhost-poll-{function_name}", daemon=True)
        self._wake = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Poll now: this host just wrote to the queue (an output binding). The host does the
        same (its queue listener is told of messages its own functions added), so an idle
        queue is polled only every ``maxPollingInterval`` and a message written here still
        runs at once."""
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        """Waits for the poller and the running invocations; queued ones hand their message back."""
        self._wake.set()
        self._thread.join(timeout)
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        interval = MIN_POLLING_INTERVAL
        failures = 0
        while not self._stop.is_set():
            with self._idle:
                while self._in_flight > self._options.new_batch_threshold and not self._stop.is_set():
                    self._idle.wait(0.05)
            if self._stop.is_set():
                break
            try:
                messages = list(self._client().receive_messages(
                    messages_per_page=self._options.batch_size,
                    max_messages=self._options.batch_size,
                    visibility_timeout=self._invisible,
                ))
            except ResourceNotFoundError:  # the queue was deleted under the listener
                with contextlib.suppress(Exception):
                    ensure_queue(self._client())
                self._stop.wait(interval)
                continue
            except Exception as error:  # noqa: BLE001 - a storage outage must not end the listener
                failures += 1
                if failures == 1:
                    logger.warning("function %s: cannot poll its queue, retrying: %s", self.function_name, error)
                self._stop.wait(min(MIN_POLLING_INTERVAL * 2 ** min(failures, 16), MAX_FAILURE_BACKOFF))
                continue
            if failures:
                logger.info("function %s: polling its queue again", self.function_name)
                failures = 0
            if messages:
                interval = MIN_POLLING_INTERVAL
                for message in messages:
                    with self._idle:
                        self._in_flight += 1
                    self._pool.submit(self._handle, message)
                continue
            if self._wake.wait(interval):
                self._wake.clear()
                interval = MIN_POLLING_INTERVAL
                continue
            interval = min(interval * 2, max(self._options.max_polling_interval, MIN_POLLING_INTERVAL))

    def _handle(self, message: StorageMessage | ReceivedMessage) -> None:
        try:
            client = self._client()
            if self._stop.is_set():
                # Received but not started before the host stopped: visible again at once.
                client.update_message(message.id, message.pop_receipt, visibility_timeout=0)
                return
            if message.dequeue_count is not None and message.dequeue_count > self._options.max_dequeue_count:
                # Dequeued more often than allowed without a verdict (a crash): poison at once.
                self._move_to_poison(client, message)
                return
            body = decode_message(message.content or "", self._options.base64)
            succeeded = self._process(to_function_message(message, body))
            if succeeded:
                client.delete_message(message.id, message.pop_receipt)
            elif (message.dequeue_count or 0) >= self._options.max_dequeue_count:
                self._move_to_poison(client, message)
            else:
                client.update_message(
                    message.id, message.pop_receipt, visibility_timeout=int(self._options.visibility_timeout))
        except Exception:  # noqa: BLE001 - a settlement failure leaves the message to reappear
            logger.warning("function %s: could not settle message %s", self.function_name, message.id,
                           exc_info=True)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _move_to_poison(self, client: Any, message: StorageMessage | ReceivedMessage) -> None:
        poison = self._poison_client()
        poison.send_message(message.content)
        client.delete_message(message.id, message.pop_receipt)
        logger.warning("queue %s: message %s moved to %s after %s dequeues", client.queue_name, message.id,
                       poison.queue_name, message.dequeue_count)

