"""The Graph client at the wire: retry policy, error mapping, per-mailbox concurrency.

A ``requests`` transport adapter plays Graph, so the real client code runs unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable

import pytest
import requests
from requests.adapters import BaseAdapter

from shared.adapters.graph import RequestsGraphApi, RetryPolicy
from shared.errors import (
    DeltaTokenExpiredError,
    GraphError,
    GraphUnauthorizedError,
    NotFoundError,
    ThrottledError,
    UpstreamError,
)
from shared.ports import GraphAuth

AUTH = GraphAuth(account_id="oid.tid", access_token="token-value")
Handler = Callable[[requests.PreparedRequest], tuple[int, dict[str, str], object]]


class GraphTransport(BaseAdapter):
    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        status, headers, body = self.handler(request)
        response = requests.Response()
        response.status_code = status
        response.headers.update({"Content-Type": "application/json", **headers})
        response._content = json.dumps(body).encode() if body is not None else b""
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def _client(handler: Handler, **kwargs: object) -> tuple[RequestsGraphApi, GraphTransport, list[float]]:
    transport = GraphTransport(handler)
    session = requests.Session()
    session.mount("https://", transport)
    sleeps: list[float] = []
    api = RequestsGraphApi("https://graph.test/v1.0", session=session, sleep=sleeps.append, **kwargs)  # type: ignore[arg-type]
    return api, transport, sleeps


def _odata(code: str, message: str = "") -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


def test_a_throttled_call_waits_retry_after_then_succeeds() -> None:
    answers = iter([(429, {"Retry-After": "3"}, _odata("ApplicationThrottled")), (200, {}, {"id": "me"})])
    api, transport, sleeps = _client(lambda r: next(answers))
    assert api.get_me(AUTH) == {"id": "me"}
    assert sleeps == [3.0] and len(transport.requests) == 2


def test_persistent_throttling_ends_in_throttled_error_with_retry_after() -> None:
    api, transport, sleeps = _client(
        lambda r: (503, {"Retry-After": "7"}, _odata("serviceUnavailable")), retry=RetryPolicy(max_attempts=3)
    )
    with pytest.raises(ThrottledError) as caught:
        api.get_me(AUTH)
    assert caught.value.retry_after == 7.0
    assert len(transport.requests) == 3 and sleeps == [7.0, 7.0]


def test_an_absurd_retry_after_is_capped() -> None:
    answers = iter([(429, {"Retry-After": "86400"}, None), (200, {}, {"id": "me"})])
    api, _, sleeps = _client(lambda r: next(answers), retry=RetryPolicy(max_wait_seconds=20))
    api.get_me(AUTH)
    assert sleeps == [20]


def test_a_refused_token_is_a_graph_unauthorized_error_the_caller_may_send_again() -> None:
    api, transport, _ = _client(lambda r: (401, {}, _odata("InvalidAuthenticationToken", "expired")))
    with pytest.raises(GraphUnauthorizedError) as caught:
        api.delta_page(AUTH, None)
    # Still a GraphError with its status: existing handlers of GraphError see it as before.
    assert isinstance(caught.value, GraphError) and caught.value.status == 401
    assert len(transport.requests) == 1  # not retried here: a new token is the caller's


def test_graph_errors_are_mapped_to_the_hierarchy() -> None:
    api, _, _ = _client(lambda r: (404, {}, _odata("ResourceNotFound", "gone")))
    with pytest.raises(NotFoundError):
        api.renew_subscription(AUTH, "sub-1", dt.datetime(2026, 11, 21, tzinfo=dt.UTC))
    api, _, _ = _client(lambda r: (400, {}, _odata("ValidationError", "Subscription validation request failed")))
    with pytest.raises(GraphError) as caught:
        api.create_subscription(
            AUTH, resource="/me/messages", change_type="created", notification_url="https://a/n",
            lifecycle_notification_url="https://a/l", expires_at=dt.datetime(2026, 11, 21, tzinfo=dt.UTC),
            client_state="cs",
        )
    assert caught.value.status == 400 and caught.value.code == "ValidationError" and not caught.value.transient


def test_a_dead_delta_token_is_delta_token_expired() -> None:
    api, _, _ = _client(lambda r: (410, {}, _odata("SyncStateNotFound")))
    with pytest.raises(DeltaTokenExpiredError):
        api.delta_page(AUTH, "https://graph.test/v1.0/me/mailFolders('inbox')/messages/delta?$deltatoken=x")
    api, _, _ = _client(lambda r: (400, {}, _odata("syncStateNotFound")))
    with pytest.raises(DeltaTokenExpiredError):
        api.delta_page(AUTH, None)


def test_delta_pages_carry_items_and_links_and_the_page_size_preference() -> None:
    body = {"value": [{"id": "m1"}, {"id": "m2", "@removed": {"reason": "deleted"}}],
            "@odata.nextLink": "https://graph.test/v1.0/next"}
    api, transport, _ = _client(lambda r: (200, {}, body))
    page = api.delta_page(AUTH, None)
    assert [i["id"] for i in page.items] == ["m1", "m2"] and page.next_link and page.delta_link is None
    first = transport.requests[0]
    assert "/me/mailFolders('inbox')/messages/delta?$select=" in (first.url or "")
    assert first.headers["Prefer"].startswith("odata.maxpagesize=")
    assert first.headers["Authorization"] == "Bearer token-value"
    api.delta_page(AUTH, "https://graph.test/v1.0/next")
    assert transport.requests[1].url == "https://graph.test/v1.0/next"  # links are followed as given


def test_deleting_a_gone_subscription_is_not_an_error() -> None:
    api, _, _ = _client(lambda r: (404, {}, _odata("ResourceNotFound")))
    api.delete_subscription(AUTH, "sub-1")


def test_network_failures_are_retried_then_reported_as_upstream_errors() -> None:
    def fail(request: requests.PreparedRequest) -> tuple[int, dict[str, str], object]:
        raise requests.ConnectionError("refused")

    api, transport, sleeps = _client(fail, retry=RetryPolicy(max_attempts=2))
    with pytest.raises(UpstreamError):
        api.get_me(AUTH)
    assert len(transport.requests) == 2 and len(sleeps) == 1


def test_no_more_than_four_requests_run_at_once_for_one_mailbox() -> None:
    lock = threading.Lock()
    running = peak = 0

    def slow(request: requests.PreparedRequest) -> tuple[int, dict[str, str], object]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return 200, {}, {"id": "me"}

    api, _, _ = _client(slow)
    threads = [threading.Thread(target=api.get_me, args=(AUTH,)) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 4


class _Clock:
    """A monotonic clock that the client's sleeps and the transport's slowness move on."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_call_with_its_retries_and_429_waits_ends_within_the_call_bound() -> None:
    from shared.adapters.graph import MAX_CALL_SECONDS

    clock = _Clock()

    class SlowTransport(GraphTransport):
        def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
            timeout = kwargs.get("timeout")
            clock.now += min(14.0, float(timeout) if isinstance(timeout, int | float) else 14.0)
            return super().send(request, **kwargs)

    transport = SlowTransport(lambda r: (429, {"Retry-After": "20"}, _odata("ApplicationThrottled")))
    session = requests.Session()
    session.mount("https://", transport)

    def sleep(seconds: float) -> None:
        clock.now += seconds

    api = RequestsGraphApi("https://graph.test/v1.0", session=session, sleep=sleep, monotonic=clock)
    with pytest.raises(ThrottledError):
        api.delta_page(AUTH, None)
    assert clock.now <= MAX_CALL_SECONDS
    assert api.throttle_count() == len(transport.requests) >= 1


