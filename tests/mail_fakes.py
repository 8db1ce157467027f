"""Fakes of the mail ports: Graph's mail API (``GraphMail``) and the mail command log.

``FakeMailGraph`` extends the fake Graph of tests/fakes.py with a mailbox per account that
keeps Graph's documented behaviour (learn.microsoft.com/graph/api/resources/message):
- the well-known folders (inbox, archive, deleteditems, junkemail, drafts, sentitems,
  msgfolderroot) and child folders; a folder is named by id or well-known name;
- immutable ids (the port always asks for them): a moved message keeps its id;
- DELETE moves to Deleted Items (a message already there is deleted for good),
  ``permanentDelete`` removes it;
- lists newest first, ``receivedDateTime ge since``, ``$top`` and a nextLink;
- a write without ``Mail.ReadWrite`` in ``granted`` is a 403, a token other than the one in
  ``valid_tokens`` a 401;
- ``$batch`` takes at most 20 requests; ``throttle_inner`` makes the next N requests inside
  batches answer 429 with ``Retry-After``.
"""

from __future__ import annotations

import copy
import datetime as dt
import html
import itertools
import re
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

from shared.errors import GraphError, NotFoundError, PayloadTooLargeError
from shared.ports import (
    MAX_BATCH_REQUESTS,
    AttachmentContent,
    BatchRequest,
    BatchResponse,
    CommandRecord,
    GraphAuth,
    JsonObject,
    MessagePage,
)
from tests.fakes import EPOCH, FakeGraphApi

ENDPOINT = "https://graph.example.test/v1.0"
WELL_KNOWN = ("inbox", "archive", "deleteditems", "junkemail", "drafts", "sentitems", "msgfolderroot")
_ids = itertools.count(1)


def _not_found(what: str) -> NotFoundError:
    return NotFoundError(f"Graph 404 ErrorItemNotFound: {what} not found")


class _Mailbox:
    def __init__(self, account_id: str) -> None:
        short = account_id.split(".")[0][-6:]
        self.folders: dict[str, JsonObject] = {}
        self.well_known: dict[str, str] = {}
        for name in WELL_KNOWN:
            folder_id = f"AQMk-{name}-{short}"
            self.well_known[name] = folder_id
            parent = None if name == "msgfolderroot" else f"AQMk-msgfolderroot-{short}"
            self.folders[folder_id] = {"id": folder_id, "displayName": name.title(), "parentFolderId": parent}
        self.messages: dict[str, JsonObject] = {}
        self.attachments: dict[str, list[JsonObject]] = {}

    def folder_id(self, ref: str) -> str | None:
        if ref in self.folders:
            return ref
        return self.well_known.get(ref.lower())


