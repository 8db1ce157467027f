"""``HttpClientTransport`` on the wire, against a loopback server each test starts.

The server speaks just enough HTTP/1.1 to keep connections alive and counts the TCP
connections and requests it sees; each test chooses what it does with a request (answer,
answer and close, drop it unanswered, answer late).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.core.exceptions import (
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest

from devstack.certs import ensure_server_certificate
from shared.adapters.http_transport import HttpClientTransport
from shared.adapters.storage_http import pooled_transport
from tests.support import free_port


@dataclass
class Received:
    connection: int  # which TCP connection it came on, from 1
    method: str
    path: str
    body: bytes


# What the server does with a request: "answer", "answer-then-close", "drop" (close the
# connection without answering), or a number of seconds to wait before answering.
Behaviour = Callable[[Received], "str | float"]


class LoopbackServer:
    def __init__(self, behaviour: Behaviour, tls: ssl.SSLContext | None = None) -> None:
        self.behaviour = behaviour
        self.tls = tls
        self.received: list[Received] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/") -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            with conn, conn.makefile("rb") as reader:
                while True:
                    line = reader.readline()
                    if not line:
                        return
                    method, path, _ = line.decode().split(" ", 2)
                    headers = {}
                    while (header := reader.readline()) not in (b"\r\n", b""):
                        name, value = header.decode().split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                    if headers.get("transfer-encoding") == "chunked":
                        body = b""
                        while size := int(reader.readline(), 16):
                            body += reader.read(size + 2)[:-2]
                        reader.readline()
                    else:
                        body = reader.read(int(headers.get("content-length", "0")))
                    received = Received(number, method, path, body)
                    with self._lock:
                        self.received.append(received)
                    action = self.behaviour(received)
                    if action == "drop":
                        return
                    if isinstance(action, float):
                        time.sleep(action)
                    payload = body or path.encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
                    )
                    if action == "answer-then-close":
                        return
        except OSError:
            return  # the client went away, or refused the certificate


@pytest.fixture()
def serve() -> Iterator[Callable[..., LoopbackServer]]:
    servers: list[LoopbackServer] = []

    def start(behaviour: Behaviour = lambda _: "answer", tls: ssl.SSLContext | None = None) -> LoopbackServer:
        servers.append(LoopbackServer(behaviour, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _get(transport: HttpClientTransport, url: str, **kwargs: object) -> bytes:
    response = transport.send(HttpRequest("GET", url), **kwargs)
    assert response.status_code == 200
    return response.read()  # type: ignore[no-any-return]


def test_many_calls_travel_over_one_kept_alive_connection(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve()
    transport = HttpClientTransport()
    answers = [_get(transport, server.url(f"/entity/{n}")) for n in range(20)]
    assert answers == [f"/entity/{n}".encode() for n in range(20)]
    assert server.connections == 1


def test_calls_from_32_threads_each_get_their_own_answer_on_at_most_32_connections(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve()
    transport = HttpClientTransport(pool_size=64)
    wrong: list[str] = []

    def worker(thread: int) -> None:
        for n in range(25):
            path = f"/t{thread}/{n}"
            if _get(transport, server.url(path)) != path.encode():
                wrong.append(path)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert len(server.received) == 32 * 25
    assert server.connections <= 32


def test_a_body_with_non_ascii_text_arrives_whole(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve()
    text = '{"Subject": "Grüße aus Köln ✉"}'
    response = HttpClientTransport().send(HttpRequest("POST", server.url("/echo"), content=text))
    assert response.read() == text.encode("utf-8")
    assert server.received[0].body == text.encode("utf-8")


def test_a_connection_the_server_closed_while_idle_is_replaced(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda _: "answer-then-close")
    transport = HttpClientTransport()
    assert _get(transport, server.url("/first")) == b"/first"
    time.sleep(0.1)  # the server's close reaches the client while the connection is idle
    assert _get(transport, server.url("/second")) == b"/second"
    assert server.connections == 2
    assert [r.path for r in server.received] == ["/first", "/second"]  # nothing sent twice


def test_a_streamed_body_goes_out_whole_after_the_server_closed_the_idle_connection(serve) -> None:  # type: ignore[no-untyped-def]
    # A stream read once cannot be sent again: the closed connection must be noticed before
    # the request goes out on it.
    server = serve(lambda _: "answer-then-close")
    transport = HttpClientTransport()
    assert _get(transport, server.url("/first")) == b"/first"
    time.sleep(0.1)
    response = transport.send(HttpRequest("POST", server.url("/stream"), content=iter([b"part 1, ", b"part 2"])))
    assert response.read() == b"part 1, part 2"


def test_a_request_dropped_on_a_reused_connection_is_sent_once_more_on_a_new_one(serve) -> None:  # type: ignore[no-untyped-def]
    # The server reads the second request of its first connection and closes without an
    # answer: the race of an idle close that the check before reuse cannot see.
    server = serve(lambda r: "drop" if (r.connection, r.path) == (1, "/second") else "answer")
    transport = HttpClientTransport()
    assert _get(transport, server.url("/first")) == b"/first"
    response = transport.send(HttpRequest("POST", server.url("/second"), content=b"payload"))
    assert response.read() == b"payload"
    assert [(r.connection, r.path, r.body) for r in server.received] == [
        (1, "/first", b""), (1, "/second", b"payload"), (2, "/second", b"payload"),
    ]


def test_a_request_dropped_on_a_new_connection_fails_without_being_sent_again(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda _: "drop")
    with pytest.raises(ServiceResponseError) as raised:
        HttpClientTransport().send(HttpRequest("POST", server.url("/once"), content=b"x"))
    assert not isinstance(raised.value, ServiceResponseTimeoutError)
    assert len(server.received) == 1


def test_connections_idle_longer_than_the_idle_limit_are_not_reused(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve()
    transport = HttpClientTransport(idle_limit=0.05)
    _get(transport, server.url("/first"))
    time.sleep(0.1)
    _get(transport, server.url("/second"))
    assert server.connections == 2


def test_a_server_that_does_not_answer_times_out_after_the_read_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda _: 5.0)
    started = time.monotonic()
    with pytest.raises(ServiceResponseTimeoutError):
        _get(HttpClientTransport(), server.url("/slow"), read_timeout=0.3)
    assert time.monotonic() - started < 2.0


def test_a_late_answer_never_becomes_the_answer_of_the_next_call(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda r: 0.5 if r.path == "/slow" else "answer")
    transport = HttpClientTransport()
    with pytest.raises(ServiceResponseTimeoutError):
        _get(transport, server.url("/slow"), read_timeout=0.2)
    time.sleep(0.5)  # the answer to /slow has arrived on the connection the call gave up
    assert _get(transport, server.url("/fast")) == b"/fast"


def test_a_refused_connection_is_a_request_error_the_retry_policy_can_repeat() -> None:
    with pytest.raises(ServiceRequestError) as raised:
        _get(HttpClientTransport(), f"http://127.0.0.1:{free_port()}/", connection_timeout=2)
    assert not isinstance(raised.value, ServiceResponseError)
    assert "cannot connect" in str(raised.value)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return ensure_server_certificate("transport-test", tmp_path_factory.mktemp("certs"))


@pytest.fixture()
def tls_server(serve, certificate) -> LoopbackServer:  # type: ignore[no-untyped-def]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    return serve(tls=context)  # type: ignore[no-any-return]


def test_https_is_verified_against_the_ca_bundle_of_the_environment(
    tls_server: LoopbackServer, certificate, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate.ca_file))
    transport = HttpClientTransport()
    assert [_get(transport, tls_server.url(f"/{n}")) for n in range(3)] == [b"/0", b"/1", b"/2"]
    assert tls_server.connections == 1


def test_https_to_a_server_whose_ca_is_not_trusted_is_refused(
    tls_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(HttpClientTransport(), tls_server.url("/"))
    assert tls_server.received == []


def test_connection_verify_of_one_call_applies_to_that_call_only(
    tls_server: LoopbackServer, certificate  # type: ignore[no-untyped-def]
) -> None:
    transport = HttpClientTransport(verify=True)  # the system's CAs, which do not know the test CA
    assert _get(transport, tls_server.url("/trusted"), connection_verify=str(certificate.ca_file)) == b"/trusted"
    assert _get(transport, tls_server.url("/unverified"), connection_verify=False) == b"/unverified"
    # The connections those calls left in the pool were not verified against the system's CAs.
    with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(transport, tls_server.url("/default"))


def test_storage_clients_get_the_http_client_transport_without_proxy_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(pooled_transport(), HttpClientTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    assert isinstance(pooled_transport(), RequestsTransport)


def test_a_proxy_asked_for_in_one_call_is_refused_rather_than_bypassed(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve()
    with pytest.raises(ValueError, match="proxies"):
        _get(HttpClientTransport(), server.url("/"), proxies={"http": "http://proxy.test:3128"})
    assert server.received == []
