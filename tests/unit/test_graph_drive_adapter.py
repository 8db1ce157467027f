"""The drive calls of the Graph client at the wire: a ``requests`` transport adapter plays
Graph, its upload sessions and its download URLs, so the real adapter code runs unchanged."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import requests
from requests.adapters import BaseAdapter
from urllib3.response import HTTPResponse

from shared.adapters.graph import RetryPolicy
from shared.adapters.graph_drive import RequestsDriveApi, item_path
from shared.errors import ConflictError, GraphError, NotFoundError, ThrottledError
from shared.ports import GraphAuth

AUTH = GraphAuth(account_id="oid.tid", access_token="token-value")
Answer = tuple[int, dict[str, str], bytes]


class DriveTransport(BaseAdapter):
    def __init__(self, handler: Callable[[requests.PreparedRequest], Answer]) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        status, headers, body = self.handler(request)
        response = requests.Response()
        response.status_code = status
        response.headers.update({"Content-Type": "application/json", **headers})
        response.raw = HTTPResponse(body=io.BytesIO(body), preload_content=False, status=status)
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def client(handler: Callable[[requests.PreparedRequest], Answer]) -> tuple[RequestsDriveApi, DriveTransport, list[float]]:
    transport = DriveTransport(handler)
    session = requests.Session()
    session.mount("https://", transport)
    sleeps: list[float] = []
    api = RequestsDriveApi("https://graph.test/v1.0", session=session, sleep=sleeps.append,
                           retry=RetryPolicy(max_attempts=3))
    return api, transport, sleeps


def test_paths_are_encoded_segment_by_segment() -> None:
    assert item_path("Rapports/été #1 & 100%.docx") == "/me/drive/root:/Rapports/%C3%A9t%C3%A9%20%231%20%26%20100%25.docx:"


def test_a_download_follows_graphs_redirect_without_the_bearer_token_and_streams() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB

    def graph(request: requests.PreparedRequest) -> Answer:
        if request.url.startswith("https://graph.test/"):
            return 302, {"Location": "https://files.test/download/signed"}, b""
        return 200, {"Content-Length": str(len(data)), "Content-Type": "application/pdf"}, data

    api, transport, _ = client(graph)
    content = api.open_content(AUTH, "item-1")
    chunks = list(content.chunks)

    assert b"".join(chunks) == data and len(chunks) > 1 and content.content_type == "application/pdf"
    assert transport.requests[0].headers["Authorization"] == "Bearer token-value"
    assert "Authorization" not in transport.requests[1].headers


def test_a_throttled_drive_call_is_absorbed_within_the_retries_and_reported_past_them() -> None:
    answers = iter([(429, {"Retry-After": "2"}, b"{}"), (200, {}, b'{"id": "x", "name": "a"}')])
    api, _, sleeps = client(lambda r: next(answers))
    assert api.get_item(AUTH, "x")["id"] == "x" and sleeps == [2.0]

    api, transport, _ = client(lambda r: (429, {"Retry-After": "9"}, b"{}"))
    with pytest.raises(ThrottledError) as raised:
        api.get_item(AUTH, "x")
    assert raised.value.retry_after == 9.0 and len(transport.requests) == 3


def test_an_upload_fragment_is_sent_once_without_the_token_and_a_failure_is_reported() -> None:
    api, transport, sleeps = client(lambda r: (503, {"Retry-After": "1"}, b"{}"))
    with pytest.raises(ThrottledError):
        api.upload_fragment("https://files.test/upload/s1", b"x" * 10, 0, 20)
    assert len(transport.requests) == 1 and sleeps == []
    assert "Authorization" not in transport.requests[0].headers
    assert transport.requests[0].headers["Content-Range"] == "bytes 0-9/20"

    api, _, _ = client(lambda r: (500, {}, b'{"error": {"code": "generalException"}}'))
    with pytest.raises(GraphError) as failed:
        api.upload_fragment("https://files.test/upload/s1", b"x", 0, 20)
    assert failed.value.transient


def test_fragments_report_progress_then_the_item() -> None:
    answers = iter([(202, {}, b'{"nextExpectedRanges": ["327680-"]}'), (201, {}, b'{"id": "new", "name": "b"}')])
    api, _, _ = client(lambda r: next(answers))
    first = api.upload_fragment("https://files.test/upload/s1", b"x" * 327680, 0, 327690)
    last = api.upload_fragment("https://files.test/upload/s1", b"x" * 10, 327680, 327690)
    assert first.next_expected_ranges == ("327680-",) and first.item is None
    assert last.item == {"id": "new", "name": "b"} and last.created


def test_a_taken_name_is_a_conflict_and_an_unknown_item_not_found() -> None:
    api, _, _ = client(lambda r: (409, {}, b'{"error": {"code": "nameAlreadyExists", "message": "taken"}}'))
    with pytest.raises(ConflictError):
        api.upload_small(AUTH, "a.txt", b"x", "fail")
    api, _, _ = client(lambda r: (404, {}, b'{"error": {"code": "itemNotFound"}}'))
    with pytest.raises(NotFoundError):
        api.get_item(AUTH, "gone")
