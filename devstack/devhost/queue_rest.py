"""A lean Queue Storage client for the devhost's listeners and output bindings.

The devhost polls, settles and writes queue messages in the same Python process as the
app, so what each queue call costs there is counted as the app's CPU (bench/bench_burst.py),
while in Azure the Functions host does it in its own process. Through the Storage SDK
(``QueueClient`` on ``requests``) a send costs about 2.7 ms of CPU, a delete 1.8 ms and a
receive of 32 messages 5 ms (its XML is deserialized model by model); the same REST calls
made here, on ``http.client`` with the request signed by hand, cost 0.4-0.8 ms (2-core
development machine, Azurite, December 2026).

Only what the devhost needs, from the Queue service REST API (Microsoft docs "Queue service
REST API": Create Queue, Put Message, Get Messages, Delete Message, Update Message) with
Shared Key authorization ("Authorize with Shared Key"): connection strings with
``AccountName`` and ``AccountKey`` (Azurite's, or an account's), over HTTP or HTTPS. For any
other connection string (SAS, ``UseDevelopmentStorage``) ``client_for`` answers None and the
devhost uses the SDK. Errors are the ``azure.core`` ones the devhost already handles:
``ResourceNotFoundError`` (404), ``ResourceExistsError`` (409), ``HttpResponseError``, and
``ServiceRequestError`` when no answer came. Transient failures (no connection, 500, 503)
are tried up to three times, 0.2 s apart, as the devhost's SDK retry policy did.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import ssl
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import escape

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)

API_VERSION = "2021-02-12"
ATTEMPTS = 3
RETRY_PAUSE_SECONDS = 0.2
_TRANSIENT_STATUS = frozenset({500, 503})
_CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


@dataclass(frozen=True)
class Account:
    name: str
    key: bytes
    endpoint: str  # the queue service's URL, with the account in its path for Azurite


def account_of(connection: str) -> Account | None:
    """The account of a Shared Key connection string; None for any other form."""
    fields: dict[str, str] = {}
    for part in connection.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    account, key = fields.get("accountname"), fields.get("accountkey")
    if not account or not key or "sharedaccesssignature" in fields:
        return None
    endpoint = fields.get("queueendpoint", "")
    if not endpoint:
        protocol = fields.get("defaultendpointsprotocol", "https")
        endpoint = f"{protocol}://{account}.queue.{fields.get('endpointsuffix', 'core.windows.net')}"
    try:
        return Account(account, base64.b64decode(key, validate=True), endpoint.rstrip("/"))
    except ValueError:
        return None


@dataclass(frozen=True)
class ReceivedMessage:
    """A message of Get Messages, with the attribute names of the SDK's ``QueueMessage``."""

    id: str
    pop_receipt: str
    dequeue_count: int
    content: str
    inserted_on: datetime | None
    expires_on: datetime | None
    next_visible_on: datetime | None


