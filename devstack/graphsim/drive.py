"""Microsoft Graph v1.0 for OneDrive: drives, drive items, uploads, links, delete, delta.

Entry points (called by ``graph.py`` after authentication): ``/me/drive...``,
``/users/{id}/drive...``, ``/me/drives`` and ``/drives/{driveId}...``. Addressing as Graph
has it (https://learn.microsoft.com/graph/onedrive-addressing-driveitems): by id
(``items/{id}``), by path (``root:/{path}:`` and ``items/{id}:/{path}:``) and the root
(``root``, ``items/root``), each optionally followed by ``/children``, ``/content``,
``/createUploadSession``, ``/createLink``, ``/permissions`` or ``/delta``.

Scopes: reading needs ``Files.Read``, ``Files.ReadWrite`` or their ``.All`` forms; any
write needs ``Files.ReadWrite`` or ``Files.ReadWrite.All`` (403 ``accessDenied``).
"""

from __future__ import annotations

import re
from typing import Any

from .context import RequestLog
from .delivery import Delivery
from .drive_delta import DriveDelta
from .drive_notify import DriveCaller, DriveSubscriptions
from .drive_render import GRAPH, render_drive, render_item, select_fields
from .drive_store import Drive, DriveItem, DriveStore, InvalidName, NameConflict, identity_of
from .state import SimState, User
from .uploads import FileTransfers, conflict_behavior, precondition_failed
from .wire import Request, Response, graph_error

FILES_READ = {"Files.Read", "Files.Read.All", "Files.ReadWrite", "Files.ReadWrite.All"}
FILES_WRITE = {"Files.ReadWrite", "Files.ReadWrite.All"}
SIMPLE_UPLOAD_MAX_BYTES = 250 * 1024 * 1024  # PUT .../content: "up to 250 MB" (driveitem-put-content)
DEFAULT_CHILDREN_PAGE = 200
MAX_PAGE = 999
_DELTA = re.compile(r"^delta(?:\((?:token=)?'?([^')]*)'?\))?$", re.IGNORECASE)


def not_found() -> Response:
    return graph_error(404, "itemNotFound", "The resource could not be found.")


def denied() -> Response:
    return graph_error(403, "accessDenied", "Access denied")


def invalid(message: str) -> Response:
    return graph_error(400, "invalidRequest", message)


