"""The files API through the whole local stack: the devhost running the app, the Graph
simulator's OneDrive, Azurite and the Key Vault emulator, over their real protocols.

The document tool's account: a stack whose ``GRAPH_SCOPES`` is ``User.Read
Files.ReadWrite.All``, as that product asks, and a user connected through the real flow.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from tests.conftest import STACK_SETTINGS
from tests.support.stack import connect_user, function_key_headers, new_user

pytestmark = pytest.mark.e2e

MB = 1024 * 1024
FRAGMENT_MULTIPLE = 320 * 1024


@pytest.fixture(scope="module")
def files_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir: Path = tmp_path_factory.mktemp("files-stack")
    # The document tool asks exactly these, and no mail (MAIL_ACTIONS_ENABLED would add Mail.ReadWrite).
    settings = {**STACK_SETTINGS, "GRAPH_SCOPES": "User.Read Files.ReadWrite.All", "MAIL_ACTIONS_ENABLED": "false"}
    with LocalStack.on_free_ports(data_dir, extra_settings=settings) as running:
        yield running


@pytest.fixture(scope="module")
def user(files_stack: LocalStack) -> dict[str, Any]:
    person = new_user(files_stack, "writer")
    page = connect_user(files_stack, person["userPrincipalName"])
    assert page.status_code == 200, page.text[:500]
    return person


def test_the_document_tools_connect_makes_a_drive_subscription_and_no_mail_one(
    files_stack: LocalStack, user: dict[str, Any]
) -> None:
    # `User.Read Files.ReadWrite.All` grants no mail: Graph would refuse a mail subscription,
    # so the connect creates only the drive's, and the account is active, ready for the files API.
    shown = requests.get(
        f"{files_stack.devhost_url}/api/accounts/{account_id(user)}", headers=function_key_headers(files_stack), timeout=30
    )
    assert shown.status_code == 200 and shown.json()["status"] == "active", shown.text
    live = files_stack.sim("GET", "/_sim/subscriptions")["value"]
    mine = [(s["resource"], s["changeType"]) for s in live if s.get("userId") == user["id"]]
    assert mine == [("/me/drive/root", "updated")]


class FilesApi:
    def __init__(self, stack: LocalStack, account_id: str) -> None:
        self.stack = stack
        self.base = f"{stack.devhost_url}/api/accounts/{account_id}/drive"
        self.http = requests.Session()
        self.http.headers.update(function_key_headers(stack))

    def put(self, path: str, data: bytes, **params: str) -> requests.Response:
        return self.http.put(f"{self.base}/root:/{path}:/content", data=data, params=params, timeout=60)

    def by_path(self, path: str) -> requests.Response:
        return self.http.get(f"{self.base}/root:/{path}:", timeout=30)

    def item(self, item_id: str, method: str = "GET") -> requests.Response:
        return self.http.request(method, f"{self.base}/items/{item_id}", timeout=30)

    def content(self, item_id: str, **headers: str) -> requests.Response:
        return self.http.get(f"{self.base}/items/{item_id}/content", headers=headers, timeout=60)

    def children(self, item_id: str, **params: str) -> requests.Response:
        return self.http.get(f"{self.base}/items/{item_id}/children", params=params, timeout=30)

    def open_upload(self, path: str, **params: str) -> requests.Response:
        return self.http.post(f"{self.base}/root:/{path}:/createUploadSession", params=params, timeout=30)

    def upload(self, upload_id: str, method: str = "GET", data: bytes = b"", **headers: str) -> requests.Response:
        return self.http.request(method, f"{self.base}/uploads/{upload_id}", data=data, headers=headers, timeout=60)

    def create_link(self, item_id: str, body: Any = None, *, data: bytes | None = None) -> requests.Response:
        return self.http.post(f"{self.base}/items/{item_id}/createLink", json=body, data=data, timeout=30)


def account_id(person: dict[str, Any]) -> str:
    return f"{person['id']}.{person['tenantId']}"


@pytest.fixture
def api(files_stack: LocalStack, user: dict[str, Any]) -> FilesApi:
    return FilesApi(files_stack, account_id(user))


def requests_of(stack: LocalStack, person: dict[str, Any]) -> list[dict[str, Any]]:
    return list(stack.sim("GET", "/_sim/requests", params={"userId": person["id"]})["value"])


def uploads(entries: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(e["status"], e["contentRange"]) for e in entries if e.get("uploadSession") and e["method"] == "PUT"]


def content_of(size: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 256 for i in range(size))


def error(response: requests.Response) -> str:
    payload = response.json()["error"]
    assert payload["message"]
    return str(payload["code"])


def test_a_small_document_goes_up_in_one_put_and_comes_back(files_stack: LocalStack, user: dict[str, Any],
                                                           api: FilesApi) -> None:
    files_stack.sim("DELETE", "/_sim/requests")

    created = api.put("Documents/Q3 report.docx", b"first draft")
    replaced = api.put("Documents/Q3 report.docx", b"second draft")
    by_path = api.by_path("Documents/Q3 report.docx")
    by_id = api.item(created.json()["id"])
    content = api.content(created.json()["id"])

    assert (created.status_code, replaced.status_code) == (201, 200)
    assert by_path.json()["id"] == by_id.json()["id"] == created.json()["id"]
    assert "Doc.aspx" in by_id.json()["webUrl"] and by_id.json()["path"] == "/Documents/Q3 report.docx"
    assert (content.status_code, content.content) == (200, b"second draft")
    assert uploads(requests_of(files_stack, user)) == []  # simple uploads: no session
    stored = requests.get(f"{files_stack.graphsim_url}/_sim/users/{user['id']}/drive/items/{created.json()['id']}"
                          "/content", verify=str(files_stack.ca_file), timeout=30)
    assert stored.content == b"second draft"


def test_a_6_mb_document_goes_through_an_upload_session(files_stack: LocalStack, user: dict[str, Any],
                                                        api: FilesApi) -> None:
    data = content_of(6 * MB, seed=1)
    files_stack.sim("DELETE", "/_sim/requests")

    created = api.put("Documents/big.pptx", data)
    fragments = uploads(requests_of(files_stack, user))
    downloaded = api.content(created.json()["id"])

    assert created.status_code == 201 and created.json()["size"] == len(data)
    assert len(fragments) >= 2 and [status for status, _ in fragments] == [202] * (len(fragments) - 1) + [201]
    for _, content_range in fragments[:-1]:
        first, last = content_range.removeprefix("bytes ").split("/")[0].split("-")
        assert (int(last) - int(first) + 1) % FRAGMENT_MULTIPLE == 0
    assert downloaded.status_code == 200 and downloaded.content == data


def test_an_upload_resumes_after_a_failed_fragment(files_stack: LocalStack, user: dict[str, Any],
                                                   api: FilesApi) -> None:
    data = content_of(6 * MB, seed=2)
    files_stack.sim("DELETE", "/_sim/requests")
    files_stack.sim("POST", f"/_sim/users/{user['id']}/drive/uploads/failures", json={"count": 1, "status": 503})

    created = api.put("Documents/resumed.bin", data)
    entries = [e for e in requests_of(files_stack, user) if e.get("uploadSession")]

    assert created.status_code == 201
    assert [(e["method"], e["status"]) for e in entries][:3] == [("PUT", 503), ("GET", 200), ("PUT", 202)]
    assert api.content(created.json()["id"]).content == data
    stored = files_stack.sim("GET", f"/_sim/users/{user['id']}/drive/items/{created.json()['id']}")
    assert stored["size"] == len(data)


def test_a_product_uploads_a_file_in_fragments_and_resumes_after_a_failed_one(
    files_stack: LocalStack, user: dict[str, Any], api: FilesApi
) -> None:
    # As a product would send a file larger than one request may carry: its own fragments,
    # through the connector, never holding Graph's upload URL.
    data = content_of(3 * MB + 12345, seed=4)
    fragment = 4 * FRAGMENT_MULTIPLE
    files_stack.sim("DELETE", "/_sim/requests")
    opened = api.open_upload("Video/site visit.mp4")
    assert opened.status_code == 200, opened.text
    session = opened.json()
    upload_id = session["uploadId"]
    assert "_files/upload" not in opened.text and session["nextExpectedRanges"] == ["0-"]
    assert session["expirationDateTime"]  # as the simulator gave it
    files_stack.sim("POST", f"/_sim/users/{user['id']}/drive/uploads/failures", json={"count": 1, "status": 503})

    answers, offset, resumed = [], 0, 0
    while True:
        last = min(offset + fragment, len(data)) - 1
        sent = api.upload(upload_id, "PUT", data[offset:last + 1], **{"Content-Range": f"bytes {offset}-{last}/{len(data)}"})
        answers.append(sent.status_code)
        if sent.status_code in (429, 502):  # Graph did not take it: ask where the session stands
            resumed += 1
            time.sleep(min(float(sent.headers.get("Retry-After", "0")), 1.0))
            status = api.upload(upload_id)
            assert status.status_code == 200
            offset = int(status.json()["nextExpectedRanges"][0].split("-")[0])
            continue
        assert sent.status_code in (200, 201, 202), sent.text
        if sent.status_code != 202:
            break
        offset = int(sent.json()["nextExpectedRanges"][0].split("-")[0])

    item = sent.json()
    assert answers[0] == 429 and resumed == 1 and answers[-1] == 201
    assert item["path"] == "/Video/site visit.mp4" and item["size"] == len(data)
    assert api.content(item["id"]).content == data
    fragments = uploads(requests_of(files_stack, user))
    assert [status for status, _ in fragments] == [503] + [202] * (len(fragments) - 2) + [201]
    # The session is over: its id opens to nothing now.
    over = api.upload(upload_id)
    assert (over.status_code, error(over)) == (404, "not_found")
    assert files_stack.log_dir is not None
    assert "_files/upload" not in (files_stack.log_dir / "devhost.log").read_text(errors="replace")


def test_a_range_of_the_content(api: FilesApi) -> None:
    item = api.put("ranged.bin", content_of(100_000)).json()
    part = api.content(item["id"], Range="bytes=1000-1999")
    assert part.status_code == 206 and part.content == content_of(100_000)[1000:2000]
    assert part.headers["Content-Range"] == "bytes 1000-1999/100000"


def devhost_pid(stack: LocalStack) -> int:
    return next(child.process.pid for child in stack.children if child.name == "devhost")


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (the peak) of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_a_300_mb_file_is_streamed_through_the_devhost_in_bounded_memory(
    files_stack: LocalStack, user: dict[str, Any], api: FilesApi
) -> None:
    size = 300 * 1000 * 1000
    item = files_stack.sim("POST", f"/_sim/users/{user['id']}/drive/items",
                           json={"path": "Video/keynote.mp4", "generate": {"size": size, "seed": 300}})
    floor = hashlib.sha256()
    with requests.get(f"{files_stack.graphsim_url}/_sim/users/{user['id']}/drive/items/{item['id']}/content",
                      verify=str(files_stack.ca_file), stream=True, timeout=120) as direct:
        for piece in direct.iter_content(MB):
            floor.update(piece)
    pid = devhost_pid(files_stack)
    clear_refs = Path(f"/proc/{pid}/clear_refs")
    clear_refs.write_text("5")  # resets VmHWM to the current RSS (Linux proc(5))
    before = memory_kib(pid, "VmRSS")

    received, tail = hashlib.sha256(), b""
    with api.http.get(f"{api.base}/items/{item['id']}/content", stream=True, timeout=120) as response:
        assert response.status_code == 200, response.text[:300]
        for piece in response.iter_content(MB):
            received.update(piece)
            tail = (tail + piece)[-10:]
        length = response.headers.get("Content-Length")
    peak = memory_kib(pid, "VmHWM")
    part = api.content(item["id"], Range=f"bytes={size - 10}-")

    assert length == str(size) and received.hexdigest() == floor.hexdigest()
    # The whole file is 293,000 KiB: a devhost that held it would grow by that much at least.
    assert (peak - before) < 64 * 1024, f"the devhost grew by {peak - before} KiB while streaming"
    assert (part.status_code, part.content, part.headers["Content-Range"]) == (
        206, tail, f"bytes {size - 10}-{size - 1}/{size}")
    files_stack.sim("DELETE", f"/_sim/users/{user['id']}/drive/items/{item['id']}")


def test_children_come_in_pages(files_stack: LocalStack, user: dict[str, Any], api: FilesApi) -> None:
    for n in range(5):
        body = {"path": f"Paged/{n}.txt", "contentBase64": base64.b64encode(b"x").decode()}
        files_stack.sim("POST", f"/_sim/users/{user['id']}/drive/items", json=body)
    folder = api.by_path("Paged").json()

    names, continuation, pages = [], None, 0
    while True:
        params = {"size": "2", **({"continuation": continuation} if continuation else {})}
        page = api.children(folder["id"], **params)
        assert page.status_code == 200, page.text
        names += [i["name"] for i in page.json()["items"]]
        continuation, pages = page.json()["continuation"], pages + 1
        if not continuation:
            break

    assert folder["isFolder"] and sorted(names) == [f"{n}.txt" for n in range(5)] and pages == 3


def test_a_sharing_link_and_a_delete(files_stack: LocalStack, user: dict[str, Any], api: FilesApi) -> None:
    item = api.put("Shared/notes.docx", b"share me").json()

    edit = api.create_link(item["id"], {"type": "edit", "scope": "organization"})
    view = api.create_link(item["id"], {"type": "view", "scope": "anonymous"})
    deleted = api.item(item["id"], "DELETE")

    assert edit.status_code == 200 and edit.json()["type"] == "edit" and edit.json()["webUrl"].startswith("https://")
    assert view.json()["scope"] == "anonymous" and view.json()["webUrl"] != edit.json()["webUrl"]
    assert deleted.status_code == 204
    assert (api.item(item["id"]).status_code, error(api.item(item["id"]))) == (404, "not_found")
    with pytest.raises(requests.HTTPError):
        files_stack.sim("GET", f"/_sim/users/{user['id']}/drive/items/{item['id']}")


def test_bad_input_gets_400_never_500(api: FilesApi) -> None:
    item = api.put("inputs.txt", b"x").json()
    for response, code in (
        (api.put("inputs.txt", b"y", conflict="overwrite"), "invalid_request"),
        (api.put("bad|name.txt", b"y"), "invalid_path"),
        (api.by_path("folder/ends with a dot."), "invalid_path"),
        (api.by_path("folder/what?"), "invalid_path"),
        (api.http.get(f"{api.base}/root:/no-colon", timeout=30), "invalid_path"),
        (api.create_link(item["id"], data=b"{not json"), "invalid_json"),
        (api.create_link(item["id"], {"type": "view", "scope": "everyone"}), "invalid_request"),
        (api.children("root", size="1000"), "invalid_request"),
        (api.children("root", continuation="made-up"), "invalid_request"),
    ):
        assert (response.status_code, error(response)) == (400, code), response.text


def test_unknown_account_or_item_is_404_and_a_taken_name_under_fail_is_409(files_stack: LocalStack,
                                                                           api: FilesApi) -> None:
    api.put("taken.txt", b"1")
    nobody = FilesApi(files_stack, "00000000-0000-0000-0000-000000000000.nobody")

    small = api.put("taken.txt", b"2", conflict="fail")
    assert (small.status_code, error(small)) == (409, "name_conflict")
    big = api.put("taken.txt", content_of(5 * MB), conflict="fail")
    assert (big.status_code, error(big)) == (409, "name_conflict")
    assert (api.item("01NOSUCHITEM").status_code, error(api.item("01NOSUCHITEM"))) == (404, "not_found")
    assert (api.by_path("nowhere/at-all.txt").status_code) == 404
    assert (nobody.by_path("a.txt").status_code, error(nobody.by_path("a.txt"))) == (404, "not_found")
    renamed = api.put("taken.txt", b"3", conflict="rename")
    assert renamed.status_code == 201 and renamed.json()["name"] == "taken 1.txt"


def test_graph_throttling_past_the_retries_is_429_with_retry_after(files_stack: LocalStack, api: FilesApi) -> None:
    item = api.put("throttled.txt", b"x").json()
    files_stack.sim("PUT", "/_sim/faults", json={"throttleRate": 1.0})
    try:
        response = api.item(item["id"])
    finally:
        files_stack.sim("DELETE", "/_sim/faults")
    assert (response.status_code, error(response)) == (429, "throttled")
    assert int(response.headers["Retry-After"]) >= 1


def test_an_account_whose_sign_in_was_revoked_is_409_reauth_required(files_stack: LocalStack) -> None:
    person = new_user(files_stack, "revoked")
    # Access tokens shorter than the token provider's 5-minute margin: every use refreshes
    # (an access token already issued stays valid after a revoke, as Entra ID's do).
    before = files_stack.sim("GET", "/_sim/settings")["accessTokenLifetimeSeconds"]
    files_stack.sim("PUT", "/_sim/settings", json={"accessTokenLifetimeSeconds": 240})
    try:
        connect_user(files_stack, person["userPrincipalName"])
        api = FilesApi(files_stack, account_id(person))
        assert api.put("mine.txt", b"x").status_code == 201

        files_stack.sim("POST", f"/_sim/users/{person['id']}/revoke")
        response = api.by_path("mine.txt")
        again = api.put("mine.txt", b"y")
    finally:
        files_stack.sim("PUT", "/_sim/settings", json={"accessTokenLifetimeSeconds": before})

    assert (response.status_code, error(response)) == (409, "reauth_required")
    assert (again.status_code, error(again)) == (409, "reauth_required")


def test_an_account_connected_without_a_files_scope_is_403_missing_scope(stack: LocalStack) -> None:
    person = new_user(stack, "mailonly")  # the default stack asks User.Read Mail.Read
    assert connect_user(stack, person["userPrincipalName"]).status_code == 200
    api = FilesApi(stack, account_id(person))

    for response in (api.by_path("a.txt"), api.put("a.txt", b"x"), api.children("root")):
        assert (response.status_code, error(response)) == (403, "missing_scope")
