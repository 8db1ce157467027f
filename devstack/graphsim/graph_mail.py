"""Graph messages: list, read, update, move, delete, permanentDelete, attachments, id translation.

Paths: ``/me/messages`` (the whole mailbox) and ``/me/mailFolders/{id}/messages`` (one
folder, reached through ``graph_folders``), then ``/{id}``, ``/{id}/move``,
``/{id}/permanentDelete``, ``/{id}/attachments[/{aid}[/$value]]``. Preferences:
``IdType="ImmutableId"`` (ids in answers), ``outlook.body-content-type`` (body type).
Pages: ``$top`` (default 10, at most 1,000), ``$skip``, ``@odata.nextLink``.
"""

from __future__ import annotations

from typing import Any

from . import mailbox
from .context import SimContext
from .graph_common import (
    MAIL_READ,
    MAIL_WRITE,
    Caller,
    Preferences,
    access_denied,
    collection,
    item_not_found,
    json_object,
    next_link,
    not_supported,
    page_bounds,
    select_fields,
    select_of,
)
from .graph_query import InvalidQuery, check_filter_and_order, parse_filter, parse_orderby, sort_messages
from .mailstore import Folder, Message
from .state import User
from .wire import Request, Response, graph_error

LIST_OPTIONS = ("$filter", "$orderby", "$select", "$expand", "$count")
ID_TYPES = ("restId", "restImmutableEntryId")


