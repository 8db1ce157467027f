"""The Graph client's mail calls at the wire: immutable ids, preferences, $batch, limits."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any
from urllib.parse import unquote

import pytest
import requests

from shared.adapters.graph import RequestsGraphApi, RetryPolicy
from shared.errors import InvalidInputError, NotFoundError, PayloadTooLargeError
from shared.ports import BatchRequest
from tests.unit.test_graph_adapter import AUTH, GraphTransport, _client, _odata

IMMUTABLE = 'IdType="ImmutableId"'


def test_every_call_of_the_mail_actions_asks_for_immutable_ids() -> None:
    api, transport, _ = _client(lambda r: (200, {}, {"id": "m", "value": []}))
    api.get_message(AUTH, "m1")
    api.move_message(AUTH, "m1", "archive")
    api.update_message(AUTH, "m1", {"isRead": True})
    api.list_folders(AUTH)
    api.list_messages(AUTH)
    api.list_attachments(AUTH, "m1")
    api.delete_message(AUTH, "m1")
    for request in transport.requests:
        assert IMMUTABLE in request.headers["Prefer"], request.url
    api.renew_subscription(AUTH, "s1", dt.datetime(2026, 11, 21, tzinfo=dt.UTC))
    assert "Prefer" not in transport.requests[-1].headers


def test_the_body_type_is_a_preference_next_to_immutable_ids() -> None:
    api, transport, _ = _client(lambda r: (200, {}, {"id": "m"}))
    api.get_message(AUTH, "m1", body_type="text")
    prefer = transport.requests[0].headers["Prefer"]
    assert 'outlook.body-content-type="text"' in prefer and IMMUTABLE in prefer


def test_move_sends_destination_id_and_ids_are_escaped_in_paths() -> None:
    api, transport, _ = _client(lambda r: (201, {}, {"id": "a/b"}))
    api.move_message(AUTH, "a/b+c=", "archive")
    request = transport.requests[0]
    assert request.method == "POST" and request.path_url.startswith("/v1.0/me/messages/a%2Fb%2Bc%3D/move")
    assert json.loads(request.body or b"{}") == {"destinationId": "archive"}


def test_delete_and_permanent_delete_are_their_own_calls() -> None:
    api, transport, _ = _client(lambda r: (204, {}, None))
    api.delete_message(AUTH, "m1")
    api.delete_message(AUTH, "m1", permanent=True)
    assert [(r.method, r.path_url) for r in transport.requests] == [
        ("DELETE", "/v1.0/me/messages/m1"), ("POST", "/v1.0/me/messages/m1/permanentDelete")]
    api, _, _ = _client(lambda r: (404, {}, _odata("ErrorItemNotFound")))
    with pytest.raises(NotFoundError):
        api.delete_message(AUTH, "gone")


def test_a_list_filters_on_received_time_newest_first() -> None:
    api, transport, _ = _client(lambda r: (200, {}, {"value": [{"id": "m"}],
                                                     "@odata.nextLink": "https://graph.test/v1.0/me/next"}))
    page = api.list_messages(AUTH, folder="inbox", since=dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC), top=5)
    url = unquote(transport.requests[0].url or "")
    assert "/me/mailFolders/inbox/messages?$top=5" in url
    assert "$filter=receivedDateTime ge 2026-11-20T12:00:00Z" in url and "$orderby=receivedDateTime desc" in url
    assert page.next_link == "https://graph.test/v1.0/me/next"


def test_a_continuation_that_leads_elsewhere_is_refused_before_any_request() -> None:
    api, transport, _ = _client(lambda r: (200, {}, {"value": []}))
    for link in ("https://evil.test/v1.0/me/messages", "https://graph.test/v1.0/subscriptions"):
        with pytest.raises(InvalidInputError):
            api.list_messages(AUTH, link=link)
    assert transport.requests == []


def test_an_attachment_too_large_by_its_size_is_not_downloaded() -> None:
    api, transport, _ = _client(lambda r: (200, {}, {"id": "a", "name": "x.bin", "size": 2048}))
    with pytest.raises(PayloadTooLargeError):
        api.get_attachment_content(AUTH, "m", "a", max_bytes=1024)
    assert len(transport.requests) == 1


def test_an_attachment_is_read_from_value_and_cut_at_the_limit() -> None:
    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], object]:
        if (request.url or "").endswith("/$value"):
            return 200, {"Content-Type": "application/octet-stream"}, "x" * 600
        return 200, {}, {"id": "a", "name": "x.txt", "contentType": "text/plain"}  # no size given

    class Consumed(GraphTransport):
        """Answers whose bytes are all there, as a streamed answer read to its end."""

        def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
            response = super().send(request, **kwargs)
            response._content_consumed = True
            return response

    session = requests.Session()
    session.mount("https://", Consumed(answer))
    api = RequestsGraphApi("https://graph.test/v1.0", session=session, sleep=lambda s: None)
    content = api.get_attachment_content(AUTH, "m", "a", max_bytes=1000)
    assert content.name == "x.txt" and content.content_type == "text/plain" and len(content.content) == 602
    with pytest.raises(PayloadTooLargeError):
        api.get_attachment_content(AUTH, "m", "a", max_bytes=100)


def _batch_answer(statuses: dict[str, list[int]]) -> Any:
    """A $batch endpoint answering each inner request with the next status given for its id."""
    seen: list[list[dict[str, Any]]] = []

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], object]:
        inner = json.loads(request.body or b"{}")["requests"]
        seen.append(inner)
        responses = []
        for item in inner:
            status = statuses[item["id"]].pop(0)
            headers = {"Retry-After": "3"} if status == 429 else {}
            body = {"error": {"code": "ApplicationThrottled"}} if status == 429 else {"id": item["id"]}
            responses.append({"id": item["id"], "status": status, "headers": headers, "body": body})
        return 200, {}, {"responses": list(reversed(responses))}  # in any order, as Graph may

    return answer, seen


def test_a_batch_carries_immutable_ids_on_each_request_and_answers_in_order() -> None:
    answer, seen = _batch_answer({"1": [200], "2": [204]})
    api, transport, _ = _client(answer)
    answers = api.batch(AUTH, [BatchRequest("1", "PATCH", "/me/messages/a", {"isRead": True}),
                               BatchRequest("2", "DELETE", "/me/messages/b")])
    assert [(a.id, a.status) for a in answers] == [("1", 200), ("2", 204)]
    assert transport.requests[0].path_url == "/v1.0/$batch"
    first, second = seen[0]
    assert first["headers"] == {"Prefer": IMMUTABLE, "Content-Type": "application/json"}
    assert first["body"] == {"isRead": True} and "body" not in second


def test_throttled_requests_of_a_batch_are_sent_again_after_their_retry_after() -> None:
    answer, seen = _batch_answer({"1": [200], "2": [429, 200]})
    api, _, sleeps = _client(answer)
    answers = api.batch(AUTH, [BatchRequest("1", "DELETE", "/me/messages/a"),
                               BatchRequest("2", "DELETE", "/me/messages/b")])
    assert [a.status for a in answers] == [200, 200]
    assert sleeps == [3.0] and [len(s) for s in seen] == [2, 1]


def test_a_batch_still_throttled_after_the_retries_says_how_long_to_wait() -> None:
    answer, _ = _batch_answer({"1": [429, 429, 429]})
    api, _, _ = _client(answer, retry=RetryPolicy(max_attempts=3))
    [only] = api.batch(AUTH, [BatchRequest("1", "DELETE", "/me/messages/a")])
    assert only.status == 429 and only.retry_after == 3.0


def test_a_batch_over_20_requests_is_refused() -> None:
    api, transport, _ = _client(lambda r: (200, {}, {"responses": []}))
    with pytest.raises(ValueError):
        api.batch(AUTH, [BatchRequest(str(n), "GET", "/me") for n in range(21)])
    assert transport.requests == []


def test_a_batch_holds_all_four_mailbox_slots_so_nothing_else_runs_beside_it() -> None:
    in_flight = {"now": 0, "max": 0}
    lock = threading.Lock()

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], object]:
        with lock:
            weight = len(json.loads(request.body)["requests"]) if (request.url or "").endswith("$batch") else 1
            in_flight["now"] += min(weight, 4)
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
        time.sleep(0.02)
        with lock:
            in_flight["now"] -= min(weight, 4)
        if (request.url or "").endswith("$batch"):
            ids = [i["id"] for i in json.loads(request.body)["requests"]]
            return 200, {}, {"responses": [{"id": i, "status": 204} for i in ids]}
        return 200, {}, {"id": "m"}

    api, _, _ = _client(answer)
    work = [lambda: api.batch(AUTH, [BatchRequest(str(n), "DELETE", f"/me/messages/{n}") for n in range(8)])] * 3
    work += [lambda: api.get_message(AUTH, "m")] * 8
    threads = [threading.Thread(target=w) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert in_flight["max"] <= 4