class DriveService:
    """Drives of the simulated tenant: the store, Graph routes, uploads, delta, subscriptions."""

    def __init__(self, state: SimState, store: DriveStore, transfers: FileTransfers, delta: DriveDelta,
                 subscriptions: DriveSubscriptions) -> None:
        self.state = state
        self.store = store
        self.transfers = transfers
        self.delta = delta
        self.subscriptions = subscriptions

    @classmethod
    def build(cls, state: SimState, delivery: Delivery, requests: RequestLog | None = None) -> DriveService:
        store = DriveStore()
        subscriptions = DriveSubscriptions(state, store, delivery)
        store.on_change = subscriptions.drive_changed
        return cls(state, store, FileTransfers(state, store, requests), DriveDelta(state, store), subscriptions)

    # entry -----------------------------------------------------------------------------
    def handle_user(self, request: Request, caller: DriveCaller, user: User, rest: list[str]) -> Response:
        """``rest`` starts with ``drive`` or ``drives`` (``/me/drive/...``, ``/users/{id}/drives``)."""
        if not caller.has(FILES_READ):
            return denied()
        with self.state.lock:
            drive = self.store.drive_of(user)
            if rest[0].lower() == "drives":
                if len(rest) == 1 and request.method == "GET":
                    return Response.json(200, {"@odata.context": f"{GRAPH}/$metadata#drives",
                                               "value": [render_drive(drive, self.store)]})
                return invalid("Unsupported request on the drives collection.")
            return self._drive_routes(request, caller, drive, "/".join(rest[1:]))

    def handle_drives(self, request: Request, caller: DriveCaller, seg: list[str]) -> Response:
        """``/drives/{driveId}/...`` (``seg``: from the drive id on): the caller's own drive only."""
        if not caller.has(FILES_READ):
            return denied()
        if not seg:
            return invalid("A drive id is required.")
        with self.state.lock:
            drive = self.store.drives.get(seg[0])
            if drive is None:
                return not_found()
            if caller.user is None or caller.user.id != drive.owner.id:
                return denied()
            return self._drive_routes(request, caller, drive, "/".join(seg[1:]))

    # addressing ----------------------------------------------------------------------------
    def _drive_routes(self, request: Request, caller: DriveCaller, drive: Drive, tail: str) -> Response:
        if not tail:
            if request.method != "GET":
                return graph_error(405, "invalidRequest", "Specified HTTP method is not allowed for the request.")
            return Response.json(200, select_fields(render_drive(drive, self.store), _select(request)))
        base: DriveItem | None
        if tail.lower().startswith("root"):
            base, tail = drive.root, tail[4:]
        elif tail.lower().startswith("items/"):
            match = re.match(r"items/([^/:]+)(.*)$", tail, re.IGNORECASE)
            if match is None:
                return invalid("An item id is required.")
            base, tail = self.store.item(drive, match.group(1)), match.group(2)
            if base is None:
                return not_found()
        else:
            return invalid(f"Resource not found for the segment '{tail.split('/')[0]}'.")
        path: str | None = None
        if tail.startswith(":"):
            end = tail.find(":", 1)
            path, tail = (tail[1:], "") if end < 0 else (tail[1:end], tail[end + 1:])
        action = tail.strip("/")
        if "/" in action:
            return invalid(f"Resource not found for the segment '{action}'.")
        target = base if path is None else self.store.resolve(drive, base, path)
        return self._item_routes(request, caller, drive, base, path, target, action)

    def _item_routes(self, request: Request, caller: DriveCaller, drive: Drive, base: DriveItem,
                     path: str | None, target: DriveItem | None, action: str) -> Response:
        method = request.method
        lowered = action.lower()
        writes = method in ("PUT", "PATCH", "DELETE", "POST")
        if writes and not caller.has(FILES_WRITE):
            return denied()
        if lowered == "content" and method == "PUT":
            return self._simple_upload(request, caller, drive, base, path, target)
        if lowered == "createuploadsession" and method == "POST":
            return self.transfers.create_session(request, caller.app_id, self._actor(caller), drive, base, path,
                                                 target)
        if target is None:
            return not_found()
        delta = _DELTA.match(action)
        if delta is not None and method == "GET":
            if target.parent_id is not None:
                return invalid("Delta is only supported on the root of a OneDrive for Business drive.")
            token = delta.group(1) if delta.group(1) is not None else request.query.get("token")
            return self.delta.page(request, drive, token)
        if lowered == "" and method == "GET":
            return Response.json(200, select_fields(self._render(request, drive, target), _select(request)))
        if lowered == "" and method == "PATCH":
            return self._patch(request, caller, drive, target)
        if lowered == "" and method == "DELETE":
            if target.parent_id is None:
                return denied()
            failed = precondition_failed(request, target)
            if failed is not None:
                return failed
            self.store.delete(drive, target)
            return Response.empty(204)
        if lowered == "children" and method == "GET":
            return self._children(request, drive, target)
        if lowered == "children" and method == "POST":
            return self._create_folder(request, caller, drive, target)
        if lowered == "content" and method == "GET":
            if target.is_folder:
                return invalid("Only files have content.")
            return Response(302, b"", {"Location": self.transfers.downloads.url(request, drive, target),
                                       "Cache-Control": "no-store"})
        if lowered == "createlink" and method == "POST":
            return create_link(request, drive, target, self.transfers.share_token())
        if lowered == "permissions" and method == "GET":
            return Response.json(200, {"@odata.context": f"{GRAPH}/$metadata#Collection(permission)",
                                       "value": list(target.links)})
        return graph_error(400, "invalidRequest", f"{method} is not supported on '{action or 'the item'}'.")

    # items ---------------------------------------------------------------------------------
    def _actor(self, caller: DriveCaller) -> dict[str, Any]:
        """Who changed an item through Graph: the signed-in user, through the calling app."""
        assert caller.user is not None
        actor = identity_of(caller.user)
        app = self.state.apps.get(caller.app_id)
        actor["application"] = {"id": caller.app_id, "displayName": app.display_name if app else caller.app_id}
        return actor

    def _render(self, request: Request, drive: Drive, item: DriveItem) -> dict[str, Any]:
        url = None if item.is_folder else self.transfers.downloads.url(request, drive, item)
        return render_item(drive, self.store, item, download_url=url)

    def _children(self, request: Request, drive: Drive, folder: DriveItem) -> Response:
        if not folder.is_folder:
            return invalid("Only folders have children.")
        try:
            top = min(int(request.query.get("$top", str(DEFAULT_CHILDREN_PAGE))), MAX_PAGE)
            skip = int(request.query.get("$skiptoken", "0"))
        except ValueError:
            return invalid("Invalid $top or $skiptoken.")
        if top < 1 or skip < 0:
            return invalid("Invalid $top or $skiptoken.")
        kids = self.store.children(drive, folder)
        select = _select(request)
        body: dict[str, Any] = {
            "@odata.context": f"{GRAPH}/$metadata#Collection(driveItem)",
            "value": [select_fields(self._render(request, drive, k), select) for k in kids[skip:skip + top]],
        }
        if skip + top < len(kids):
            link = request.base_url + request.raw_path.split("?", 1)[0]
            extra = f"&$select={','.join(select)}" if select else ""
            body["@odata.nextLink"] = f"{link}?$top={top}&$skiptoken={skip + top}{extra}"
        return Response.json(200, body)

    def _simple_upload(self, request: Request, caller: DriveCaller, drive: Drive, base: DriveItem,
                       path: str | None, target: DriveItem | None) -> Response:
        if len(request.body) > SIMPLE_UPLOAD_MAX_BYTES:
            return graph_error(413, "requestEntityTooLarge",
                               "A simple upload takes at most 250 MB; use an upload session.")
        conflict = conflict_behavior(request.query.get("@microsoft.graph.conflictBehavior"), "replace")
        if conflict is None:
            return invalid("@microsoft.graph.conflictBehavior must be fail, replace or rename.")
        actor = self._actor(caller)
        try:
            if target is not None and not target.is_folder and conflict != "rename":
                if conflict == "fail" and path is not None:
                    raise NameConflict(target.name)
                failed = precondition_failed(request, target)
                if failed is not None:
                    return failed
                self.store.replace_content(drive, target, request.body, actor)
                return Response.json(200, self._render(request, drive, target))
            if path is None:
                return invalid("Address a file by path to create it, or a file by id to replace it.")
            parent_path, _, name = path.strip("/").rpartition("/")
            parent = self.store.resolve(drive, base, parent_path) if parent_path else base
            if parent is None and base.parent_id is None:
                parent = self.store.ensure_folders(drive, parent_path, actor)
            if parent is None or not parent.is_folder:
                return not_found()
            item, created = self.store.put_file(drive, parent, name, request.body, actor, conflict)
        except NameConflict:
            return graph_error(409, "nameAlreadyExists", "The specified item name already exists.")
        except InvalidName as exc:
            return invalid(str(exc))
        return Response.json(201 if created else 200, self._render(request, drive, item))

    def _create_folder(self, request: Request, caller: DriveCaller, drive: Drive, parent: DriveItem) -> Response:
        try:
            body = request.json() or {}
        except ValueError:
            return invalid("Unable to read JSON request payload.")
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return invalid("The request needs a name.")
        if "folder" not in body:
            return invalid("Only folders can be created here; upload files with PUT .../content.")
        conflict = conflict_behavior(body.get("@microsoft.graph.conflictBehavior"), "fail")
        if conflict is None:
            return invalid("@microsoft.graph.conflictBehavior must be fail, replace or rename.")
        if not parent.is_folder:
            return invalid("Only folders have children.")
        try:
            folder, _ = self.store.create_folder(drive, parent, body["name"], self._actor(caller), conflict)
        except NameConflict:
            return graph_error(409, "nameAlreadyExists", "The specified item name already exists.")
        except InvalidName as exc:
            return invalid(str(exc))
        return Response.json(201, self._render(request, drive, folder))

    def _patch(self, request: Request, caller: DriveCaller, drive: Drive, item: DriveItem) -> Response:
        try:
            body = request.json() or {}
        except ValueError:
            return invalid("Unable to read JSON request payload.")
        if not isinstance(body, dict):
            return invalid("Unable to read JSON request payload.")
        unsupported = [k for k in body if k not in ("name", "@microsoft.graph.conflictBehavior")]
        if unsupported:
            return invalid(f"The simulator updates the name only, not {', '.join(unsupported)}.")
        failed = precondition_failed(request, item)
        if failed is not None:
            return failed
        if "name" in body:
            try:
                self.store.rename(drive, item, str(body["name"]), self._actor(caller))
            except NameConflict:
                return graph_error(409, "nameAlreadyExists", "The specified item name already exists.")
            except InvalidName as exc:
                return invalid(str(exc))
        return Response.json(200, self._render(request, drive, item))