class MailApi:
    def __init__(self, ctx: SimContext) -> None:
        self.sim = ctx
        self.state = ctx.state

    def handle(self, request: Request, caller: Caller, user: User, rest: list[str],
               folder: Folder | None = None) -> Response:
        """``rest`` starts at ``messages``; ``folder`` set when the path came through a folder."""
        if not caller.has(MAIL_READ):
            return access_denied()
        if len(rest) == 1:
            if request.method == "GET":
                return self.list_messages(request, user, folder)
            return not_supported()
        if rest[1].lower() == "delta":
            return graph_error(400, "BadRequest", "Delta of messages is served per mail folder: "
                                                  "/me/mailFolders/{id}/messages/delta.")
        return self._message_item(request, caller, user, rest[1:], folder)

    # collections -----------------------------------------------------------------------------
    def list_messages(self, request: Request, user: User, folder: Folder | None) -> Response:
        prefs = Preferences.of(request)
        bounds = page_bounds(request, prefs.max_page_size or 10)
        if isinstance(bounds, Response):
            return bounds
        top, skip = bounds
        try:
            filtered, predicate = parse_filter(request.query["$filter"]) if "$filter" in request.query \
                else ([], None)
            order = parse_orderby(request.query["$orderby"]) if "$orderby" in request.query else []
            check_filter_and_order(filtered, order)
        except InvalidQuery as exc:
            code = "InefficientFilter" if "too complex" in str(exc) else "BadRequest"
            return graph_error(400, code, str(exc))
        select = select_of(request)
        expand = "attachments" in request.query.get("$expand", "").lower()
        with self.state.lock:
            box = user.mailbox
            items = box.in_folder(folder) if folder is not None else \
                [m for m in box.messages.values() if box.in_view(m.folder_id)]
            if predicate is not None:
                items = [m for m in items if predicate(m)]
            sort_messages(items, order)
            page = [mailbox.render_message(m, select, immutable=prefs.immutable_ids, body_type=prefs.body_type,
                                           expand_attachments=expand) for m in items[skip:skip + top]]
        extra: dict[str, Any] = {}
        if request.query.get("$count", "").lower() == "true":
            extra["@odata.count"] = len(items)
        if skip + top < len(items):
            extra["@odata.nextLink"] = next_link(self.sim.base_url, request, top, skip + top, LIST_OPTIONS)
        return collection(f"users('{user.id}')/messages", page, extra, prefs.applied())

    # one message -----------------------------------------------------------------------------
    def _message_item(self, request: Request, caller: Caller, user: User, rest: list[str],
                      folder: Folder | None) -> Response:
        prefs = Preferences.of(request)
        method, action = request.method, rest[1].lower() if len(rest) > 1 else None
        with self.state.lock:
            message = user.mailbox.message(rest[0])
            if message is None or (folder is not None and message.folder_id != folder.id):
                return item_not_found()
            if action == "attachments" and method == "GET":
                return self._attachments(request, message, rest[2:])
            if action is None and method == "GET":
                expand = "attachments" in request.query.get("$expand", "").lower()
                rendered = mailbox.render_message(message, select_of(request), immutable=prefs.immutable_ids,
                                                  body_type=prefs.body_type, expand_attachments=expand)
                return Response.json(200, rendered, prefs.applied())
            if not caller.has(MAIL_WRITE):
                return access_denied()
            if action is None and method == "PATCH":
                return self._update(request, user, message, prefs)
            if action is None and method == "DELETE":
                return self._delete(user, message)
            if action == "move" and method == "POST" and len(rest) == 2:
                return self._move(request, user, message, prefs)
            if action == "permanentdelete" and method == "POST" and len(rest) == 2:
                self.sim.delivery.publish_changes([mailbox.delete_message(self.state, user, message)])
                return Response.empty(204)
        return not_supported()

    def _update(self, request: Request, user: User, message: Message, prefs: Preferences) -> Response:
        patch = json_object(request)
        if isinstance(patch, Response):
            return patch
        unknown = sorted(k for k in patch if k not in mailbox.UPDATABLE)
        if unknown:
            return graph_error(400, "ErrorInvalidProperty", f"The property '{unknown[0]}' cannot be updated.")
        try:
            mailbox.check_patch(patch)
        except mailbox.InvalidMessage as exc:
            return graph_error(400, "ErrorInvalidPropertyValue", str(exc))
        change = mailbox.update_message(self.state, user, message, patch)
        self.sim.delivery.publish_changes([change])
        rendered = mailbox.render_message(message, immutable=prefs.immutable_ids, body_type=prefs.body_type)
        return Response.json(200, rendered, prefs.applied())

    def _delete(self, user: User, message: Message) -> Response:
        """Outlook's delete: into Deleted Items; from there, into the recoverable items (gone from view)."""
        box = user.mailbox
        deleted = box.folder("deleteditems")
        target = deleted if deleted is not None and message.folder_id != deleted.id \
            else box.folder("recoverableitemsdeletions")
        assert target is not None
        self.sim.delivery.publish_changes(mailbox.move_message(self.state, user, message, target))
        return Response.empty(204)

    def _move(self, request: Request, user: User, message: Message, prefs: Preferences) -> Response:
        body = json_object(request)
        if isinstance(body, Response):
            return body
        # Graph's metadata names the parameter DestinationId (the SDKs send that); the docs say destinationId.
        destination = next((v for k, v in body.items() if k.lower() == "destinationid"), None)
        if not isinstance(destination, str) or not destination:
            return graph_error(400, "ErrorInvalidRequest", "The destinationId parameter is required.")
        target = user.mailbox.folder(destination)
        if target is None:
            return graph_error(404, "ErrorItemNotFound", "The specified folder could not be found in the store.")
        self.sim.delivery.publish_changes(mailbox.move_message(self.state, user, message, target))
        rendered = mailbox.render_message(message, immutable=prefs.immutable_ids, body_type=prefs.body_type)
        return Response.json(201, rendered, prefs.applied())

    def _attachments(self, request: Request, message: Message, rest: list[str]) -> Response:
        if not rest:
            select = select_of(request)
            value = [select_fields(a.public(), select) for a in message.attachments]
            return collection(f"users/messages('{message.id}')/attachments", value)
        found = next((a for a in message.attachments if a.id == rest[0]), None)
        if found is None:
            return item_not_found()
        if len(rest) == 1:
            return Response.json(200, found.public())
        if len(rest) == 2 and rest[1] == "$value":
            return Response(200, found.content, {"Content-Type": found.content_type})
        return not_supported()

    # translateExchangeIds ------------------------------------------------------------------------
    def translate_ids(self, request: Request, caller: Caller, user: User, rest: list[str]) -> Response:
        """``POST /me/translateExchangeIds`` between REST ids and immutable ids."""
        if len(rest) != 1 or request.method != "POST":
            return not_supported()
        if not caller.has(MAIL_READ):
            return access_denied()
        body = json_object(request)
        if isinstance(body, Response):
            return body
        ids, source, target = body.get("inputIds"), body.get("sourceIdType"), body.get("targetIdType")
        if not isinstance(ids, list) or source not in ID_TYPES or target not in ID_TYPES:
            return graph_error(400, "ErrorInvalidRequest", "inputIds (a list), sourceIdType and targetIdType "
                                                           f"({', '.join(ID_TYPES)}) are required.")
        value = []
        with self.state.lock:
            for given in ids:
                message = user.mailbox.message(str(given))
                if message is None:
                    value.append({"sourceId": given, "errorDetails": {"code": "ErrorItemNotFound"}})
                else:
                    value.append({"sourceId": given, "targetId": message.id_for(target == "restImmutableEntryId")})
        return collection("Collection(microsoft.graph.convertIdResult)", value)

