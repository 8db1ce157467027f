"""The control API for drives, under ``/_sim/users/{id|upn}/drive``: seeding and the user's own edits.

Changes made here are the user's, as in the browser: ``lastModifiedBy`` is the user alone
(no application), and they are notified and show in delta like any other change.

- ``GET /drive``: the drive (as Graph renders it).
- ``GET /drive/items``: every item, deleted ones included (``"deleted": {...}``).
- ``POST /drive/items`` ``{"path": "Docs/report.docx", "content": "text" | "contentBase64": "..." |
  "generate": {"size": 314572800, "seed": 7}, "folder": false, "conflictBehavior":
  "fail"|"replace"|"rename"}``: a file (or with ``"folder": true`` a folder) at that path
  below the root; missing folders are created. ``generate`` makes ``size`` bytes (at most
  ``MAX_GENERATED_BYTES``) of pseudo-random content from ``seed`` here, so a test can have
  a file of hundreds of MB without sending it. 201 the item.
- ``GET /drive/items/{itemId}``; ``GET /drive/items/{itemId}/content``: the bytes.
- ``PUT /drive/items/{itemId}/content`` (the body is the new content): the user edits the
  file: a new eTag and cTag, ``lastModifiedBy`` the user. 200 the item.
- ``PATCH /drive/items/{itemId}`` ``{"name": "..."}``: the user renames it: a new eTag, the
  same cTag. 200 the item.
- ``DELETE /drive/items/{itemId}``: the user deletes it (to the recycle bin). 204.
- ``POST /drive/delta/reset``: every delta token of the drive answers 410 from now on.
- ``GET /drive/uploads``: the upload sessions of the drive with each PUT's byte range and status.
- ``POST /drive/uploads/failures`` ``{"count": 1, "status": 503}``: the user's next ``count``
  fragment PUTs fail with ``status`` and their bytes are dropped (a connection lost mid-upload).
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from typing import Any

from .drive import DriveService
from .drive_render import render_drive, render_item
from .drive_store import Drive, DriveItem, InvalidName, NameConflict, identity_of
from .state import User
from .uploads import conflict_behavior
from .wire import Request, Response

MAX_GENERATED_BYTES = 2 * 1024 * 1024 * 1024
GENERATE_PIECE_BYTES = 1024 * 1024


def _bad(message: str, status: int = 400) -> Response:
    code = {400: "BadRequest", 404: "NotFound", 409: "Conflict"}.get(status, "BadRequest")
    return Response.json(status, {"error": {"code": code, "message": message}})


class DriveControl:
    def __init__(self, service: DriveService) -> None:
        self.service = service
        self.store = service.store

    def handle(self, request: Request, user: User, rest: list[str]) -> Response:
        """``rest``: the path after ``/_sim/users/{u}/drive``; the caller holds the state lock."""
        drive = self.store.drive_of(user)
        method = request.method
        if not rest and method == "GET":
            return Response.json(200, render_drive(drive, self.store))
        if rest == ["delta", "reset"] and method == "POST":
            drive.epoch += 1
            return Response.empty(204)
        if rest == ["uploads", "failures"] and method == "POST":
            body = _json(request)
            count, status = (body.get("count", 1), body.get("status", 503)) if isinstance(body, dict) else (0, 0)
            if not isinstance(count, int) or not 0 < count <= 100 or status not in (500, 502, 503, 504):
                return _bad('the body must be {"count": 1..100, "status": 500|502|503|504}')
            self.service.transfers.failures.setdefault(user.id, []).extend([status] * count)
            return Response.empty(204)
        if rest == ["uploads"] and method == "GET":
            sessions = [s.public() for s in self.service.transfers.sessions.values() if s.drive_id == drive.id]
            return Response.json(200, {"value": sessions})
        if rest == ["items"] and method == "GET":
            return Response.json(200, {"value": [self._render(request, drive, i) for i in drive.items.values()]})
        if rest == ["items"] and method == "POST":
            return self._seed(request, user, drive)
        if len(rest) >= 2 and rest[0] == "items":
            item = self.store.item(drive, rest[1])
            if item is None:
                return _bad(f"unknown item {rest[1]}", 404)
            return self._item(request, user, drive, item, rest[2:])
        return _bad(f"no control endpoint {method} {request.path}", 404)

    def _render(self, request: Request, drive: Drive, item: DriveItem) -> dict[str, Any]:
        out = render_item(drive, self.store, item)
        if item.deleted:
            out["deleted"] = {"state": "deleted"}
        return out

    def _item(self, request: Request, user: User, drive: Drive, item: DriveItem, rest: list[str]) -> Response:
        method = request.method
        if not rest and method == "GET":
            return Response.json(200, self._render(request, drive, item))
        if rest == ["content"] and method == "GET":
            if item.is_folder:
                return _bad("a folder has no content")
            return Response(200, item.content, {"Content-Type": item.mime_type or "application/octet-stream"})
        if rest == ["content"] and method == "PUT":
            if item.is_folder:
                return _bad("a folder has no content")
            self.store.replace_content(drive, item, request.body, identity_of(user))
            return Response.json(200, self._render(request, drive, item))
        if not rest and method == "PATCH":
            body = _json(request)
            if not isinstance(body, dict) or not isinstance(body.get("name"), str):
                return _bad('the body must be {"name": "..."}')
            try:
                self.store.rename(drive, item, body["name"], identity_of(user))
            except NameConflict:
                return _bad(f"an item named {body['name']} exists in that folder", 409)
            except InvalidName as exc:
                return _bad(str(exc))
            return Response.json(200, self._render(request, drive, item))
        if not rest and method == "DELETE":
            if item.parent_id is None:
                return _bad("the root cannot be deleted")
            self.store.delete(drive, item)
            return Response.empty(204)
        return _bad(f"no control endpoint {method} {request.path}", 404)

    def _seed(self, request: Request, user: User, drive: Drive) -> Response:
        body = _json(request)
        if not isinstance(body, dict) or not isinstance(body.get("path"), str) or not body["path"].strip("/"):
            return _bad('the body must be {"path": "folder/name", ...}')
        conflict = conflict_behavior(body.get("conflictBehavior"), "fail")
        if conflict is None:
            return _bad("conflictBehavior must be fail, replace or rename")
        try:
            if "generate" in body:
                content = _generated(body["generate"])
            elif "contentBase64" in body:
                content = base64.b64decode(str(body["contentBase64"]), validate=True)
            else:
                content = str(body.get("content", "")).encode("utf-8")
        except _BadGenerate:
            return _bad(f'generate must be {{"size": 0..{MAX_GENERATED_BYTES}, "seed": a whole number}}')
        except (binascii.Error, ValueError):
            return _bad("contentBase64 is not base64")
        actor = identity_of(user)
        parent_path, _, name = body["path"].strip("/").rpartition("/")
        try:
            parent = self.store.ensure_folders(drive, parent_path, actor)
            if body.get("folder"):
                item, _ = self.store.create_folder(drive, parent, name, actor, conflict)
            else:
                mime = body.get("mimeType")
                item, _ = self.store.put_file(drive, parent, name, content, actor, conflict,
                                              str(mime) if mime else None)
        except NameConflict:
            return _bad(f"an item named {name} exists in that folder", 409)
        except InvalidName as exc:
            return _bad(str(exc))
        return Response.json(201, self._render(request, drive, item))


class _BadGenerate(ValueError):
    pass


def _generated(spec: Any) -> bytes:
    """``size`` pseudo-random bytes, the same for the same ``seed``."""
    if not isinstance(spec, dict):
        raise _BadGenerate
    size, seed = spec.get("size"), spec.get("seed", 0)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_GENERATED_BYTES:
        raise _BadGenerate
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _BadGenerate
    rng = random.Random(seed)  # noqa: S311 - test content, not a secret
    pieces = [rng.randbytes(min(GENERATE_PIECE_BYTES, size - offset)) for offset in range(0, size, GENERATE_PIECE_BYTES)]
    return b"".join(pieces)


def _json(request: Request) -> Any:
    try:
        return json.loads(request.body or b"{}")
    except ValueError:
        return None