def _select(request: Request) -> list[str] | None:
    raw = request.query.get("$select")
    return [s.strip() for s in raw.split(",") if s.strip()] if raw else None


def create_link(request: Request, drive: Drive, item: DriveItem, token: str) -> Response:
    """createLink (https://learn.microsoft.com/graph/api/driveitem-createlink): 201 a new link,
    200 the existing one of the same type and scope."""
    try:
        body = request.json() or {}
    except ValueError:
        return invalid("Unable to read JSON request payload.")
    kind = body.get("type") if isinstance(body, dict) else None
    if kind not in ("view", "edit", "embed"):
        return invalid("type must be view, edit or embed.")
    if kind == "embed":
        return graph_error(400, "notSupported", "Embed links are supported by OneDrive personal only.")
    scope = body.get("scope") or "organization"
    if scope not in ("anonymous", "organization", "users"):
        return invalid("scope must be anonymous, organization or users.")
    for link in item.links:
        if link["link"]["type"] == kind and link["link"]["scope"] == scope:
            return Response.json(200, link)
    letter = "f" if item.is_folder else {"docx": "w", "xlsx": "x", "pptx": "p"}.get(
        item.name.rpartition(".")[2].lower(), "u")
    site = drive.web_url.removesuffix("/Documents").split("/personal/", 1)[1]
    permission = {
        "@odata.context": f"{GRAPH}/$metadata#permission",
        "id": token[:12],
        "roles": ["write" if kind == "edit" else "read"],
        "shareId": "u!" + token,
        "hasPassword": False,
        "link": {"scope": scope, "type": kind, "preventsDownload": False,
                 "webUrl": f"https://contoso-my.sharepoint.com/:{letter}:/g/personal/{site}/{token}"},
    }
    item.links.append(permission)
    return Response.json(201, permission)
