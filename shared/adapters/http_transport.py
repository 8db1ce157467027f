"""A lean HTTP transport for the Storage SDK clients, on the standard library's ``http.client``.

``pooled_transport`` (storage_http.py) hands it to the table and queue clients. Through
``requests`` and ``urllib3`` a ``get_entity`` or ``upsert_entity`` against Azurite costs
1.7-2.3 ms of CPU, even with ``trust_env`` off; here it costs 0.9-1.5 ms (one thread, 2,000
calls, November 2026). The renewal makes a few table calls per subscription from one
interpreter, so that difference is much of its CPU (bench/bench_renewal.py). The transport
keeps what the SDK's pipeline needs:

- one pool of kept-alive connections per origin (and per TLS setting), LIFO so that warm
  connections are reused first, at most ``pool_size`` kept (more may be open at once);
- TLS verified against the environment's CA bundle (``REQUESTS_CA_BUNDLE`` or
  ``CURL_CA_BUNDLE``, as ``requests`` would) or the system's; per call
  ``connection_verify`` and ``connection_cert`` honoured;
- per call ``connection_timeout`` (to connect) and ``read_timeout`` (per read), 300 s each
  by default as the SDK's ``ConnectionConfiguration``;
- the answer is read whole before the pipeline sees it, so the connection is back in the
  pool at once (table and queue answers are small; no streaming, so not for blobs).

Errors are the ``azure.core`` ones the SDK's retry policy knows::

    ServiceRequestError            the request did not go out: cannot connect, TLS refused
    └── ServiceRequestTimeoutError     connecting (or the TLS handshake) timed out
    ServiceResponseError           the request went out, no complete answer came back
    └── ServiceResponseTimeoutError    no answer within ``read_timeout``

A kept-alive connection the server closed while it was idle is not an error: it is found
before use when possible, and otherwise the request is sent once more on a new connection.

No proxy support: ``pooled_transport`` chooses the ``requests`` transport when proxy
variables are set, and a per call ``proxies`` is refused rather than ignored.
"""

from __future__ import annotations

import http.client
import os
import select
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest as RestHttpRequest

# The http.client-backed response of azure.core.rest is not exported; it is the class
# azure.core itself builds for the parts of a multipart batch answer (submit_transaction).
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse

DEFAULT_TIMEOUT_SECONDS = 300.0  # the SDK's ConnectionConfiguration: to connect, and per read
# Azure's load balancers drop a flow idle for 4 minutes without telling either end
# (learn.microsoft.com/azure/load-balancer/load-balancer-tcp-reset): a request on such a
# connection would wait for the read timeout. Connections idle longer than this are closed.
IDLE_LIMIT_SECONDS = 60.0

# What a request on a connection the server has closed meets: an empty answer, or a reset.
_CLOSED_BY_SERVER = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
    ssl.SSLEOFError,
)

_Tls = tuple[bool | str, str | tuple[str, str] | None]  # (verify, client certificate)
_Origin = tuple[str, str, int, _Tls | None]


class _ClosedWhileIdle(Exception):
    """A reused connection turned out to be closed by the server before it answered."""


@dataclass
class _Idle:
    connection: http.client.HTTPConnection
    since: float