class ConnectionPool:
    """Kept-alive connections per origin, shared by every queue of the devhost; LIFO."""

    def __init__(self, size: int = 64, connect_timeout: float = 5.0, read_timeout: float = 30.0) -> None:
        self._size = size
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def take(self, scheme: str, host: str, port: int) -> tuple[http.client.HTTPConnection, bool]:
        """A connection, and whether it was kept from an earlier request."""
        with self._lock:
            idle = self._idle.get((scheme, host, port))
            if idle:
                return idle.pop(), True
        return self.new(scheme, host, port), False

    def new(self, scheme: str, host: str, port: int) -> http.client.HTTPConnection:
        if scheme == "https":
            with self._lock:
                if self._tls is None:
                    self._tls = ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=self._connect_timeout, context=self._tls)
        return http.client.HTTPConnection(host, port, timeout=self._connect_timeout)

    def give(self, scheme: str, host: str, port: int, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault((scheme, host, port), [])
            if len(idle) < self._size:
                idle.append(connection)
                return
        connection.close()

    @property
    def read_timeout(self) -> float:
        return self._read_timeout

    def close(self) -> None:
        with self._lock:
            idle = [c for connections in self._idle.values() for c in connections]
            self._idle.clear()
        for connection in idle:
            connection.close()


class QueueRestClient:
    """One queue, the calls of ``azure.storage.queue.QueueClient`` the devhost makes."""

    def __init__(self, account: Account, queue_name: str, pool: ConnectionPool) -> None:
        self.queue_name = queue_name
        self._account = account
        self._pool = pool
        parts = urlsplit(f"{account.endpoint}/{queue_name}")
        self._scheme = parts.scheme
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._path = parts.path  # e.g. /devstoreaccount1/my-queue

    # -- the calls ---------------------------------------------------------------------

    def create_queue(self) -> None:
        # 204: it existed already, with the same (no) metadata; 409 (another metadata) raises.
        self._call("PUT", "", {}, b"", (201, 204))

    def send_message(self, text: str) -> None:
        body = f"<QueueMessage><MessageText>{escape(text)}</MessageText></QueueMessage>".encode()
        self._call("POST", "/messages", {}, body, (201,))

    def receive_messages(
        self, *, messages_per_page: int = 32, max_messages: int | None = None, visibility_timeout: int = 30
    ) -> list[ReceivedMessage]:
        count = max(1, min(messages_per_page, max_messages or messages_per_page, 32))
        _, answer = self._call(
            "GET", "/messages", {"numofmessages": str(count), "visibilitytimeout": str(int(visibility_timeout))},
            b"", (200,),
        )
        # The storage service's answer, parsed with ElementTree as the SDK parses it.
        listing = ElementTree.fromstring(answer or b"<QueueMessagesList/>")  # noqa: S314
        return [_message(element) for element in listing]

    def delete_message(self, message_id: str, pop_receipt: str) -> None:
        self._call("DELETE", f"/messages/{quote(message_id, safe='')}", {"popreceipt": pop_receipt}, b"", (204,))

    def update_message(self, message_id: str, pop_receipt: str, *, visibility_timeout: int) -> None:
        self._call(
            "PUT", f"/messages/{quote(message_id, safe='')}",
            {"popreceipt": pop_receipt, "visibilitytimeout": str(int(visibility_timeout))}, b"", (204,),
        )

    def close(self) -> None:
        """The connections belong to the pool, which the devhost closes."""

    # -- the wire ------------------------------------------------------------------------

    def _call(
        self, method: str, sub_path: str, query: dict[str, str], body: bytes, expected: tuple[int, ...]
    ) -> tuple[int, bytes]:
        path = self._path + sub_path
        target = path + ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items()) if query else "")
        for attempt in range(1, ATTEMPTS + 1):
            try:
                status, answer = self._exchange(method, path, target, query, body)
            except (OSError, http.client.HTTPException) as error:
                if attempt == ATTEMPTS:
                    raise ServiceRequestError(f"queue {self.queue_name}: {type(error).__name__}: {error}") from error
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            if status in expected:
                return status, answer
            if status in _TRANSIENT_STATUS and attempt < ATTEMPTS:
                time.sleep(RETRY_PAUSE_SECONDS)
                continue
            raise _error(status, answer, self.queue_name)
        raise AssertionError("unreachable")

    def _exchange(
        self, method: str, path: str, target: str, query: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        headers = self._signed(method, path, query, body)
        connection, kept = self._pool.take(self._scheme, self._host, self._port)
        try:
            try:
                status, answer = self._send(connection, method, target, headers, body)
            except _CLOSED:
                if not kept:
                    raise
                # A kept-alive connection the server closed while it was idle: once more on a new one.
                connection.close()
                connection = self._pool.new(self._scheme, self._host, self._port)
                status, answer = self._send(connection, method, target, headers, body)
        except BaseException:
            connection.close()
            raise
        self._pool.give(self._scheme, self._host, self._port, connection)
        return status, answer

    def _send(
        self, connection: http.client.HTTPConnection, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        connection.request(method, target, body=body or None, headers=headers)
        if connection.sock is not None:
            connection.sock.settimeout(self._pool.read_timeout)
        response = connection.getresponse()
        return response.status, response.read()

    def _signed(self, method: str, path: str, query: dict[str, str], body: bytes) -> dict[str, str]:
        """Shared Key: the request's canonical form signed with the account key."""
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION}
        content_type = "application/xml; charset=utf-8" if body else ""
        if body:
            headers["Content-Type"] = content_type
        # Content-Length is left empty in the string to sign when there is no body (version 2015-02-21 and later).
        length = str(len(body)) if body else ""
        canonical_headers = "".join(f"{name}:{headers[name]}\n" for name in ("x-ms-date", "x-ms-version"))
        resource = f"/{self._account.name}{path}" + "".join(
            f"\n{name}:{unquote(value)}" for name, value in sorted(query.items())
        )
        to_sign = f"{method}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n{canonical_headers}{resource}"
        signature = base64.b64encode(hmac.new(self._account.key, to_sign.encode(), hashlib.sha256).digest())
        headers["Authorization"] = f"SharedKey {self._account.name}:{signature.decode()}"
        return headers


def _message(element: ElementTree.Element) -> ReceivedMessage:
    def text(name: str) -> str:
        return element.findtext(name) or ""

    return ReceivedMessage(
        id=text("MessageId"),
        pop_receipt=text("PopReceipt"),
        dequeue_count=int(text("DequeueCount") or 0),
        content=text("MessageText"),
        inserted_on=_when(text("InsertionTime")),
        expires_on=_when(text("ExpirationTime")),
        next_visible_on=_when(text("TimeNextVisible")),
    )


def _when(value: str) -> datetime | None:
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None


def _error(status: int, answer: bytes, queue: str) -> HttpResponseError:
    code = ""
    with contextlib.suppress(ElementTree.ParseError):
        code = (ElementTree.fromstring(answer).findtext("Code") or "") if answer else ""  # noqa: S314
    message = f"queue {queue}: {status} {code}".strip()
    error: HttpResponseError
    if status == 404:
        error = ResourceNotFoundError(message=message)
    elif status == 409:
        error = ResourceExistsError(message=message)
    else:
        error = HttpResponseError(message=message)
    error.status_code = status
    return error
