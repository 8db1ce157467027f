"""The simulator's HTTPS listener and its Python API, :class:`GraphSimulator`.

One ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive, TLS from the devstack CA) serves
these surfaces on one port, as the tests and the local stack expect them:

- ``/{tenant}/...``  the Microsoft identity platform (``identity.py``)
- ``/v1.0/...``      Microsoft Graph (``graph.py``)
- ``/_sim/...``      the control API for tests and demos (``control.py``)
- ``/_files/...``    drives' pre-authenticated upload and download URLs (``uploads.py``)
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from devstack import certs

from .context import SimContext
from .control import ControlApi
from .delivery import Delivery
from .graph import GraphApi
from .identity import IdentityPlatform
from .jwt import SigningKey
from .state import SimState
from .wire import Request, Response, graph_error

log = logging.getLogger(__name__)

CERT_NAME = "graphsim"
BODY_PIECE_BYTES = 1024 * 1024  # a larger body is written piece by piece


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], ctx: ssl.SSLContext, simulator: GraphSimulator) -> None:
        self.ssl_context = ctx
        self.simulator = simulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that gives up on TLS (unknown CA, closed keep-alive) is not an error of ours
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small answers must not wait for an ACK
        # the TLS handshake runs in the connection's own thread, not in the accept loop
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "graphsim/1.0"
    sys_version = ""
    timeout = 60
    server: _TlsServer

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        try:
            self.request.do_handshake()
        except (OSError, ssl.SSLError):
            self.close_connection = True
            raise
        super().setup()

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ssl.SSLError):
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        log.debug("%s " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):
            super().log_request(code, size)

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers: dict[str, str] = {}
        for name, value in self.headers.items():  # a repeated header is one comma-separated list (RFC 9110 5.3)
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request = Request(self.command, unquote(split.path), self.path, query, headers, body,
                          self.server.simulator.base_url)
        try:
            response = self.server.simulator.route(request)
        except Exception:  # a bug of the simulator: answer like a server error, keep serving
            log.exception("graphsim failed on %s %s", self.command, split.path)
            response = graph_error(500, "InternalServerError", "The simulator failed on this request.")
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        body = b"" if self.command == "HEAD" else response.body
        buffered: list[bytes] = getattr(self, "_headers_buffer", [])
        if len(body) <= BODY_PIECE_BYTES:
            # headers and body in one TLS write: one record, one segment for small answers
            self.wfile.write(b"".join(buffered) + b"\r\n" + body)
            buffered.clear()
            return
        # A large body (a file download) goes out in pieces of itself, never copied whole.
        self.wfile.write(b"".join(buffered) + b"\r\n")
        buffered.clear()
        view = memoryview(body)
        for offset in range(0, len(view), BODY_PIECE_BYTES):
            self.wfile.write(view[offset:offset + BODY_PIECE_BYTES])

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _dispatch


class GraphSimulator:
    """Microsoft identity platform + Microsoft Graph, in process, over HTTPS.

    ``GraphSimulator(host="127.0.0.1", port=0, cert_dir=None)``: ``port=0`` picks a free
    port; ``cert_dir`` defaults to ``devstack.certs.DEFAULT_CERT_DIR`` (the CA there is
    what clients must trust: :attr:`ca_file`). Use ``start()``/``stop()`` or ``with``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, cert_dir: str | Path | None = None) -> None:
        self.host = host
        self._requested_port = port
        self.cert_dir = Path(cert_dir) if cert_dir is not None else certs.DEFAULT_CERT_DIR
        self.state = SimState()
        self.key = SigningKey()
        self.ca_file = str(certs.ensure_server_certificate(CERT_NAME, self.cert_dir).ca_file)
        self.delivery = Delivery(self.state, self.ca_file)
        self.context = SimContext(self.state, self.key, self.delivery, self.ca_file)
        self.identity = IdentityPlatform(self.context)
        self.graph = GraphApi(self.context)
        self.control = ControlApi(self.context, self.identity, self.graph.subscriptions, self.graph.drive)
        self._server: _TlsServer | None = None
        self._thread: threading.Thread | None = None

    # properties -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:<port>``: the authority host (MICROSOFT_AUTHORITY_HOST)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def graph_url(self) -> str:
        """``https://127.0.0.1:<port>/v1.0`` (GRAPH_API_ENDPOINT)."""
        return self.base_url + "/v1.0"

    @property
    def control_url(self) -> str:
        return self.base_url + "/_sim"

    def authority(self, tenant: str = "common") -> str:
        return f"{self.base_url}/{tenant}"

    # lifecycle ------------------------------------------------------------------------
    def start(self) -> GraphSimulator:
        ctx = certs.server_ssl_context(CERT_NAME, self.cert_dir)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        _TlsServer.address_family = family
        self._server = _TlsServer((self.host, self._requested_port), ctx, self)
        self.context.base_url = self.base_url
        self.delivery.start()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="graphsim-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.delivery.stop()
        self.graph.batch.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> GraphSimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # routing --------------------------------------------------------------------------
    def route(self, request: Request) -> Response:
        if request.path.startswith("/_sim/") or request.path == "/_sim":
            return self.control.handle(request)
        if request.path.startswith("/v1.0/") or request.path == "/v1.0":
            return self.graph.handle(request)
        if request.path.startswith("/_files/"):  # pre-authenticated upload and download URLs of drives
            return self.graph.drive.transfers.handle(request)
        return self.identity.handle(request)
