"""The files API through its registered functions as the worker calls them under HTTP streams
(FastAPI's ``Request`` in, a Starlette response out, a download streamed), over fakes of every
port; and its routes as the Functions host and the devhost read them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.responses import Response, StreamingResponse

from devstack.devhost.routing import RouteTemplate
from shared import bootstrap
from shared.bootstrap import Services
from shared.models import AccountStatus
from tests.fakes import make_services
from tests.support.app import app_functions, call_endpoint, streams_request
from tests.unit.drive_fakes import FakeDriveApi, drive_account

BASE = "https://connector.example.test/api"
ACCOUNT = "acct-1"


@pytest.fixture
def services() -> Iterator[Services]:
    installed = make_services(real_tokens=False, drive=FakeDriveApi())
    drive_account(installed, ACCOUNT)
    bootstrap.use(installed)
    yield installed
    bootstrap.use(None)


def content_of(response: Response) -> bytes:
    """The body as the caller receives it: a streamed one read chunk by chunk."""
    if not isinstance(response, StreamingResponse):
        return bytes(response.body)

    async def read() -> bytes:
        return b"".join([chunk if isinstance(chunk, bytes) else str(chunk).encode()
                         async for chunk in response.body_iterator])

    return asyncio.run(read())


def body(response: Response) -> Any:
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(content_of(response))


def error_code(response: Response) -> str:
    payload = body(response)
    assert set(payload["error"]) == {"code", "message"} and payload["error"]["message"]
    return str(payload["error"]["code"])


def by_path(method: str, path: str, *, data: bytes = b"", params: dict[str, str] | None = None,
            account: str = ACCOUNT) -> Response:
    request = streams_request(method, f"{BASE}/accounts/{account}/drive/root:/{path}{_query(params)}", body=data,
                              route_params={"account_id": account, "path": path})
    return call_endpoint("files_by_path", request, context=None)


def on_item(name: str, method: str, item_id: str, *, data: bytes = b"", account: str = ACCOUNT,
            params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Response:
    request = streams_request(method, f"{BASE}/accounts/{account}/drive/items/{item_id}{_query(params)}", body=data,
                              headers=headers, route_params={"account_id": account, "item_id": item_id})
    return call_endpoint(name, request, context=None)


def on_upload(method: str, upload_id: str, *, data: bytes = b"", content_range: str | None = None,
              account: str = ACCOUNT) -> Response:
    headers = {"Content-Range": content_range} if content_range else None
    request = streams_request(method, f"{BASE}/accounts/{account}/drive/uploads/{upload_id}", body=data,
                              headers=headers, route_params={"account_id": account, "upload_id": upload_id})
    return call_endpoint("files_upload", request, context=None)


def _query(params: dict[str, str] | None) -> str:
    return "?" + urlencode(params) if params else ""


def test_routes_are_registered_with_a_function_key_as_the_host_reads_them() -> None:
    triggers = {}
    for name, function in app_functions().items():
        for binding in json.loads(function.get_function_json())["bindings"]:
            if binding.get("type") == "httpTrigger" and name.startswith("files_"):
                triggers[name] = (binding["route"], sorted(binding["methods"]), str(binding["authLevel"]).upper())
    assert triggers == {
        "files_item": ("accounts/{account_id}/drive/items/{item_id}", ["DELETE", "GET"], "FUNCTION"),
        "files_children": ("accounts/{account_id}/drive/items/{item_id}/children", ["GET"], "FUNCTION"),
        "files_content": ("accounts/{account_id}/drive/items/{item_id}/content", ["GET"], "FUNCTION"),
        "files_create_link": ("accounts/{account_id}/drive/items/{item_id}/createLink", ["POST"], "FUNCTION"),
        "files_by_path": ("accounts/{account_id}/drive/root:/{*path}", ["GET", "POST", "PUT"], "FUNCTION"),
        "files_upload": ("accounts/{account_id}/drive/uploads/{upload_id}", ["DELETE", "GET", "PUT"], "FUNCTION"),
    }


def test_the_by_path_template_takes_graphs_colon_syntax_in_the_devhost() -> None:
    route = RouteTemplate.parse("accounts/{account_id}/drive/root:/{*path}")
    assert route.match("/accounts/a.b/drive/root:/Docs/Q3%20report.docx:") == {
        "account_id": "a.b", "path": "Docs/Q3 report.docx:"}
    assert route.match("/accounts/a.b/drive/root:/Docs/x.docx:/content") == {
        "account_id": "a.b", "path": "Docs/x.docx:/content"}
    assert route.match("/accounts/a.b/drive/rootx/Docs") is None
    assert route.match("/accounts/a.b/drive/items/1") is None


def test_upload_answers_201_then_200_with_the_item(services: Services) -> None:
    created = by_path("PUT", "Docs/a.docx:/content", data=b"hello")
    replaced = by_path("PUT", "Docs/a.docx:/content", data=b"again")

    assert (created.status_code, replaced.status_code) == (201, 200)
    assert body(created)["id"] == body(replaced)["id"] and body(replaced)["size"] == 5
    assert created.headers["X-Content-Type-Options"] == "nosniff"


def test_a_resumable_upload_opens_takes_fragments_and_answers_with_the_item(services: Services) -> None:
    multiple = 327_680
    data = bytes(i % 249 for i in range(multiple + 100))
    opened = by_path("POST", "Big/video.mp4:/createUploadSession")
    assert opened.status_code == 200
    session = body(opened)
    upload_id = session["uploadId"]
    assert session["fragmentMultiple"] == multiple and "upload.example.test" not in json.dumps(session)

    part = on_upload("PUT", upload_id, data=data[:multiple], content_range=f"bytes 0-{multiple - 1}/{len(data)}")
    assert (part.status_code, body(part)) == (202, {"nextExpectedRanges": [f"{multiple}-"]})
    assert body(on_upload("GET", upload_id)) == {"nextExpectedRanges": [f"{multiple}-"]}
    gap = on_upload("PUT", upload_id, data=data[-10:], content_range=f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}")
    assert (gap.status_code, error_code(gap)) == (416, "invalid_range")
    done = on_upload("PUT", upload_id, data=data[multiple:],
                     content_range=f"bytes {multiple}-{len(data) - 1}/{len(data)}")
    assert done.status_code == 201 and body(done)["path"] == "/Big/video.mp4" and body(done)["size"] == len(data)
    assert services.drive.find("Big/video.mp4").content == data  # type: ignore[attr-defined]

    cancelled = body(by_path("POST", "Big/other.mp4:/createUploadSession"))["uploadId"]
    assert on_upload("DELETE", cancelled).status_code == 204
    gone = on_upload("GET", cancelled)
    assert (gone.status_code, error_code(gone)) == (404, "not_found")
    assert "upload session" in body(gone)["error"]["message"]


@pytest.mark.parametrize(("call", "status", "code"), [
    (lambda: by_path("POST", "a.bin"), 400, "invalid_path"),
    (lambda: by_path("POST", "a:b.bin:/createUploadSession"), 400, "invalid_path"),
    (lambda: by_path("POST", "a.bin:/createUploadSession", params={"conflict": "overwrite"}), 400, "invalid_request"),
    (lambda: on_upload("GET", "forged"), 404, "not_found"),
    (lambda: on_upload("PUT", "forged", data=b"x", content_range="bytes 0-0/1"), 404, "not_found"),
    (lambda: on_upload("PUT", "forged", data=b"x"), 400, "invalid_request"),
    (lambda: on_upload("PUT", "forged", data=b"xy", content_range="bytes 0-0/2"), 400, "invalid_request"),
    (lambda: on_upload("GET", "forged", account="nobody"), 404, "not_found"),
])
def test_bad_upload_input_gets_a_json_error(services: Services, call: Any, status: int, code: str) -> None:
    response = call()
    assert (response.status_code, error_code(response)) == (status, code)


def test_get_by_path_by_id_content_children_link_and_delete(services: Services) -> None:
    item = body(by_path("PUT", "Docs/a.docx:/content", data=b"hello"))

    shown = by_path("GET", "Docs/a.docx:")
    by_id = on_item("files_item", "GET", item["id"])
    content = on_item("files_content", "GET", item["id"])
    part = on_item("files_content", "GET", item["id"], headers={"Range": "bytes=1-3"})
    children = on_item("files_children", "GET", "root")
    link = on_item("files_create_link", "POST", item["id"], data=b'{"type": "edit", "scope": "anonymous"}')
    deleted = on_item("files_item", "DELETE", item["id"])
    gone = on_item("files_item", "GET", item["id"])

    assert body(shown)["id"] == body(by_id)["id"] == item["id"] and body(by_id)["webUrl"]
    assert isinstance(content, StreamingResponse) and (content.status_code, content_of(content)) == (200, b"hello")
    assert content.headers["Content-Type"] == "application/octet-stream" and content.headers["Content-Length"] == "5"
    assert (part.status_code, content_of(part), part.headers["Content-Range"]) == (206, b"ell", "bytes 1-3/5")
    assert [i["name"] for i in body(children)["items"]] == ["Docs"] and body(children)["continuation"] is None
    assert body(link)["webUrl"] and body(link)["type"] == "edit"
    assert deleted.status_code == 204 and content_of(deleted) == b""
    assert (gone.status_code, error_code(gone)) == (404, "not_found")


def test_children_pages_with_a_continuation(services: Services) -> None:
    for n in range(3):
        by_path("PUT", f"F/{n}.txt:/content", data=b"x")
    folder = body(by_path("GET", "F:"))["id"]

    first = body(on_item("files_children", "GET", folder, params={"size": "2"}))
    second = body(on_item("files_children", "GET", folder, params={"size": "2", "continuation": first["continuation"]}))

    assert [i["name"] for i in first["items"] + second["items"]] == ["0.txt", "1.txt", "2.txt"]
    assert second["continuation"] is None


@pytest.mark.parametrize(("call", "status", "code"), [
    (lambda: by_path("PUT", "a.docx:/content", params={"conflict": "overwrite"}), 400, "invalid_request"),
    (lambda: by_path("PUT", "a:b.docx:/content"), 400, "invalid_path"),
    (lambda: by_path("PUT", "a.docx"), 400, "invalid_path"),
    (lambda: by_path("PUT", ":/content"), 400, "invalid_path"),
    (lambda: by_path("GET", "a.docx"), 400, "invalid_path"),
    (lambda: by_path("GET", "../x:"), 400, "invalid_path"),
    (lambda: by_path("GET", "missing.docx:"), 404, "not_found"),
    (lambda: by_path("GET", "a.docx:", account="nobody"), 404, "not_found"),
    (lambda: on_item("files_create_link", "POST", "root", data=b"{nope"), 400, "invalid_json"),
    (lambda: on_item("files_create_link", "POST", "root", data=b'{"type": "view", "scope": "users"}'),
     400, "invalid_request"),
    (lambda: on_item("files_children", "GET", "root", params={"size": "0"}), 400, "invalid_request"),
    (lambda: on_item("files_children", "GET", "root", params={"continuation": "forged"}), 400, "invalid_request"),
    (lambda: on_item("files_content", "GET", "root", headers={"Range": "bytes=9-1"}), 400, "invalid_request"),
    (lambda: on_item("files_item", "DELETE", "no-such-item"), 404, "not_found"),
])
def test_bad_input_and_unknown_things_get_a_json_error(services: Services, call: Any, status: int, code: str) -> None:
    response = call()
    assert (response.status_code, error_code(response)) == (status, code)


def test_conflict_fail_is_409(services: Services) -> None:
    by_path("PUT", "a.docx:/content", data=b"1")
    response = by_path("PUT", "a.docx:/content", data=b"2", params={"conflict": "fail"})
    assert (response.status_code, error_code(response)) == (409, "name_conflict")


def test_without_a_files_scope_it_is_403_missing_scope(services: Services) -> None:
    drive_account(services, "mail-only", ("User.Read", "Mail.Read"))
    drive_account(services, "reader", ("User.Read", "Files.Read"))

    for response in (by_path("GET", "a.docx:", account="mail-only"),
                     by_path("PUT", "a.docx:/content", data=b"x", account="reader"),
                     on_item("files_create_link", "POST", "root", account="reader",
                             data=b'{"type": "view", "scope": "anonymous"}')):
        assert (response.status_code, error_code(response)) == (403, "missing_scope")
    assert on_item("files_children", "GET", "root", account="reader").status_code == 200


def test_an_account_that_must_sign_in_again_is_409_reauth_required(services: Services) -> None:
    drive_account(services, "stale", status=AccountStatus.REAUTH_REQUIRED)
    response = on_item("files_item", "GET", "root", account="stale")
    assert (response.status_code, error_code(response)) == (409, "reauth_required")


def test_throttling_is_429_with_retry_after(services: Services) -> None:
    services.drive.throttle_next = 1
    response = on_item("files_item", "GET", "root")
    assert (response.status_code, error_code(response)) == (429, "throttled")
    assert response.headers["Retry-After"] == "8"


def test_a_download_of_any_size_is_streamed_from_the_download_url(services: Services) -> None:
    data = bytes(i % 253 for i in range(1_000_000))
    item = body(by_path("PUT", "big.bin:/content", data=data))
    response = on_item("files_content", "GET", item["id"])

    assert isinstance(response, StreamingResponse) and response.status_code == 200
    assert response.headers["Content-Length"] == str(len(data))
    assert content_of(response) == data
