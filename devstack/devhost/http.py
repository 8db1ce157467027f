"""The HTTP front of the devhost: function routes under the route prefix and the admin API.

A threaded HTTP/1.1 server with keep-alive. A request body is read off the connection as
the function asks for it (``BodyReader``: Content-Length or chunked framing, at most
``MAX_REQUEST_BODY``), whole for a classic function, in pieces for an HTTP streams one; an
HTTP streams response is written as it comes (``ConnectionWriter``: Content-Length
framing when the response states one, else chunked transfer coding). Routes, methods and auth levels come from the
functions' ``httpTrigger`` bindings. Keys are taken from the ``code`` query parameter or the
``x-functions-key`` header, as the host takes them: function-level routes accept the function
key or the master key, admin-level routes and the admin API only the master key. Nothing of a
request's query string or body is logged, since they may carry codes and tokens.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from .invocation import FunctionSpec
from .routing import RouteTemplate

logger = logging.getLogger("devstack.devhost")

MAX_REQUEST_BODY = 100 * 1024 * 1024  # the host's limit (Microsoft docs "HTTP trigger", "Limits")
KEEP_ALIVE_IDLE_SECONDS = 120
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


class RequestTooLarge(Exception):
    """The body is over MAX_REQUEST_BODY (413)."""


class MalformedBody(Exception):
    """Content-Length or chunked framing that cannot be read (400)."""


@dataclass
class HttpRoute:
    spec: FunctionSpec
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    auth_level: str

    @classmethod
    def from_spec(cls, spec: FunctionSpec) -> HttpRoute:
        settings = spec.trigger.settings
        route = settings.get("route") or spec.name
        methods = settings.get("methods")
        method_names = frozenset(str(getattr(m, "value", m)).upper() for m in methods) if methods else None
        level = str(getattr(settings.get("authLevel"), "value", settings.get("authLevel") or "function")).lower()
        return cls(spec, RouteTemplate.parse(route), method_names, level)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    sent: bool = False  # written already, piece by piece (an HTTP streams response)

    @classmethod
    def streamed(cls, status: int) -> Response:
        return cls(status, sent=True)

    @classmethod
    def text(cls, status: int, text: str = "") -> Response:
        return cls(status, text.encode("utf-8"), (("Content-Type", "text/plain; charset=utf-8"),))

    @classmethod
    def json(cls, status: int, data: Any) -> Response:
        return cls(status, json.dumps(data).encode("utf-8"), (("Content-Type", "application/json; charset=utf-8"),))


def from_function_response(value: Any) -> Response:
    """What the worker sends for a function's return value: HttpResponse, str or nothing."""
    if isinstance(value, func.HttpResponse):
        headers = [(name, str(header)) for name, header in value.headers.items()]
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", f"{value.mimetype}; charset={value.charset}"))
        return Response(int(value.status_code), value.get_body(), tuple(headers))
    if isinstance(value, str):
        return Response.text(200, value)
    if value is None:
        return Response(204)
    raise TypeError(f"HTTP function returned {type(value).__name__}")


class Keys:
    """The function key and master key, compared in constant time."""

    def __init__(self, function_key: str, master_key: str) -> None:
        self._function_key = function_key.encode("utf-8")
        self._master_key = master_key.encode("utf-8")

    def is_master(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode("utf-8"), self._master_key)

    def allows(self, auth_level: str, presented: str | None) -> bool:
        if auth_level == "anonymous":
            return True
        if presented is None:
            return False
        if auth_level == "admin":
            return self.is_master(presented)
        function_ok = hmac.compare_digest(presented.encode("utf-8"), self._function_key)
        return function_ok | self.is_master(presented)


@dataclass
class IncomingRequest:
    method: str
    url: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    read_body: Callable[[], bytes]
    # What an HTTP streams function needs beyond that: the headers as sent, the body in
    # pieces (b"" at its end), where the response goes, and the two ends of the connection.
    raw_headers: list[tuple[str, str]] = field(default_factory=list)
    read_piece: Callable[[int], bytes] = lambda size: b""
    has_body: bool = False
    writer: Any = None
    client: tuple[str, int] = ("127.0.0.1", 0)
    server: tuple[str, int] = ("127.0.0.1", 0)

    @property
    def key(self) -> str | None:
        return self.params.get("code") or self.headers.get("x-functions-key")


