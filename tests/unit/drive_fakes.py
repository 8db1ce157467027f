"""An in-memory OneDrive behind the ``DriveApi`` port, keeping Graph's rules where the files
API depends on them:

- a simple upload: 201 for a new file, 200 for a replaced one, ``ConflictError`` for an
  existing name under ``fail``, ``name 1.ext`` under ``rename``;
- an upload session takes fragments in order, each but the last a multiple of 320 KiB and
  under 60 MiB (anything else is a test failure: Graph would answer 400 or 416);
  ``fail_next_fragments`` makes the next fragments fail, their bytes dropped, as a broken
  connection or a 503 would;
- children come in pages with a nextLink under the Graph endpoint;
- ``throttle_next`` makes calls raise ``ThrottledError`` as the adapter does once its retries
  are spent.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.errors import ConflictError, GraphError, NotFoundError, ThrottledError
from shared.ports import DriveChildrenPage, DriveContent, GraphAuth, JsonObject, UploadProgress, UploadSession

ENDPOINT = "https://graph.example.test/v1.0"
FRAGMENT_MULTIPLE = 320 * 1024


@dataclass
class _Item:
    id: str
    name: str
    parent_id: str | None
    content: bytes | None = None  # None: a folder
    version: int = 1


@dataclass
class _Session:
    path: str
    conflict: str
    total: int | None = None
    received: bytearray = field(default_factory=bytearray)


class FakeDriveApi:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.items: dict[str, _Item] = {"root": _Item("root", "root", None)}
        self.sessions: dict[str, _Session] = {}
        self.fragments: list[tuple[int, int, int]] = []  # (start, length, total) of each PUT
        self.status_queries = 0
        self.cancelled: list[str] = []
        self.fail_next_fragments = 0
        self.fail_status = 503
        self.throttle_next = 0
        self.refuse_next_tokens = 0  # answer 401, as Graph does to a revoked access token
        self.tokens: list[str] = []
        self.links: list[tuple[str, str, str]] = []

    # --- helpers for tests ------------------------------------------------------------
    def _enter(self, auth: GraphAuth | None) -> None:
        if auth is not None:
            self.tokens.append(auth.access_token)
        if self.refuse_next_tokens:
            self.refuse_next_tokens -= 1
            raise GraphError(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
        if self.throttle_next:
            self.throttle_next -= 1
            raise ThrottledError("Graph answered 429", 7.2)

    def _path_of(self, item: _Item) -> str:
        parts: list[str] = []
        while item.parent_id is not None:
            parts.append(item.name)
            item = self.items[item.parent_id]
        return "/" + "/".join(reversed(parts))

    def _render(self, item: _Item) -> JsonObject:
        body: JsonObject = {
            "id": item.id, "name": item.name, "eTag": f'"{item.id},{item.version}"',
            "webUrl": f"https://contoso-my.sharepoint.test/doc/{item.id}",
            "@microsoft.graph.downloadUrl": f"https://download.example.test/{item.id}?secret",
        }
        if item.parent_id is not None:
            parent = self.items[item.parent_id]
            parent_path = self._path_of(parent)
            body["parentReference"] = {"id": parent.id, "driveId": "drive-1",
                                       "path": "/drive/root:" + ("" if parent_path == "/" else parent_path)}
        if item.content is None:
            body["folder"] = {"childCount": sum(1 for i in self.items.values() if i.parent_id == item.id)}
        else:
            body["file"] = {"mimeType": "application/octet-stream"}
            body["size"] = len(item.content)
            body["cTag"] = f'"c:{item.id},{item.version}"'
        return body

    def find(self, path: str) -> _Item | None:
        item = self.items["root"]
        for name in path.strip("/").split("/"):
            found = next((i for i in self.items.values() if i.parent_id == item.id and i.name == name), None)
            if found is None:
                return None
            item = found
        return item

    def _put(self, path: str, content: bytes, conflict: str) -> tuple[_Item, bool]:
        *folders, name = path.split("/")
        parent = self.items["root"]
        for folder in folders:
            found = next((i for i in self.items.values() if i.parent_id == parent.id and i.name == folder), None)
            if found is None:
                found = _Item(f"item-{next(self._ids)}", folder, parent.id)
                self.items[found.id] = found
            parent = found
        existing = next((i for i in self.items.values() if i.parent_id == parent.id and i.name == name), None)
        if existing is not None:
            if conflict == "fail":
                raise ConflictError("Graph 409 nameAlreadyExists")
            if conflict == "replace":
                existing.content, existing.version = content, existing.version + 1
                return existing, False
            stem, dot, ext = name.rpartition(".")
            name = f"{stem} 1{dot}{ext}" if dot else f"{name} 1"
        item = _Item(f"item-{next(self._ids)}", name, parent.id, content)
        self.items[item.id] = item
        return item, True

    def _item(self, item_id: str) -> _Item:
        item = self.items.get(item_id)
        if item is None:
            raise NotFoundError("Graph 404 itemNotFound")
        return item

    # --- the DriveApi port ------------------------------------------------------------
    def get_item(self, auth: GraphAuth, item_id: str) -> JsonObject:
        self._enter(auth)
        return self._render(self._item(item_id))

    def get_item_by_path(self, auth: GraphAuth, path: str) -> JsonObject:
        self._enter(auth)
        item = self.find(path)
        if item is None:
            raise NotFoundError("Graph 404 itemNotFound")
        return self._render(item)

    def list_children(self, auth: GraphAuth, item_id: str, *, page_size: int,
                      next_link: str | None = None) -> DriveChildrenPage:
        self._enter(auth)
        folder = self._item(item_id)
        skip = int(next_link.rsplit("=", 1)[1]) if next_link else 0
        if next_link:
            assert next_link.startswith(f"{ENDPOINT}/me/drive/items/{item_id}/children")
        kids = [i for i in self.items.values() if i.parent_id == folder.id]
        page = kids[skip:skip + page_size]
        more = skip + page_size < len(kids)
        link = f"{ENDPOINT}/me/drive/items/{item_id}/children?$top={page_size}&$skiptoken={skip + page_size}"
        return DriveChildrenPage([self._render(i) for i in page], link if more else None)

    def upload_small(self, auth: GraphAuth, path: str, content: bytes, conflict: str) -> tuple[JsonObject, bool]:
        self._enter(auth)
        item, created = self._put(path, content, conflict)
        return self._render(item), created

    def create_upload_session(self, auth: GraphAuth, path: str, conflict: str) -> UploadSession:
        self._enter(auth)
        if conflict == "fail" and self.find(path) is not None:
            raise ConflictError("Graph 409 nameAlreadyExists")
        url = f"https://upload.example.test/session-{next(self._ids)}"
        self.sessions[url] = _Session(path, conflict)
        return UploadSession(url, "2026-11-20T12:15:00Z")

    def upload_fragment(self, upload_url: str, fragment: bytes, start: int, total: int) -> UploadProgress:
        session = self.sessions.get(upload_url)
        if session is None:
            raise NotFoundError("Graph 404 itemNotFound")
        self.fragments.append((start, len(fragment), total))
        if self.fail_next_fragments:
            self.fail_next_fragments -= 1
            if self.fail_status == 429:
                raise ThrottledError("fragment throttled", 0.5)
            raise GraphError(self.fail_status, "serviceNotAvailable", "the fragment was not stored")
        if start != len(session.received):
            raise GraphError(416, "invalidRange", "a gap or an overlap")
        last = start + len(fragment) == total
        assert last or len(fragment) % FRAGMENT_MULTIPLE == 0, "Graph answers 400 to such a fragment"
        assert len(fragment) < 60 * 1024 * 1024
        session.total = total
        session.received.extend(fragment)
        if not last:
            return UploadProgress(next_expected_ranges=(f"{len(session.received)}-",))
        del self.sessions[upload_url]
        item, created = self._put(session.path, bytes(session.received), session.conflict)
        return UploadProgress(item=self._render(item), created=created)

    def upload_status(self, upload_url: str) -> tuple[str, ...]:
        self.status_queries += 1
        session = self.sessions.get(upload_url)
        if session is None:
            raise NotFoundError("Graph 404 itemNotFound")
        return (f"{len(session.received)}-",)

    def cancel_upload_session(self, upload_url: str) -> None:
        self.cancelled.append(upload_url)
        self.sessions.pop(upload_url, None)

    def open_content(self, auth: GraphAuth, item_id: str, *, byte_range: str | None = None) -> DriveContent:
        self._enter(auth)
        item = self._item(item_id)
        if item.content is None:
            raise GraphError(400, "invalidRequest", "Only files have content.")
        data, status, content_range = item.content, 200, None
        if byte_range:
            first, last = byte_range.removeprefix("bytes=").split("-")
            start = int(first) if first else max(0, len(data) - int(last))
            end = min(int(last), len(data) - 1) if first and last else len(data) - 1
            if start >= len(data):
                raise GraphError(416, "invalidRange", "out of range")
            data, status, content_range = data[start:end + 1], 206, f"bytes {start}-{end}/{len(item.content)}"
        closed: list[bool] = []

        def chunks() -> Iterator[bytes]:
            for offset in range(0, len(data), 64 * 1024):
                yield data[offset:offset + 64 * 1024]

        return DriveContent(status, len(data), "application/octet-stream", chunks(),
                            lambda: closed.append(True), content_range)

    def create_link(self, auth: GraphAuth, item_id: str, *, link_type: str, scope: str) -> JsonObject:
        self._enter(auth)
        self._item(item_id)
        self.links.append((item_id, link_type, scope))
        return {"id": f"perm-{len(self.links)}", "roles": ["write" if link_type == "edit" else "read"],
                "link": {"type": link_type, "scope": scope, "webUrl": f"https://1drv.example.test/{item_id}/{link_type}"}}

    def delete_item(self, auth: GraphAuth, item_id: str) -> None:
        self._enter(auth)
        self._item(item_id)
        doomed = {item_id}
        while True:
            more = {i.id for i in self.items.values() if i.parent_id in doomed} - doomed
            if not more:
                break
            doomed |= more
        for gone in doomed:
            del self.items[gone]


def drive_account(services: Any, account_id: str = "acct-1", scopes: tuple[str, ...] = ("User.Read", "Files.ReadWrite.All"),
                  **fields: Any) -> str:
    """An account in the fake store with the scopes it consented to."""
    from shared.models import Account

    services.accounts.save(Account(account_id=account_id, tenant_id="t", user_id="u", user_principal_name="u@x.test",
                                   scopes=scopes, **fields))
    return account_id
