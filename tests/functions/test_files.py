"""The files API through its registered handlers (func.HttpRequest in, HttpResponse out), over
fakes of every port; and its routes as the Functions host and the devhost read them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from devstack.devhost.routing import RouteTemplate
from shared import bootstrap
from shared.bootstrap import Services
from shared.models import AccountStatus
from tests.fakes import make_services
from tests.support.app import app_functions, handler, http_request
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


def body(response: func.HttpResponse) -> Any:
    assert response.mimetype == "application/json"
    return json.loads(response.get_body())


def error_code(response: func.HttpResponse) -> str:
    payload = body(response)
    assert set(payload["error"]) == {"code", "message"} and payload["error"]["message"]
    return str(payload["error"]["code"])


def by_path(method: str, path: str, *, data: bytes = b"", params: dict[str, str] | None = None,
            account: str = ACCOUNT) -> func.HttpResponse:
    request = http_request(method, f"{BASE}/accounts/{account}/drive/root:/{path}", body=data, params=params,
                           route_params={"account_id": account, "path": path})
    return handler("files_by_path")(request)


def on_item(name: str, method: str, item_id: str, *, data: bytes = b"", account: str = ACCOUNT,
            params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> func.HttpResponse:
    request = http_request(method, f"{BASE}/accounts/{account}/drive/items/{item_id}", body=data, params=params,
                           headers=headers, route_params={"account_id": account, "item_id": item_id})
    return handler(name)(request)


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
        "files_by_path": ("accounts/{account_id}/drive/root:/{*path}", ["GET", "PUT"], "FUNCTION"),
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
    assert (content.status_code, content.get_body()) == (200, b"hello")
    assert content.headers["Content-Type"] == "application/octet-stream"
    assert (part.status_code, part.get_body(), part.headers["Content-Range"]) == (206, b"ell", "bytes 1-3/5")
    assert [i["name"] for i in body(children)["items"]] == ["Docs"] and body(children)["continuation"] is None
    assert body(link)["webUrl"] and body(link)["type"] == "edit"
    assert deleted.status_code == 204 and deleted.get_body() == b""
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


def test_a_download_over_the_bound_is_413(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    item = body(by_path("PUT", "big.bin:/content", data=b"x" * 2000))
    monkeypatch.setattr("shared.drive_files.MAX_DOWNLOAD_BYTES", 1000)
    response = on_item("files_content", "GET", item["id"])
    assert (response.status_code, error_code(response)) == (413, "too_large")
