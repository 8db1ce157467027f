"""The drive delta and the batched item reads of the Graph client at the wire: a ``requests``
transport plays Graph, so the real adapter code runs unchanged."""

from __future__ import annotations

import json
from urllib.parse import unquote, urlsplit

import pytest
import requests

from shared.errors import DeltaTokenExpiredError, ThrottledError
from tests.unit.test_graph_drive_adapter import AUTH, Answer, client


def _json(status: int, body: object, **headers: str) -> Answer:
    return status, headers, json.dumps(body).encode()


def test_a_round_starts_at_the_root_delta_and_follows_graphs_links_as_given() -> None:
    next_link = "https://graph.test/v1.0/me/drive/root/delta?token=page2"

    def graph(request: requests.PreparedRequest) -> Answer:
        if "token=page2" in (request.url or ""):
            return _json(200, {"value": [{"id": "b"}], "@odata.deltaLink": "https://graph.test/v1.0/me/drive/root/delta?token=d"})
        return _json(200, {"value": [{"id": "root", "root": {}}, {"id": "a"}, "not an item"], "@odata.nextLink": next_link})

    api, transport, _ = client(graph)
    first = api.drive_delta_page(AUTH, None)
    second = api.drive_delta_page(AUTH, first.next_link)
    assert [i["id"] for i in first.items] == ["root", "a"] and first.next_link == next_link
    assert second.delta_link and second.next_link is None
    url = urlsplit(transport.requests[0].url or "")
    assert url.path == "/v1.0/me/drive/root/delta"
    assert "deleted" in unquote(url.query) and "eTag" in unquote(url.query)  # $select on the first call only
    assert transport.requests[1].url == next_link
    assert all(r.headers["Authorization"] == "Bearer token-value" for r in transport.requests)


def test_a_link_graph_no_longer_serves_is_a_delta_token_expiry() -> None:
    api, _, _ = client(lambda request: _json(410, {"error": {"code": "resyncRequired", "message": "Resync required."}},
                                             Location="https://graph.test/v1.0/me/drive/root/delta"))
    with pytest.raises(DeltaTokenExpiredError):
        api.drive_delta_page(AUTH, "https://graph.test/v1.0/me/drive/root/delta?token=old")


def test_items_are_read_twenty_to_a_batch_and_a_deleted_one_is_none() -> None:
    batches: list[list[dict]] = []

    def graph(request: requests.PreparedRequest) -> Answer:
        wanted = json.loads(request.body or b"{}")["requests"]
        batches.append(wanted)
        responses = []
        for item in wanted:
            item_id = urlsplit(item["url"]).path.rsplit("/", 1)[1]
            if item_id == "gone":
                responses.append({"id": item["id"], "status": 404, "body": {"error": {"code": "itemNotFound"}}})
            else:
                body = {"id": item_id, "cTag": f"c-{item_id}", "parentReference": {"path": "/drive/root:/Docs"}}
                responses.append({"id": item["id"], "status": 200, "body": body})
        return _json(200, {"responses": list(reversed(responses))})  # Graph answers in any order

    api, transport, _ = client(graph)
    ids = [f"item{n}" for n in range(44)] + ["gone"]
    read = api.get_items(AUTH, ids)
    assert [len(b) for b in batches] == [20, 20, 5]
    assert all(r["method"] == "GET" and r["url"].startswith("/me/drive/items/") and "$select=" in r["url"]
               for b in batches for r in b)
    assert read["gone"] is None and read["item7"]["cTag"] == "c-item7" and len(read) == 45
    assert all(urlsplit(r.url or "").path == "/v1.0/$batch" for r in transport.requests)


def test_a_read_still_throttled_after_the_retries_is_a_throttled_error_with_its_wait() -> None:
    def graph(request: requests.PreparedRequest) -> Answer:
        wanted = json.loads(request.body or b"{}")["requests"]
        return _json(200, {"responses": [{"id": r["id"], "status": 429, "headers": {"Retry-After": "7"}} for r in wanted]})

    api, transport, sleeps = client(graph)
    with pytest.raises(ThrottledError) as raised:
        api.get_items(AUTH, ["a", "b"])
    assert raised.value.retry_after == 7.0
    assert len(transport.requests) == 3 and sleeps  # the client's attempts, waiting Retry-After between
