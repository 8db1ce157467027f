"""The HTTP front of the devhost: function routes under the route prefix and the admin API.

A threaded HTTP/1.1 server with keep-alive. Routes, methods and auth levels come from the
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
from dataclasses import dataclass
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

    @property
    def key(self) -> str | None:
        return self.params.get("code") or self.headers.get("x-functions-key")


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
        for name, value in self.headers.items():
            lower = name.lower()
            headers[lower] = f"{headers[lower]}, {value}" if lower in headers else value
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        body_read = False

        def read_body() -> bytes:
            nonlocal body_read
            body_read = True
            return self._read_body()

        request = IncomingRequest(self.command, f"http://{host}{self.path}", parts.path or "/", params, headers,
                                  read_body)
        try:
            response = self.server.frontend.handle(request)
        except RequestTooLarge:
            response, body_read = Response.text(413), False
        except MalformedBody:
            response, body_read = Response.text(400), False
        except Exception:  # noqa: BLE001 - a fault of the devhost itself: 500, and keep serving
            logger.exception("devhost: request to %s failed", parts.path)
            response = Response(500)
        if not body_read and self._has_body():
            # The unread body would be taken for the next request: end the connection instead.
            self.close_connection = True
        self._send(response)
        logger.debug("%s %s -> %s in %.1f ms", self.command, parts.path, response.status,
                     (time.perf_counter() - started) * 1000)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = _dispatch

    def _has_body(self) -> bool:
        length = self.headers.get("Content-Length")
        return bool(length and length.strip() != "0") or "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _read_body(self) -> bytes:
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._read_chunked()
            length_text = self.headers.get("Content-Length")
            if not length_text:
                return b""
            length = int(length_text)
        except ValueError as error:
            raise MalformedBody from error
        if length < 0:
            raise MalformedBody
        if length > MAX_REQUEST_BODY:
            raise RequestTooLarge
        body = self.rfile.read(length)
        if len(body) < length:
            raise MalformedBody
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_REQUEST_BODY:
                raise RequestTooLarge
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

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