class FakeMailGraph(FakeGraphApi):
    def __init__(self, clock: Any = None) -> None:
        super().__init__(clock)
        self.boxes: dict[str, _Mailbox] = {}
        self.granted: dict[str, set[str]] = {}  # account id -> scopes of its token (default: read and write)
        self.batches: list[list[BatchRequest]] = []
        self.throttle_inner = 0
        self.throttle_retry_after = 2.0
        self.inner_log: list[tuple[str, str]] = []  # (method, url) of every request inside a batch

    # --- building a mailbox -------------------------------------------------------------------
    def box(self, account_id: str) -> _Mailbox:
        with self._lock:
            return self.boxes.setdefault(account_id, _Mailbox(account_id))

    def add_message(
        self,
        account_id: str,
        subject: str = "Hello",
        *,
        folder: str = "inbox",
        received: dt.datetime | None = None,
        body_html: str | None = None,
        attachments: Sequence[tuple[str, str, bytes]] = (),
        **fields: Any,
    ) -> JsonObject:
        box = self.box(account_id)
        message_id = f"AAkALg-immutable-{next(_ids)}="
        content = body_html if body_html is not None else f"<html><body><p>Body of {html.escape(subject)}</p></body></html>"
        message: JsonObject = {
            "id": message_id,
            "subject": subject,
            "from": {"emailAddress": {"name": "Sender", "address": "sender@fabrikam.test"}},
            "toRecipients": [{"emailAddress": {"name": "Me", "address": "me@contoso.test"}}],
            "ccRecipients": [],
            "receivedDateTime": (received or self.clock.now()).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bodyPreview": re.sub(r"<[^>]+>", "", content)[:255],
            "body": {"contentType": "html", "content": content},
            "hasAttachments": bool(attachments),
            "parentFolderId": box.folder_id(folder),
            "isRead": False,
            "importance": "normal",
            "categories": [],
            "flag": {"flagStatus": "notFlagged"},
            "conversationId": f"conv-{message_id}",
            "internetMessageId": f"<{message_id}@fabrikam.test>",
            "webLink": f"https://outlook.office365.com/owa/?ItemID={quote(message_id)}",
            "changeKey": "ck1",
            **fields,
        }
        with self._lock:
            box.messages[message_id] = message
            box.attachments[message_id] = [
                {"id": f"att-{next(_ids)}", "name": name, "contentType": ctype, "size": len(data), "_bytes": data}
                for name, ctype, data in attachments
            ]
        return copy.deepcopy(message)

    def add_folder(self, account_id: str, name: str, parent: str = "msgfolderroot") -> JsonObject:
        box = self.box(account_id)
        with self._lock:
            parent_id = box.folder_id(parent)
            folder_id = f"AQMk-custom-{next(_ids)}"
            box.folders[folder_id] = {"id": folder_id, "displayName": name, "parentFolderId": parent_id}
            return dict(box.folders[folder_id])

    def mail_calls(self) -> int:
        """Graph requests the mail port made (a batch counts once)."""
        return sum(1 for method, _ in self.calls if method in _MAIL_METHODS)

    # --- rules -------------------------------------------------------------------------
    def _may_write(self, auth: GraphAuth) -> None:
        if "Mail.ReadWrite" not in self.granted.get(auth.account_id, {"Mail.ReadWrite"}):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    def _message(self, box: _Mailbox, message_id: str) -> JsonObject:
        found = box.messages.get(message_id)
        if found is None:
            raise _not_found("message")
        return found

    def _view(self, box: _Mailbox, message: JsonObject) -> JsonObject:
        view = copy.deepcopy(message)
        return view

    def _folder_json(self, box: _Mailbox, folder: JsonObject) -> JsonObject:
        children = [f for f in box.folders.values() if f["parentFolderId"] == folder["id"]]
        items = [m for m in box.messages.values() if m["parentFolderId"] == folder["id"]]
        return {
            **folder,
            "childFolderCount": len(children),
            "totalItemCount": len(items),
            "unreadItemCount": sum(1 for m in items if not m["isRead"]),
            "isHidden": False,
        }

    # --- GraphMail ---------------------------------------------------------------------
    def get_message(self, auth: GraphAuth, message_id: str, *, body_type: str = "html") -> JsonObject:
        self._enter("get_message", auth)
        box = self.box(auth.account_id)
        with self._lock:
            view = self._view(box, self._message(box, message_id))
        if body_type == "text":
            text = html.unescape(re.sub(r"<[^>]+>", "", view["body"]["content"])).strip()
            view["body"] = {"contentType": "text", "content": text}
        return view

    def list_attachments(self, auth: GraphAuth, message_id: str) -> list[JsonObject]:
        self._enter("list_attachments", auth)
        box = self.box(auth.account_id)
        with self._lock:
            self._message(box, message_id)
            return [{k: v for k, v in a.items() if k != "_bytes"} for a in box.attachments.get(message_id, [])]

    def get_attachment_content(
        self, auth: GraphAuth, message_id: str, attachment_id: str, *, max_bytes: int
    ) -> AttachmentContent:
        self._enter("get_attachment_content", auth)
        box = self.box(auth.account_id)
        with self._lock:
            self._message(box, message_id)
            for attachment in box.attachments.get(message_id, []):
                if attachment["id"] == attachment_id:
                    if attachment["size"] > max_bytes:
                        raise PayloadTooLargeError(f"the attachment has {attachment['size']} bytes")
                    return AttachmentContent(attachment["name"], attachment["contentType"], attachment["_bytes"])
        raise _not_found("attachment")

    def list_messages(
        self,
        auth: GraphAuth,
        *,
        folder: str = "inbox",
        since: dt.datetime | None = None,
        top: int = 50,
        link: str | None = None,
    ) -> MessagePage:
        self._enter("list_messages", auth)
        box = self.box(auth.account_id)
        skip = 0
        if link is not None:
            parsed = urlparse(link)
            query = parse_qs(parsed.query)
            folder = unquote(parsed.path.split("/mailFolders/")[1].split("/")[0])
            skip, top = int(query["skip"][0]), int(query["top"][0])
            since = dt.datetime.fromisoformat(query["since"][0]) if "since" in query else None
        with self._lock:
            folder_id = box.folder_id(folder)
            if folder_id is None:
                raise _not_found("folder")
            items = [m for m in box.messages.values() if m["parentFolderId"] == folder_id]
            if since is not None:
                items = [
                    m for m in items
                    if dt.datetime.fromisoformat(m["receivedDateTime"].replace("Z", "+00:00")) >= since
                ]
            items.sort(key=lambda m: m["receivedDateTime"], reverse=True)
            page = [self._view(box, m) for m in items[skip : skip + top]]
        for item in page:
            item.pop("body", None)
        next_link = None
        if skip + top < len(items):
            extra = f"&since={quote(since.isoformat())}" if since else ""
            next_link = f"{ENDPOINT}/me/mailFolders/{quote(folder)}/messages?skip={skip + top}&top={top}{extra}"
        return MessagePage(page, next_link)

    def list_folders(self, auth: GraphAuth, parent_id: str | None = None) -> list[JsonObject]:
        self._enter("list_folders", auth)
        box = self.box(auth.account_id)
        with self._lock:
            parent = box.folder_id(parent_id or "msgfolderroot")
            if parent is None:
                raise _not_found("folder")
            return [self._folder_json(box, f) for f in box.folders.values() if f["parentFolderId"] == parent]

    def move_message(self, auth: GraphAuth, message_id: str, destination: str) -> JsonObject:
        self._enter("move_message", auth)
        return self._move(auth, message_id, destination)

    def _move(self, auth: GraphAuth, message_id: str, destination: str) -> JsonObject:
        self._may_write(auth)
        box = self.box(auth.account_id)
        with self._lock:
            message = self._message(box, message_id)
            target = box.folder_id(destination)
            if target is None:
                raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            message["parentFolderId"] = target  # immutable ids: the id stays
            return self._view(box, message)

    def update_message(self, auth: GraphAuth, message_id: str, changes: JsonObject) -> JsonObject:
        self._enter("update_message", auth)
        return self._update(auth, message_id, changes)

    def _update(self, auth: GraphAuth, message_id: str, changes: JsonObject) -> JsonObject:
        self._may_write(auth)
        box = self.box(auth.account_id)
        with self._lock:
            message = self._message(box, message_id)
            message.update({k: v for k, v in changes.items() if not k.startswith("@odata.")})
            return self._view(box, message)

    def delete_message(self, auth: GraphAuth, message_id: str, *, permanent: bool = False) -> None:
        self._enter("delete_message", auth)
        self._delete(auth, message_id, permanent)

    def _delete(self, auth: GraphAuth, message_id: str, permanent: bool) -> None:
        self._may_write(auth)
        box = self.box(auth.account_id)
        with self._lock:
            message = self._message(box, message_id)
            deleted = box.well_known["deleteditems"]
            if permanent or message["parentFolderId"] == deleted:
                del box.messages[message_id]
            else:
                message["parentFolderId"] = deleted

    def batch(self, auth: GraphAuth, requests: Sequence[BatchRequest]) -> list[BatchResponse]:
        self._enter("batch", auth)
        if len(requests) > MAX_BATCH_REQUESTS:
            raise GraphError(400, "BadRequest", "A batch request may have at most 20 requests.")
        with self._lock:
            self.batches.append(list(requests))
        return [self._inner(auth, request) for request in requests]

    def _inner(self, auth: GraphAuth, request: BatchRequest) -> BatchResponse:
        with self._lock:
            self.inner_log.append((request.method, request.url))
            throttled = self.throttle_inner > 0
            if throttled:
                self.throttle_inner -= 1
        if throttled:
            return BatchResponse(request.id, 429, {"error": {"code": "ApplicationThrottled"}}, self.throttle_retry_after)
        if self.valid_tokens is not None and self.valid_tokens.get(auth.account_id) != auth.access_token:
            return BatchResponse(request.id, 401, {"error": {"code": "InvalidAuthenticationToken"}})
        path = urlparse(request.url).path
        parts = [unquote(p) for p in path.strip("/").split("/")]
        try:
            if parts[:2] == ["me", "mailFolders"] and len(parts) == 3 and request.method == "GET":
                box = self.box(auth.account_id)
                folder_id = box.folder_id(parts[2])
                if folder_id is None:
                    raise _not_found("folder")
                return BatchResponse(request.id, 200, {"id": folder_id})
            if parts[:2] == ["me", "messages"] and len(parts) >= 3:
                message_id = parts[2]
                action = parts[3] if len(parts) > 3 else None
                body = request.body or {}
                if action == "move" and request.method == "POST":
                    return BatchResponse(request.id, 201, self._move(auth, message_id, str(body.get("destinationId"))))
                if action == "permanentDelete" and request.method == "POST":
                    self._delete(auth, message_id, True)
                    return BatchResponse(request.id, 204)
                if action is None and request.method == "DELETE":
                    self._delete(auth, message_id, False)
                    return BatchResponse(request.id, 204)
                if action is None and request.method == "PATCH":
                    return BatchResponse(request.id, 200, self._update(auth, message_id, body))
            return BatchResponse(request.id, 400, {"error": {"code": "BadRequest", "message": "unsupported"}})
        except NotFoundError:
            return BatchResponse(request.id, 404, {"error": {"code": "ErrorItemNotFound", "message": "not found"}})
        except GraphError as error:
            return BatchResponse(request.id, error.status, {"error": {"code": error.code, "message": str(error)}})


