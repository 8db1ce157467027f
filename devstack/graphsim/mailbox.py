"""Mailbox changes: the one place where messages are created, changed, moved and deleted.

Graph requests and the control API both go through these functions, so that every
change is recorded for delta queries (per-folder change sequence numbers) and turned
into :class:`MailChange` records that the notifier matches against subscriptions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from .state import Folder, Message, SimState, User, graph_time, new_graph_id, utcnow

CREATED, UPDATED, DELETED = "created", "updated", "deleted"


@dataclass(frozen=True)
class MailChange:
    user_id: str
    folder_id: str
    message_id: str
    change_type: str  # created | updated | deleted
    etag: str


def _address(value: Any, fallback_name: str | None = None) -> dict[str, Any]:
    """Accept "a@b", {"address", "name"} or a Graph recipient and return a Graph recipient."""
    if isinstance(value, dict) and "emailAddress" in value:
        return value
    if isinstance(value, dict):
        address = str(value.get("address", ""))
        return {"emailAddress": {"name": str(value.get("name") or address), "address": address}}
    address = str(value or "")
    return {"emailAddress": {"name": fallback_name or address, "address": address}}


def _touch(state: SimState, user: User, message: Message, folder_id: str) -> int:
    seq = state.next_seq()
    folder = user.folders[folder_id]
    folder.changes[message.id] = seq
    return seq


def _new_change_key() -> str:
    return "CQAAABYAAAA" + secrets.token_urlsafe(12)


def create_message(state: SimState, user: User, folder: Folder, fields: dict[str, Any]) -> tuple[Message, MailChange]:
    """Deliver a new message into ``folder`` as arriving mail."""
    now = utcnow()
    message_id = new_graph_id("AAMkAGI2THVSAAA")
    body = fields.get("body", "")
    if isinstance(body, dict):
        body_obj = {"contentType": str(body.get("contentType", "text")), "content": str(body.get("content", ""))}
    else:
        body_obj = {"contentType": "text", "content": str(body)}
    sender = _address(fields.get("from") or "sender@fabrikam.test")
    to = fields.get("toRecipients") or [user.user_principal_name]
    change_key = _new_change_key()
    data: dict[str, Any] = {
        "id": message_id,
        "createdDateTime": graph_time(now),
        "lastModifiedDateTime": graph_time(now),
        "changeKey": change_key,
        "categories": list(fields.get("categories") or []),
        "receivedDateTime": graph_time(now),
        "sentDateTime": graph_time(now),
        "hasAttachments": False,
        "internetMessageId": f"<{secrets.token_hex(12)}@fabrikam.test>",
        "subject": str(fields.get("subject", "")),
        "bodyPreview": body_obj["content"][:255],
        "importance": str(fields.get("importance", "normal")),
        "parentFolderId": folder.id,
        "conversationId": new_graph_id("AAQkAGI2"),
        "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False,
        "isRead": bool(fields.get("isRead", False)),
        "isDraft": False,
        "webLink": f"https://outlook.office365.com/owa/?ItemID={message_id}&exvsurl=1&viewmodel=ReadMessageItem",
        "inferenceClassification": "focused",
        "body": body_obj,
        "sender": sender,
        "from": sender,
        "toRecipients": [_address(r) for r in to],
        "ccRecipients": [_address(r) for r in fields.get("ccRecipients") or []],
        "bccRecipients": [],
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
    }
    message = Message(message_id, folder.id, data, change_key)
    user.messages[message_id] = message
    _touch(state, user, message, folder.id)
    return message, MailChange(user.id, folder.id, message_id, CREATED, message.etag())


UPDATABLE = {"isRead", "categories", "subject", "importance", "flag", "inferenceClassification", "body"}


def update_message(state: SimState, user: User, message: Message, patch: dict[str, Any]) -> MailChange:
    for key, value in patch.items():
        if key == "body" and isinstance(value, str):
            value = {"contentType": "text", "content": value}
        message.data[key] = value
        if key == "body":
            message.data["bodyPreview"] = str(value.get("content", ""))[:255]
    message.change_key = _new_change_key()
    message.data["changeKey"] = message.change_key
    message.data["lastModifiedDateTime"] = graph_time(utcnow())
    _touch(state, user, message, message.folder_id)
    return MailChange(user.id, message.folder_id, message.id, UPDATED, message.etag())


def delete_message(state: SimState, user: User, message: Message) -> MailChange:
    del user.messages[message.id]
    _touch(state, user, message, message.folder_id)
    return MailChange(user.id, message.folder_id, message.id, DELETED, message.etag())


def move_message(state: SimState, user: User, message: Message, target: Folder) -> tuple[Message, list[MailChange]]:
    """Move as Exchange does: the item gets a new id in the target folder."""
    if target.id == message.folder_id:
        return message, []
    source_id = message.folder_id
    del user.messages[message.id]
    _touch(state, user, message, source_id)
    removed = MailChange(user.id, source_id, message.id, DELETED, message.etag())
    new_id = new_graph_id("AAMkAGI2THVSAAA")
    data = dict(message.data)
    data["id"] = new_id
    data["parentFolderId"] = target.id
    moved = Message(new_id, target.id, data, _new_change_key())
    moved.data["changeKey"] = moved.change_key
    moved.data["lastModifiedDateTime"] = graph_time(utcnow())
    user.messages[new_id] = moved
    _touch(state, user, moved, target.id)
    return moved, [removed, MailChange(user.id, target.id, new_id, CREATED, moved.etag())]


_FIELD_NAMES = {name.lower(): name for name in (
    "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories", "receivedDateTime", "sentDateTime",
    "hasAttachments", "internetMessageId", "subject", "bodyPreview", "importance", "parentFolderId",
    "conversationId", "isDeliveryReceiptRequested", "isReadReceiptRequested", "isRead", "isDraft", "webLink",
    "inferenceClassification", "body", "sender", "from", "toRecipients", "ccRecipients", "bccRecipients",
    "replyTo", "flag",
)}


def render_message(message: Message, select: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"@odata.etag": message.etag()}
    if select:
        out["id"] = message.id
        for name in select:
            key = _FIELD_NAMES.get(name.strip().lower())
            if key is not None and key in message.data:
                out[key] = message.data[key]
        return out
    out.update(message.data)
    return out
