"""Graph mail folders: the folder tree, child folders, and each folder's messages and delta.

``GET /me/mailFolders`` lists the folders under ``msgfolderroot`` (10 a page, as Graph
does; ``$top``, ``$skip``, ``includeHiddenFolders=true``); ``POST /me/mailFolders`` and
``POST /me/mailFolders/{id}/childFolders`` create folders (409 ``ErrorFolderExists``
for a name already used under the same parent); ``/me/mailFolders/{id}`` takes a
folder id or a well-known name; ``.../childFolders/{id}/...`` nests.
(https://learn.microsoft.com/graph/api/resources/mailfolder)
"""

from __future__ import annotations

from typing import Any

from .context import SimContext
from .graph_common import (
    MAIL_READ,
    MAIL_WRITE,
    Caller,
    access_denied,
    collection,
    json_object,
    next_link,
    not_supported,
    page_bounds,
    select_fields,
    select_of,
)
from .graph_delta import MessageDelta
from .graph_mail import MailApi
from .mailstore import Folder, Mailbox, new_graph_id
from .state import User
from .wire import Request, Response, graph_error


def folder_not_found() -> Response:
    return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")


class FoldersApi:
    def __init__(self, ctx: SimContext, mail: MailApi) -> None:
        self.sim = ctx
        self.state = ctx.state
        self.mail = mail
        self.delta = MessageDelta(ctx)

    def handle(self, request: Request, caller: Caller, user: User, rest: list[str]) -> Response:
        """``rest`` starts at ``mailFolders``."""
        if not caller.has(MAIL_READ):
            return access_denied()
        box = user.mailbox
        if len(rest) == 1:
            if request.method == "GET":
                return self._list(request, user, box.root)
            if request.method == "POST":
                return self._create(request, caller, user, box.root)
            return not_supported()
        folder = box.folder(rest[1])
        tail = rest[2:]
        # .../childFolders/{id}/... addresses the child like /mailFolders/{id}/...
        while folder is not None and len(tail) >= 2 and tail[0].lower() == "childfolders":
            child = box.folder(tail[1])
            folder = child if child is not None and child.parent_id == folder.id else None
            tail = tail[2:]
        if folder is None:
            return folder_not_found()
        if not tail:
            if request.method == "GET":
                with self.state.lock:
                    counts = self._counts(box, folder)
                    return Response.json(200, select_fields(self.render(folder, counts), select_of(request)))
            return not_supported()
        head = tail[0].lower()
        if head == "childfolders" and len(tail) == 1:
            if request.method == "GET":
                return self._list(request, user, folder)
            if request.method == "POST":
                return self._create(request, caller, user, folder)
            return not_supported()
        if head == "messages":
            if len(tail) == 2 and tail[1].lower() == "delta" and request.method == "GET":
                return self.delta.handle(request, user, folder)
            return self.mail.handle(request, caller, user, tail, folder)
        return graph_error(400, "BadRequest", f"Resource not found for the segment '{tail[0]}'.")

    @staticmethod
    def _counts(box: Mailbox, only: Folder | None = None) -> dict[str, list[int]]:
        """Per folder id (or for ``only``): [total, unread, child folders, size in bytes]."""
        counts: dict[str, list[int]] = {only.id: [0, 0, 0, 0]} if only else {fid: [0, 0, 0, 0] for fid in box.folders}
        for message in box.messages.values():
            entry = counts.get(message.folder_id)
            if entry is None:
                continue
            entry[0] += 1
            if not message.data["isRead"]:
                entry[1] += 1
            entry[3] += len(message.data["body"]["content"])
            if message.attachments:
                entry[3] += sum(len(a.content) for a in message.attachments)
        for folder in box.folders.values():
            parent = counts.get(folder.parent_id)
            if parent is not None and folder.parent_id != folder.id and not folder.hidden:
                parent[2] += 1
        return counts

    @staticmethod
    def render(folder: Folder, counts: dict[str, list[int]]) -> dict[str, Any]:
        total, unread, children, size = counts.get(folder.id, [0, 0, 0, 0])
        return {
            "id": folder.id,
            "displayName": folder.display_name,
            "parentFolderId": folder.parent_id,
            "childFolderCount": children,
            "unreadItemCount": unread,
            "totalItemCount": total,
            "sizeInBytes": size,
            "isHidden": folder.hidden,
        }

    def _list(self, request: Request, user: User, parent: Folder) -> Response:
        bounds = page_bounds(request, 10)
        if isinstance(bounds, Response):
            return bounds
        top, skip = bounds
        hidden = request.query.get("includeHiddenFolders", "").lower() == "true"
        select = select_of(request)
        with self.state.lock:
            box = user.mailbox
            children = box.children(parent, include_hidden=hidden)
            counts = self._counts(box)
            page = [select_fields(self.render(f, counts), select) for f in children[skip:skip + top]]
        extra = {}
        if skip + top < len(children):
            extra["@odata.nextLink"] = next_link(self.sim.base_url, request, top, skip + top,
                                                 ("$select", "includeHiddenFolders"))
        return collection(f"users('{user.id}')/mailFolders", page, extra)

    def _create(self, request: Request, caller: Caller, user: User, parent: Folder) -> Response:
        if not caller.has(MAIL_WRITE):
            return access_denied()
        body = json_object(request)
        if isinstance(body, Response):
            return body
        name = body.get("displayName")
        if not isinstance(name, str) or not name.strip():
            return graph_error(400, "ErrorInvalidRequest", "The displayName of a folder is required.")
        hidden = body.get("isHidden", False)
        if not isinstance(hidden, bool):
            return graph_error(400, "ErrorInvalidRequest", "isHidden must be true or false.")
        with self.state.lock:
            box = user.mailbox
            siblings = box.children(parent, include_hidden=True)
            if any(f.display_name.lower() == name.strip().lower() for f in siblings):
                return graph_error(409, "ErrorFolderExists", "A folder with the specified name already exists.")
            folder = Folder(new_graph_id("AAMkAGI2"), name.strip(), None, parent.id, hidden=hidden)
            box.add_folder(folder)
            rendered = self.render(folder, {})
        location = f"{self.sim.graph_url}/users('{user.id}')/mailFolders('{folder.id}')"
        return Response.json(201, {"@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{user.id}')"
                                                     "/mailFolders/$entity", **rendered}, {"Location": location})