_MAIL_METHODS = {
    "get_message",
    "list_attachments",
    "get_attachment_content",
    "list_messages",
    "list_folders",
    "move_message",
    "update_message",
    "delete_message",
    "batch",
}


class FakeMailCommandLog:
    """``MailCommandLog`` in memory, with the same ETag rules as the table; ``writes`` counts
    the round trips a table would take (a batch's records in one transaction)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[tuple[str, str], CommandRecord] = {}
        self._etags = itertools.count(1)
        self.writes = 0

    def claim(self, account_id: str, command_ids: Sequence[str], now: dt.datetime) -> dict[str, CommandRecord]:
        with self._lock:
            self.writes += 1
            claimed: dict[str, CommandRecord] = {}
            for command_id in dict.fromkeys(command_ids):
                if (account_id, command_id) in self.items:
                    continue
                record = CommandRecord(command_id, "claimed", now, account_id, etag=f"e{next(self._etags)}")
                self.items[(account_id, command_id)] = record
                claimed[command_id] = copy.deepcopy(record)
            return claimed

    def get(self, account_id: str, command_id: str) -> CommandRecord | None:
        with self._lock:
            found = self.items.get((account_id, command_id))
            return copy.deepcopy(found) if found is not None else None

    def save(self, records: Sequence[CommandRecord]) -> list[CommandRecord]:
        with self._lock:
            self.writes += 1
            written = []
            for record in records:
                key = (record.account_id, record.command_id)
                current = self.items.get(key)
                if current is None or current.etag != record.etag:
                    continue
                record.etag = f"e{next(self._etags)}"
                self.items[key] = copy.deepcopy(record)
                written.append(record)
            return written

    def release(self, records: Sequence[CommandRecord]) -> None:
        with self._lock:
            for record in records:
                self.items.pop((record.account_id, record.command_id), None)

    def prune(self, claimed_before: dt.datetime) -> int:
        with self._lock:
            old = [key for key, record in self.items.items() if record.claimed_at < claimed_before]
            for key in old:
                del self.items[key]
            return len(old)


__all__ = ["EPOCH", "FakeMailCommandLog", "FakeMailGraph"]