class BodyReader:
    """A request's body off the connection, piece by piece, as its framing says (RFC 9112
    section 6: Content-Length, or chunked transfer coding with its trailers skipped)."""

    def __init__(self, rfile: Any, headers: Any, limit: int | None = None) -> None:
        self._rfile = rfile
        self._limit = MAX_REQUEST_BODY if limit is None else limit
        self._chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self._remaining = 0  # of the body (Content-Length) or of the current chunk
        self.total = 0
        self.touched = False
        length_text = headers.get("Content-Length")
        self.declared: int | None = None
        if not self._chunked and length_text:
            try:
                self.declared = int(length_text)
            except ValueError:
                self.declared = -1
        if not self._chunked:
            self._remaining = max(self.declared or 0, 0)
        self.done = not self._chunked and not self._remaining and (self.declared or 0) >= 0

    @property
    def present(self) -> bool:
        return self._chunked or bool(self.declared)

    def check_declared(self) -> None:
        """Refuse a Content-Length that cannot be read or is over the limit, before any read."""
        if self.declared is not None and self.declared < 0:
            raise MalformedBody
        if self.declared is not None and self.declared > self._limit:
            raise RequestTooLarge

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body; b"" once it is all read."""
        self.touched = True
        self.check_declared()
        if self.done:
            return b""
        if self._chunked and not self._remaining:
            try:
                self._remaining = int(self._rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
            except ValueError as error:
                raise MalformedBody from error
            if self._remaining == 0:
                while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self.done = True
                return b""
        piece = self._rfile.read(min(size, self._remaining))
        if not piece:
            raise MalformedBody  # the connection ended inside the body
        self._remaining -= len(piece)
        self.total += len(piece)
        if self.total > self._limit:
            raise RequestTooLarge
        if not self._remaining:
            if self._chunked:
                self._rfile.readline(1024)  # the CRLF after a chunk
            else:
                self.done = True
        return bytes(piece)

    def read_all(self) -> bytes:
        self.check_declared()
        pieces: list[bytes] = []
        while piece := self.read(1024 * 1024):
            pieces.append(piece)
        return b"".join(pieces)


class ConnectionWriter:
    """An HTTP streams response onto the connection as its ASGI messages come."""

    def __init__(self, handler: _Handler) -> None:
        self._handler = handler
        self._chunked = False
        self.started = False
        self.finished = False
        self.status = 0

    def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        handler = self._handler
        self.started, self.status = True, status
        handler.send_response(status)
        names = {name.lower() for name, _ in headers}
        for name, value in headers:
            if name.lower() not in ("transfer-encoding", "connection"):
                handler.send_header(name, value)
        no_body = handler.command == "HEAD" or status in (204, 304) or status < 200
        if "content-length" not in names and not no_body:
            self._chunked = True
            handler.send_header("Transfer-Encoding", "chunked")
        if handler.close_connection:
            handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.flush()

    def write(self, data: bytes) -> None:
        if self._handler.command == "HEAD" or not data:
            return
        out = self._handler.wfile
        if self._chunked:
            out.write(b"%x\r\n" % len(data))
            out.write(data)
            out.write(b"\r\n")
        else:
            out.write(data)
        out.flush()

    def end(self) -> None:
        if self._chunked and self._handler.command != "HEAD":
            self._handler.wfile.write(b"0\r\n\r\n")
        self._handler.wfile.flush()
        self.finished = True


class Frontend:
    """Finds the route of a request, checks its key and hands it to the function."""

    def __init__(
        self,
        routes: list[HttpRoute],
        route_prefix: str,
        keys: Keys,
        run_http: Callable[[HttpRoute, IncomingRequest, dict[str, str]], Response],
        admin: Callable[[IncomingRequest], Response],
    ) -> None:
        # Most specific first, as ASP.NET routing orders them.
        self.routes = sorted(routes, key=lambda route: route.template.specificity)
        self.prefix = "/" + route_prefix if route_prefix else ""
        self.keys = keys
        self._run_http = run_http
        self._admin = admin

    def handle(self, request: IncomingRequest) -> Response:
        if request.path == "/admin" or request.path.startswith("/admin/"):
            return self._admin(request)
        if self.prefix:
            if not (request.path == self.prefix or request.path.startswith(self.prefix + "/")):
                return Response.text(404)
            relative = request.path[len(self.prefix):]
        else:
            relative = request.path
        allowed: set[str] = set()
        for route in self.routes:
            values = route.template.match(relative)
            if values is None:
                continue
            if route.methods is not None and request.method not in route.methods:
                allowed |= route.methods
                continue
            if not self.keys.allows(route.auth_level, request.key):
                return Response.text(401)
            return self._run_http(route, request, values)
        if allowed:
            return Response(405, b"", (("Allow", ", ".join(sorted(allowed))),))
        return Response.text(404)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the stdlib's 5 refuses connections under a burst of notifications
    frontend: Frontend

    def __init__(self, address: tuple[str, int], frontend: Frontend) -> None:
        self.frontend = frontend
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Ends idle keep-alive connections, so no handler thread outlives the host."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "devhost"
    timeout = KEEP_ALIVE_IDLE_SECONDS
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK hold the second one back by ~40 ms on every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _dispatch(self) -> None:
        started = time.perf_counter()
        parts = urlsplit(self.path)
        params: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            params.setdefault(name, value)
        headers: dict[str, str] = {}
        raw_headers: list[tuple[str, str]] = []
        for name, value in self.headers.items():
            lower = name.lower()
            headers[lower] = f"{headers[lower]}, {value}" if lower in headers else value
            raw_headers.append((name, value))
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        body = BodyReader(self.rfile, self.headers)
        writer = ConnectionWriter(self)
        client = self.client_address[:2] if isinstance(self.client_address, tuple) else ("127.0.0.1", 0)
        request = IncomingRequest(
            self.command, f"http://{host}{self.path}", parts.path or "/", params, headers, body.read_all,
            raw_headers=raw_headers, read_piece=body.read, has_body=body.present, writer=writer,
            client=(str(client[0]), int(client[1])),
            server=(str(self.server.server_address[0]), int(self.server.server_address[1])))
        try:
            response = self.server.frontend.handle(request)
        except RequestTooLarge:
            response = Response.text(413)
        except MalformedBody:
            response = Response.text(400)
        except Exception:  # noqa: BLE001 - a fault of the devhost itself: 500, and keep serving
            logger.exception("devhost: request to %s failed", parts.path)
            response = Response(500)
        if writer.started and not writer.finished:
            # A streamed response broke off: end the connection, so the client sees it short.
            self.close_connection = True
            return
        if not body.done:
            # The unread body would be taken for the next request: end the connection instead.
            self.close_connection = True
        if not response.sent:
            self._send(response)
        logger.debug("%s %s -> %s in %.1f ms", self.command, parts.path, response.status,
                     (time.perf_counter() - started) * 1000)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = _dispatch

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests: a bare status, without the stdlib's HTML page.
        self.close_connection = True
        self._send(Response.text(code))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # The stdlib logs the request line, query string included; the devhost logs paths only.
        return


def serve(address: tuple[str, int], frontend: Frontend) -> _Server:
    return _Server(address, frontend)