class _Pool:
    """Idle connections of one origin, most recently used on top."""

    def __init__(self, size: int, idle_limit: float) -> None:
        self.size = size
        self.idle_limit = idle_limit
        self.idle: list[_Idle] = []
        self.lock = threading.Lock()

    def take(self) -> http.client.HTTPConnection | None:
        while True:
            expired: list[_Idle] = []
            with self.lock:
                if not self.idle:
                    return None
                if time.monotonic() - self.idle[-1].since > self.idle_limit:
                    # LIFO: the ones below the top have been idle longer still.
                    expired, self.idle = self.idle, []
                else:
                    connection = self.idle.pop().connection
            for entry in expired:
                entry.connection.close()
            if expired:
                return None
            if not _closed_by_peer(connection):
                return connection
            connection.close()

    def give(self, connection: http.client.HTTPConnection) -> None:
        with self.lock:
            if len(self.idle) < self.size:
                self.idle.append(_Idle(connection, time.monotonic()))
                return
        connection.close()

    def clear(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for entry in idle:
            entry.connection.close()


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection has anything to read: the server's close (or bytes it had
    no reason to send). As urllib3's ``is_connection_dropped``, one poll with no wait."""
    sock = connection.sock
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        if hasattr(select, "poll"):  # select() cannot watch descriptors above 1023
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class HttpClientTransport(HttpTransport):  # type: ignore[type-arg]
    """An ``azure.core`` transport over pooled ``http.client`` connections, for many threads."""

    def __init__(
        self,
        *,
        pool_size: int = 64,
        verify: bool | str | None = None,
        idle_limit: float = IDLE_LIMIT_SECONDS,
    ) -> None:
        self._pool_size = pool_size
        self._idle_limit = idle_limit
        if verify is None:
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self._verify: bool | str = verify
        self._pools: dict[_Origin, _Pool] = {}
        self._contexts: dict[_Tls, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> HttpClientTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        # Clients made from one service client share the transport: leaving one client's
        # ``with`` block must not close the others' connections (as RequestsTransport does
        # with a session it does not own).
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        """Closes the idle connections; the transport stays usable and connects again."""
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.clear()

    def send(self, request: RestHttpRequest, **kwargs: Any) -> RestHttpClientTransportResponse:
        if not isinstance(request, RestHttpRequest):
            # The table and queue SDKs send azure.core.rest requests; the legacy ones want a
            # legacy response this transport does not build.
            raise TypeError(f"HttpClientTransport sends azure.core.rest requests, not {type(request)}")
        if kwargs.get("proxies"):
            raise ValueError("HttpClientTransport does not go through proxies; use RequestsTransport")
        url = urlsplit(request.url)
        scheme = url.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"cannot send a request to {request.url!r}")
        host = url.hostname or ""
        port = url.port or (443 if scheme == "https" else 80)
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        tls: _Tls | None = None
        if scheme == "https":
            cert = kwargs.get("connection_cert")
            tls = (kwargs.get("connection_verify", self._verify), tuple(cert) if isinstance(cert, list) else cert)
        connect_timeout, read_timeout = _timeouts(kwargs)
        body, headers = _body_and_headers(request)
        exchange = (request.method, target, body, headers, read_timeout)
        pool = self._pool((scheme, host, port, tls))

        idle = pool.take()
        if idle is not None:
            try:
                return self._exchange(request, pool, idle, exchange, reused=True)
            except _ClosedWhileIdle as closed:
                # Not a byte came back on a connection that had been idle: the server closed
                # it as the request went out, before reading it (take() finds the closes
                # that arrived earlier). RFC 9112 section 9.3.1 allows sending a request
                # again that was not applied. A server failing mid-request would look the
                # same; that is why only a reused connection gets this, and only once. A
                # body read from a stream cannot be sent again.
                if not isinstance(body, bytes | None):
                    cause = closed.__cause__
                    raise ServiceResponseError(_describe(cause), error=cause) from cause
        connection = self._connect(host, port, tls, connect_timeout)
        return self._exchange(request, pool, connection, exchange, reused=False)

    def _pool(self, origin: _Origin) -> _Pool:
        pool = self._pools.get(origin)
        if pool is None:
            with self._lock:
                pool = self._pools.setdefault(origin, _Pool(self._pool_size, self._idle_limit))
        return pool

    def _connect(
        self, host: str, port: int, tls: _Tls | None, timeout: float
    ) -> http.client.HTTPConnection:
        try:
            if tls is None:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            else:
                connection = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=self._context(tls)
                )
            connection.connect()
        except TimeoutError as exc:
            raise ServiceRequestTimeoutError(
                f"connecting to {host}:{port} timed out after {timeout:g} s", error=exc
            ) from exc
        except OSError as exc:  # refused, unreachable, name unknown, certificate not trusted
            raise ServiceRequestError(f"cannot connect to {host}:{port}: {exc}", error=exc) from exc
        return connection

    def _context(self, tls: _Tls) -> ssl.SSLContext:
        with self._lock:
            context = self._contexts.get(tls)
            if context is None:
                context = self._contexts[tls] = _ssl_context(*tls)
        return context

    @staticmethod
    def _exchange(
        request: RestHttpRequest,
        pool: _Pool,
        connection: http.client.HTTPConnection,
        exchange: tuple[str, str, bytes | None, dict[str, str], float],
        *,
        reused: bool,
    ) -> RestHttpClientTransportResponse:
        method, target, body, headers, read_timeout = exchange
        try:
            if connection.sock is not None:
                connection.sock.settimeout(read_timeout)
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
        except _CLOSED_BY_SERVER as exc:
            connection.close()
            if reused:
                raise _ClosedWhileIdle from exc
            raise ServiceResponseError(_describe(exc), error=exc) from exc
        except TimeoutError as exc:
            connection.close()
            raise ServiceResponseTimeoutError(
                f"no answer within {read_timeout:g} s", error=exc
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise ServiceResponseError(_describe(exc), error=exc) from exc
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            pool.give(connection)
        answer = RestHttpClientTransportResponse(request=request, internal_response=response)
        answer._content = content  # what read() returns, read already
        return answer


def _timeouts(kwargs: dict[str, Any]) -> tuple[float, float]:
    connect = kwargs.get("connection_timeout")
    read = kwargs.get("read_timeout")
    if isinstance(connect, tuple):  # the SDK's deprecated (connect, read) form
        connect, read = connect
    return (
        DEFAULT_TIMEOUT_SECONDS if connect is None else float(connect),
        DEFAULT_TIMEOUT_SECONDS if read is None else float(read),
    )


def _body_and_headers(request: RestHttpRequest) -> tuple[Any, dict[str, str]]:
    body = request.content
    headers = dict(request.headers)
    if isinstance(body, str):
        body = body.encode("utf-8")
        # azure.core counts a str body's Content-Length in characters (rest/_helpers.py,
        # set_content_body); on the wire it is bytes, and any non-ASCII would cut it short.
        headers = {name: value for name, value in headers.items() if name.lower() != "content-length"}
        headers["Content-Length"] = str(len(body))
    return body, headers


def _ssl_context(verify: bool | str, cert: str | tuple[str, str] | None) -> ssl.SSLContext:
    if verify is False:
        context = ssl._create_unverified_context()  # noqa: S323 - the caller asked for it
    elif isinstance(verify, str) and os.path.isdir(verify):
        context = ssl.create_default_context(capath=verify)
    elif isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    else:
        context = ssl.create_default_context()
    if isinstance(cert, str):
        context.load_cert_chain(cert)
    elif cert is not None:
        context.load_cert_chain(*cert)
    return context


def _describe(exc: BaseException | None) -> str:
    return (str(exc) or type(exc).__name__) if exc is not None else "connection closed"

