"""HTTP streams in the devhost: FastAPI's Request in, Starlette responses out, over a real socket.

A response must reach the client chunk by chunk and a request body reach the function piece
by piece: the sample functions hold on events, so a devhost that buffered either would make
these tests wait for the hold's timeout and fail.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devstack.devhost import DevHost
from tests.devhost import streams_app
from tests.devhost.conftest import write_host_json

INIT_INDEXING = {"PYTHON_ENABLE_INIT_INDEXING": "1"}


@pytest.fixture(scope="module")
def streams_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHost]:
    app_dir = tmp_path_factory.mktemp("streams")
    with DevHost(app_module="tests.devhost.streams_app", port=0, app_dir=app_dir, env=INIT_INDEXING,
                 host_json=write_host_json(app_dir, {"version": "2.0"})) as host:
        yield host


def test_the_app_is_served_on_http_streams_without_errors(streams_host: DevHost) -> None:
    assert streams_host.http_streams and streams_host.errors == {}


def test_a_streamed_response_reaches_the_client_before_it_is_complete(streams_host: DevHost) -> None:
    streams_app.RELEASE_SECOND_CHUNK.clear()
    with requests.get(f"{streams_host.base_url}/api/hold", stream=True, timeout=10) as response:
        started = time.monotonic()
        first = response.raw.read(5)
        waited = time.monotonic() - started
        streams_app.RELEASE_SECOND_CHUNK.set()
        rest = response.raw.read()

    assert (first, rest) == (b"first", b"second")
    assert waited < 10  # the second chunk is held for 20 s: a buffering host would not answer yet
    assert response.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in response.headers


@pytest.mark.parametrize("chunked", [False, True])
def test_a_large_response_arrives_whole_with_its_framing(streams_host: DevHost, chunked: bool) -> None:
    url = f"{streams_host.base_url}/api/pattern/24" + ("?chunked=1" if chunked else "")
    with requests.get(url, stream=True, timeout=30) as response:
        hasher, size = hashlib.sha256(), 0
        for piece in response.iter_content(256 * 1024):
            hasher.update(piece)
            size += len(piece)

    expected = hashlib.sha256(bytes(range(256)) * (24 * streams_app.PIECE_BYTES // 256)).hexdigest()
    assert (response.status_code, size, hasher.hexdigest()) == (200, 24 * streams_app.PIECE_BYTES, expected)
    assert response.headers.get("Content-Length") == (None if chunked else str(size))


def test_head_sends_the_headers_and_no_body(streams_host: DevHost) -> None:
    response = requests.head(f"{streams_host.base_url}/api/pattern/2", timeout=10)
    assert response.status_code == 200 and response.content == b""
    assert response.headers["Content-Length"] == str(2 * streams_app.PIECE_BYTES)


def test_a_response_whose_source_fails_is_cut_short_and_the_host_serves_on(streams_host: DevHost) -> None:
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{streams_host.base_url}/api/broken", timeout=10).raise_for_status()
    assert requests.get(f"{streams_host.base_url}/api/items/7", timeout=10).status_code == 200


def test_a_request_body_reaches_the_function_while_the_client_still_sends(streams_host: DevHost) -> None:
    streams_app.FIRST_PIECE_SEEN.clear()
    sent = hashlib.sha256()
    function_saw_first_piece_early = threading.Event()

    def body() -> Iterator[bytes]:
        for n in range(8):
            piece = bytes([n]) * 100_000
            sent.update(piece)
            yield piece
            if n == 0 and streams_app.FIRST_PIECE_SEEN.wait(10):
                function_saw_first_piece_early.set()

    response = requests.post(f"{streams_host.base_url}/api/digest?x=1&x=2", data=body(), timeout=30)

    assert response.status_code == 200, response.text
    seen = response.json()
    assert (seen["size"], seen["sha256"]) == (800_000, sent.hexdigest())
    assert function_saw_first_piece_early.is_set()  # read before the client sent the rest
    assert seen["pieces"] > 1


def test_a_body_with_a_content_length_is_read_whole_and_in_pieces(streams_host: DevHost) -> None:
    data = bytes(range(256)) * 4000
    response = requests.put(f"{streams_host.base_url}/api/digest", data=data, timeout=10)
    assert response.json()["sha256"] == hashlib.sha256(data).hexdigest() and response.json()["pieces"] > 1


def test_a_body_over_the_host_limit_is_413(streams_host: DevHost, monkeypatch: pytest.MonkeyPatch) -> None:
    from devstack.devhost import http as devhost_http

    monkeypatch.setattr(devhost_http, "MAX_REQUEST_BODY", 1000)
    declared = requests.post(f"{streams_host.base_url}/api/digest", data=b"x" * 1001, timeout=10)
    chunked = requests.post(f"{streams_host.base_url}/api/digest", data=iter([b"x" * 600, b"y" * 600]), timeout=10)
    assert (declared.status_code, chunked.status_code) == (413, 413)


def test_route_values_query_and_headers_reach_the_request_and_a_dict_is_json(streams_host: DevHost) -> None:
    response = requests.get(f"{streams_host.base_url}/api/items/a%20b", headers={"User-Agent": "probe"}, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    assert response.json() == {"id": "a b", "agent": "probe", "method": "GET"}


def test_keep_alive_serves_streamed_answers_one_after_another(streams_host: DevHost) -> None:
    with requests.Session() as session:
        sizes = [len(session.get(f"{streams_host.base_url}/api/pattern/1?chunked=1", timeout=10).content)
                 for _ in range(5)]
    assert sizes == [streams_app.PIECE_BYTES] * 5


def test_a_client_that_goes_away_mid_download_leaves_the_host_serving(streams_host: DevHost) -> None:
    host, port = streams_host.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"GET /api/pattern/64 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert connection.recv(1024).startswith(b"HTTP/1.1 200")
    assert requests.get(f"{streams_host.base_url}/api/items/1", timeout=10).status_code == 200


def test_an_app_that_mixes_streams_and_classic_functions_has_the_classic_ones_in_error(tmp_path: Path) -> None:
    with DevHost(app_module="tests.devhost.mixed_app", port=0, app_dir=tmp_path, env=INIT_INDEXING,
                 host_json=write_host_json(tmp_path, {"version": "2.0"})) as host:
        classic = requests.get(f"{host.base_url}/api/classic", timeout=10)
        streams = requests.get(f"{host.base_url}/api/streams", timeout=10)
        errors = dict(host.errors)

    assert set(errors) == {"classic"} and "HTTP streams" in errors["classic"]
    assert (classic.status_code, streams.status_code, streams.text) == (500, 200, "streams")


def test_without_init_indexing_the_streams_functions_are_in_error(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHON_ENABLE_INIT_INDEXING", raising=False)
    with DevHost(app_module="tests.devhost.streams_app", port=0, app_dir=tmp_path,
                 host_json=write_host_json(tmp_path, {"version": "2.0"})) as host:
        response = requests.get(f"{host.base_url}/api/items/1", timeout=10)
        errors = dict(host.errors)

    assert response.status_code == 500
    assert errors and all("PYTHON_ENABLE_INIT_INDEXING" in problem for problem in errors.values())
