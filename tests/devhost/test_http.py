"""HTTP triggers through the devhost: routes, methods, keys, errors, wire format."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from devstack.devhost import DevHost
from devstack.devhost import http as devhost_http
from tests.devhost.conftest import FUNCTION_KEY, MASTER_KEY, SAMPLE_APP, write_host_json

pytestmark = pytest.mark.integration  # a real Azurite (and, for the CLI, a real process)


def test_route_parameters_reach_the_function_as_route_params(devhost: DevHost) -> None:
    response = requests.get(f"{devhost.base_url}/api/items/42/blue%20box?q=find", headers={"X-Sample": "h"},
                            timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["X-Item"] == "yes"
    item = response.json()
    assert item["id"] == "42"
    assert item["name"] == "blue box"
    assert item["method"] == "GET"
    assert item["q"] == "find"
    assert item["header"] == "h"
    assert item["url"].endswith("/api/items/42/blue%20box?q=find")


def test_optional_route_parameter_may_be_left_out(devhost: DevHost) -> None:
    item = requests.post(f"{devhost.base_url}/api/items/7", data=b"payload", timeout=5).json()

    assert item == {**item, "id": "7", "name": None, "method": "POST", "body": "payload"}


def test_a_constraint_that_does_not_match_is_not_found(devhost: DevHost) -> None:
    assert requests.get(f"{devhost.base_url}/api/items/abc", timeout=5).status_code == 404


def test_literal_route_wins_over_a_parameter(devhost: DevHost) -> None:
    response = requests.get(f"{devhost.base_url}/api/items/latest", timeout=5)

    assert response.status_code == 200
    assert response.text == "latest"


def test_catch_all_takes_the_rest_of_the_path(devhost: DevHost) -> None:
    assert requests.get(f"{devhost.base_url}/api/files/a/b/c.txt", timeout=5).text == "a/b/c.txt"


def test_a_method_the_route_does_not_accept_is_405(devhost: DevHost) -> None:
    response = requests.delete(f"{devhost.base_url}/api/items/42", timeout=5)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"


def test_an_async_function_is_awaited_and_its_response_sent_as_built(devhost: DevHost) -> None:
    response = requests.get(f"{devhost.base_url}/api/async-echo/hi", timeout=5)

    assert response.status_code == 201
    assert response.headers["Content-Type"] == "text/html; charset=latin-1"
    assert response.text == "hi"


def test_unknown_route_is_404(devhost: DevHost) -> None:
    assert requests.get(f"{devhost.base_url}/api/nothing/here", timeout=5).status_code == 404
    assert requests.get(f"{devhost.base_url}/elsewhere", timeout=5).status_code == 404


def test_function_level_route_without_a_key_is_401(devhost: DevHost) -> None:
    assert requests.get(f"{devhost.base_url}/api/secret", timeout=5).status_code == 401
    assert requests.get(f"{devhost.base_url}/api/secret", params={"code": "wrong"}, timeout=5).status_code == 401


def test_function_level_route_accepts_the_key_as_code_or_header(devhost: DevHost) -> None:
    by_code = requests.get(f"{devhost.base_url}/api/secret", params={"code": FUNCTION_KEY}, timeout=5)
    by_header = requests.get(f"{devhost.base_url}/api/secret", headers={"x-functions-key": FUNCTION_KEY}, timeout=5)
    by_master = requests.get(f"{devhost.base_url}/api/secret", headers={"x-functions-key": MASTER_KEY}, timeout=5)

    assert (by_code.status_code, by_code.text) == (200, "secret ok")
    assert by_header.status_code == 200
    assert by_master.status_code == 200


def test_admin_level_route_accepts_only_the_master_key(devhost: DevHost) -> None:
    url = f"{devhost.base_url}/api/maintenance"

    assert requests.post(url, headers={"x-functions-key": FUNCTION_KEY}, timeout=5).status_code == 401
    assert requests.post(url, headers={"x-functions-key": MASTER_KEY}, timeout=5).status_code == 204


def test_a_raising_function_is_500_without_details_and_the_host_keeps_serving(devhost: DevHost) -> None:
    failed = requests.get(f"{devhost.base_url}/api/explode", timeout=5)
    after = requests.get(f"{devhost.base_url}/api/items/1", timeout=5)

    assert failed.status_code == 500
    assert "detail" not in failed.text
    assert after.status_code == 200


def test_the_failure_is_logged_with_function_name_and_invocation_id(
        devhost: DevHost, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="devstack.devhost"):
        requests.get(f"{devhost.base_url}/api/explode?code=should-not-be-logged", timeout=5)

    failure = next(r for r in caplog.records if "Failed" in r.getMessage())
    assert "Functions.explode" in failure.getMessage()
    assert "Id=" in failure.getMessage()
    assert failure.exc_info is not None
    assert all("should-not-be-logged" not in r.getMessage() for r in caplog.records)


def test_keep_alive_connections_serve_many_requests(devhost: DevHost) -> None:
    with requests.Session() as session:
        statuses = [session.get(f"{devhost.base_url}/api/items/{n}", timeout=5).status_code for n in range(20)]

    assert statuses == [200] * 20


def test_a_body_over_the_limit_is_413(devhost: DevHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devhost_http, "MAX_REQUEST_BODY", 10)

    response = requests.post(f"{devhost.base_url}/api/items/1", data=b"x" * 11, timeout=5)

    assert response.status_code == 413


def test_host_status_lists_the_functions_for_the_master_key(devhost: DevHost) -> None:
    url = f"{devhost.base_url}/admin/host/status"

    assert requests.get(url, timeout=5).status_code == 401
    status = requests.get(url, headers={"x-functions-key": MASTER_KEY}, timeout=5).json()
    assert status["state"] == "Running"
    assert {"show_item", "secret", "process_work", "nightly", "heartbeat"} <= set(status["functions"])
    assert status["errors"] == {}


def test_route_prefix_comes_from_host_json_and_functions_can_be_selected(tmp_path) -> None:
    host_json = write_host_json(tmp_path, {"version": "2.0", "extensions": {"http": {"routePrefix": "v1"}}})

    with DevHost(app_module=SAMPLE_APP, host_json=host_json, app_dir=tmp_path, functions=["show_item"]) as host:
        prefixed = requests.get(f"{host.base_url}/v1/items/3", timeout=5)
        unprefixed = requests.get(f"{host.base_url}/api/items/3", timeout=5)
        other = requests.get(f"{host.base_url}/v1/items/latest", timeout=5)

    assert prefixed.json()["id"] == "3"
    assert unprefixed.status_code == 404
    assert other.status_code == 404


def test_stop_leaves_no_thread_behind_and_closes_the_port(tmp_path) -> None:
    before = set(threading.enumerate())
    host = DevHost(app_module=SAMPLE_APP, host_json=write_host_json(tmp_path, {"version": "2.0"}),
                   app_dir=tmp_path, functions=["show_item"])
    with host:
        url = host.base_url
        session = requests.Session()
        assert session.get(f"{url}/api/items/1", timeout=5).status_code == 200  # an idle keep-alive connection

    deadline = time.monotonic() + 2
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)  # a handler thread ends once its closed connection wakes it
    assert set(threading.enumerate()) - before == set()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/api/items/1", timeout=2)
    session.close()


def test_a_chunked_request_body_reaches_the_function(devhost: DevHost) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"first,"
        yield b"second"

    response = requests.post(f"{devhost.base_url}/api/items/5", data=chunks(), timeout=5)

    assert response.json()["body"] == "first,second"


def test_an_unreadable_content_length_is_400(devhost: DevHost) -> None:
    host, port = devhost.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(b"POST /api/items/1 HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n")
        status_line = connection.recv(1024).split(b"\r\n", 1)[0]

    assert status_line == b"HTTP/1.1 400 Bad Request"


def test_head_answers_with_headers_only(devhost: DevHost) -> None:
    response = requests.head(f"{devhost.base_url}/api/files/readme.md", timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len("readme.md"))
    assert response.content == b""
