"""Graph mail: folders, messages (read, update, move, delete) and per-folder delta."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from typing import Any
from urllib.parse import quote

from . import mailbox
from .context import SimContext
from .graph_common import (
    DENIED,
    MAIL_READ,
    MAIL_WRITE,
    Caller,
    _select,
    _sync_state_gone,
)
from .state import (
    DeltaRound,
    Folder,
    Message,
    User,
)
from .wire import Request, Response, graph_error


class MailApi:
    def __init__(self, ctx: SimContext) -> None:
        self.sim = ctx
        self.state = ctx.state

    def handle(self, request: Request, caller: Caller, user: User, rest: list[str]) -> Response:
        if not caller.has(MAIL_READ):
            return graph_error(403, "ErrorAccessDenied", DENIED)
        head = rest[0].lower()
        method = request.method
        if head == "mailfolders":
            if len(rest) == 1 and method == "GET":
                with self.state.lock:
                    folders = [self._render_folder(user, f) for f in user.folders.values()]
                return Response.json(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('"
                                           f"{user.id}')/mailFolders", "value": folders})
            folder = user.folder(rest[1]) if len(rest) >= 2 else None
            if folder is None:
                return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            if len(rest) == 2 and method == "GET":
                with self.state.lock:
                    return Response.json(200, self._render_folder(user, folder))
            if len(rest) >= 3 and rest[2].lower() == "messages":
                if len(rest) == 3 and method == "GET":
                    return self._list_messages(request, user, folder)
                if len(rest) == 4 and rest[3].lower() == "delta" and method == "GET":
                    return self._delta(request, user, folder)
                if len(rest) >= 4:
                    return self._message_item(request, caller, user, rest[3:], folder)
        elif head == "messages":
            if len(rest) == 1 and method == "GET":
                return self._list_messages(request, user, None)
            if len(rest) >= 2:
                return self._message_item(request, caller, user, rest[1:], None)
        return graph_error(400, "BadRequest", f"Resource not found for the segment '{rest[0]}'.")

    def _render_folder(self, user: User, folder: Folder) -> dict[str, Any]:
        items = [m for m in user.messages.values() if m.folder_id == folder.id]
        return {
            "id": folder.id,
            "displayName": folder.display_name,
            "parentFolderId": "AAMkAGI2root",
            "childFolderCount": 0,
            "unreadItemCount": sum(1 for m in items if not m.data.get("isRead")),
            "totalItemCount": len(items),
            "isHidden": False,
        }

    def _list_messages(self, request: Request, user: User, folder: Folder | None) -> Response:
        select = _select(request)
        try:
            top = min(int(request.query.get("$top", "10")), 1000)
            skip = int(request.query.get("$skip", "0"))
        except ValueError:
            return graph_error(400, "BadRequest", "Invalid $top or $skip.")
        with self.state.lock:
            items = [m for m in user.messages.values() if folder is None or m.folder_id == folder.id]
            items.sort(key=lambda m: (m.data["receivedDateTime"], m.id), reverse=True)
            page = [mailbox.render_message(m, select) for m in items[skip:skip + top]]
        body: dict[str, Any] = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
                                "value": page}
        if skip + top < len(items):
            base = self.sim.base_url + request.raw_path.split("?", 1)[0]
            extra = f"&$select={quote(','.join(select))}" if select else ""
            body["@odata.nextLink"] = f"{base}?$top={top}&$skip={skip + top}{extra}"
        return Response.json(200, body)

    def _message_item(self, request: Request, caller: Caller, user: User, rest: list[str],
                      folder: Folder | None) -> Response:
        message_id = rest[0]
        with self.state.lock:
            message = user.messages.get(message_id)
            if message is None or (folder is not None and message.folder_id != folder.id):
                return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            if len(rest) == 1 and request.method == "GET":
                return Response.json(200, mailbox.render_message(message, _select(request)))
            if not caller.has(MAIL_WRITE):
                return graph_error(403, "ErrorAccessDenied", DENIED)
            if len(rest) == 1 and request.method == "PATCH":
                try:
                    patch = request.json() or {}
                except ValueError:
                    return graph_error(400, "BadRequest", "Unable to read JSON request payload.")
                unknown = [k for k in patch if k not in mailbox.UPDATABLE]
                if not isinstance(patch, dict) or unknown:
                    return graph_error(400, "ErrorInvalidProperty", f"The property '{unknown[:1]}' cannot be updated.")
                change = mailbox.update_message(self.state, user, message, patch)
                self.sim.delivery.publish_changes([change])
                return Response.json(200, mailbox.render_message(message))
            if len(rest) == 1 and request.method == "DELETE":
                deleted = user.folder("deleteditems")
                if deleted is not None and message.folder_id != deleted.id:
                    _, changes = mailbox.move_message(self.state, user, message, deleted)
                else:
                    changes = [mailbox.delete_message(self.state, user, message)]
                self.sim.delivery.publish_changes(changes)
                return Response.empty(204)
            if len(rest) == 2 and rest[1].lower() == "move" and request.method == "POST":
                try:
                    body = request.json() or {}
                except ValueError:
                    body = {}
                target = user.folder(str(body.get("destinationId", ""))) if isinstance(body, dict) else None
                if target is None:
                    return graph_error(400, "ErrorInvalidIdMalformed", "Id is malformed.")
                moved, changes = mailbox.move_message(self.state, user, message, target)
                self.sim.delivery.publish_changes(changes)
                return Response.json(201, mailbox.render_message(moved))
        return graph_error(405, "ErrorInvalidRequest", "The OData request is not supported.")

    # delta --------------------------------------------------------------------------------
    def _delta(self, request: Request, user: User, folder: Folder) -> Response:
        link_base = self.sim.base_url + request.raw_path.split("?", 1)[0]
        page_size = self.state.settings.default_page_size
        prefer = request.header("prefer") or ""
        match = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
        if match:
            page_size = max(1, min(int(match.group(1)), 1000))
        with self.state.lock:
            skiptoken = request.query.get("$skiptoken")
            deltatoken = request.query.get("$deltatoken")
            if skiptoken:
                round_id, _, offset_text = skiptoken.partition(".")
                delta_round = self.state.delta_rounds.get(round_id)
                if delta_round is None or delta_round.user_id != user.id or delta_round.epoch != user.delta_epoch:
                    return _sync_state_gone()
                offset = int(offset_text or 0)
            else:
                select = _select(request)
                if deltatoken:
                    try:
                        token = json.loads(base64.urlsafe_b64decode(deltatoken + "=" * (-len(deltatoken) % 4)))
                        since, epoch, token_folder = int(token["s"]), int(token["e"]), str(token["f"])
                        select = token.get("sel") or None
                    except (ValueError, KeyError, TypeError, binascii.Error):
                        return graph_error(400, "BadRequest", "The delta token is malformed.")
                    if epoch != user.delta_epoch or token_folder != folder.id or token.get("u") != user.id:
                        return _sync_state_gone()
                    changed = sorted(((seq, mid) for mid, seq in folder.changes.items() if seq > since))
                    ids = [mid for _, mid in changed]
                    removed = {mid for mid in ids
                               if mid not in user.messages or user.messages[mid].folder_id != folder.id}
                else:
                    current = [m for m in user.messages.values() if m.folder_id == folder.id]
                    current.sort(key=lambda m: (m.data["receivedDateTime"], m.id), reverse=True)
                    ids, removed = [m.id for m in current], set()
                round_id = secrets.token_urlsafe(12)
                delta_round = DeltaRound(user.id, folder.id, user.delta_epoch, ids, removed, self.state.seq,
                                         select, page_size)
                self.state.delta_rounds[round_id] = delta_round
                offset = 0
            chunk = delta_round.ids[offset:offset + delta_round.page_size]
            value: list[dict[str, Any]] = []
            for mid in chunk:
                message: Message | None = user.messages.get(mid)
                if mid in delta_round.removed or message is None or message.folder_id != folder.id:
                    value.append({"@odata.type": "#microsoft.graph.message", "id": mid,
                                  "@removed": {"reason": "deleted"}})
                else:
                    item = {"@odata.type": "#microsoft.graph.message"}
                    item.update(mailbox.render_message(message, delta_round.select))
                    value.append(item)
            body: dict[str, Any] = {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
                "value": value,
            }
            next_offset = offset + len(chunk)
            if next_offset < len(delta_round.ids):
                body["@odata.nextLink"] = f"{link_base}?$skiptoken={round_id}.{next_offset}"
            else:
                self.state.delta_rounds.pop(round_id, None)
                token_json = json.dumps({"u": user.id, "f": folder.id, "s": delta_round.snapshot_seq,
                                         "e": delta_round.epoch, "sel": delta_round.select}, separators=(",", ":"))
                encoded = base64.urlsafe_b64encode(token_json.encode()).decode().rstrip("=")
                body["@odata.deltaLink"] = f"{link_base}?$deltatoken={encoded}"
        return Response.json(200, body, {"Preference-Applied": f"odata.maxpagesize={delta_round.page_size}"})