def test_the_call_bound_keeps_a_sync_lease_alive() -> None:
    from shared.adapters.graph import MAX_CALL_SECONDS
    from shared.sync import LEASE_RENEW_AFTER, LEASE_STALE_AFTER

    # A round proves its lease at most LEASE_RENEW_AFTER before a call starts.
    assert MAX_CALL_SECONDS + LEASE_RENEW_AFTER.total_seconds() < LEASE_STALE_AFTER.total_seconds()


def test_absorbed_429s_are_counted_per_thread() -> None:
    answers = iter([(429, {"Retry-After": "1"}, None), (429, {"Retry-After": "1"}, None), (200, {}, {"id": "me"})])
    api, _, _ = _client(lambda r: next(answers))
    api.get_me(AUTH)
    assert api.throttle_count() == 2
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(api.throttle_count()))
    thread.start()
    thread.join()
    assert seen == [0]


def test_every_delta_page_asks_for_immutable_ids_and_the_event_fields() -> None:
    body = {"value": [], "@odata.deltaLink": "https://graph.test/v1.0/delta"}
    api, transport, _ = _client(lambda r: (200, {}, body))
    api.delta_page(AUTH, None, folder="archive")
    api.delta_page(AUTH, "https://graph.test/v1.0/delta")
    first, later = transport.requests
    assert "/me/mailFolders('archive')/messages/delta" in (first.url or "")
    selected = (first.url or "").split("$select=")[1].split("&")[0].split(",")
    for field in ("bodyPreview", "toRecipients", "ccRecipients", "hasAttachments", "importance",
                  "categories", "flag", "conversationId", "parentFolderId"):
        assert field in selected
    assert "body" not in selected  # EVENT_BODY=none: the body stays in the mailbox
    for request in (first, later):  # Prefer is not carried by the links
        assert 'IdType="ImmutableId"' in request.headers["Prefer"]
        assert "odata.maxpagesize=" in request.headers["Prefer"]


def test_with_event_body_text_the_delta_asks_for_the_body_as_text() -> None:
    body = {"value": [], "@odata.deltaLink": "https://graph.test/v1.0/delta"}
    api, transport, _ = _client(lambda r: (200, {}, body), delta_body="text")
    api.delta_page(AUTH, None)
    [request] = transport.requests
    assert "body" in (request.url or "").split("$select=")[1].split(",")
    assert 'outlook.body-content-type="text"' in request.headers["Prefer"]


def test_subscriptions_are_created_with_immutable_ids() -> None:
    answer = {"id": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07", "expirationDateTime": "2026-11-26T11:00:00Z"}
    api, transport, _ = _client(lambda r: (201, {}, answer))
    api.create_subscription(
        AUTH, resource="/me/messages", change_type="created,updated,deleted",
        notification_url="https://app.test/api/notifications",
        lifecycle_notification_url="https://app.test/api/notifications",
        expires_at=dt.datetime(2026, 11, 26, tzinfo=dt.UTC), client_state="v2.x",
    )
    [request] = transport.requests
    assert request.headers["Prefer"] == 'IdType="ImmutableId"'
    assert json.loads(request.body or b"{}")["resource"] == "/me/messages"
