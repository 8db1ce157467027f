"""Mailbox changes: the one place where messages are created, changed, moved and deleted.

Graph requests and the control API both go through these functions, so that every
change is recorded for delta queries (per-folder change sequence numbers) and turned
into :class:`MailChange` records that the notifier matches against subscriptions.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import secrets
from dataclasses import dataclass
from typing import Any

from .mailstore import IMMUTABLE_ID_PREFIX, REST_ID_PREFIX, Attachment, Folder, Message, new_graph_id
from .state import SimState, User, graph_time, parse_graph_time, utcnow

CREATED, UPDATED, DELETED = "created", "updated", "deleted"
IMPORTANCE = ("low", "normal", "high")
FLAG_STATUS = ("notFlagged", "complete", "flagged")
BODY_TYPES = ("text", "html")


@dataclass(frozen=True)
class MailChange:
    user_id: str
    folder_id: str
    message_key: str  # the immutable id
    rest_id: str  # the REST id the message had in that folder
    change_type: str  # created | updated | deleted
    etag: str

    def message_id(self, immutable: bool) -> str:
        return self.message_key if immutable else self.rest_id


class InvalidMessage(ValueError):
    """A field of a message to create or update has a wrong type or value (a 400)."""


def _address(value: Any, fallback_name: str | None = None) -> dict[str, Any]:
    """Accept "a@b", {"address", "name"} or a Graph recipient and return a Graph recipient."""
    if isinstance(value, dict) and isinstance(value.get("emailAddress"), dict):
        inner = value["emailAddress"]
        return {"emailAddress": {"name": str(inner.get("name") or inner.get("address") or ""),
                                 "address": str(inner.get("address") or "")}}
    if isinstance(value, dict):
        address = str(value.get("address", ""))
        return {"emailAddress": {"name": str(value.get("name") or address), "address": address}}
    if not isinstance(value, str):
        raise InvalidMessage("a recipient must be an address or {\"address\", \"name\"}")
    return {"emailAddress": {"name": fallback_name or value, "address": value}}


def _recipients(value: Any, name: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidMessage(f"{name} must be a list of addresses")
    return [_address(r) for r in value]


def html_to_text(content: str) -> str:
    """What Outlook gives for ``outlook.body-content-type="text"`` of an HTML body, roughly."""
    without_head = re.sub(r"(?is)<(head|style|script)\b.*?</\1>", "", content)
    with_breaks = re.sub(r"(?i)<br\s*/?>|</(p|div|tr|li|h[1-6])>", "\n", without_head)
    text = html.unescape(re.sub(r"<[^>]+>", "", with_breaks))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def text_to_html(content: str) -> str:
    return ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head><body>'
            f"<div>{html.escape(content).replace(chr(10), '<br>')}</div></body></html>")


def _body(fields: dict[str, Any]) -> dict[str, str]:
    body = fields.get("body", "")
    content_type = fields.get("bodyContentType")
    if isinstance(body, dict):
        content_type = content_type or body.get("contentType") or "text"
        content = body.get("content", "")
    else:
        content = body
    content_type = str(content_type or "text").lower()
    if content_type not in BODY_TYPES:
        raise InvalidMessage("bodyContentType must be text or html")
    if not isinstance(content, str):
        raise InvalidMessage("body must be a string or {\"contentType\", \"content\"}")
    return {"contentType": content_type, "content": content}


def _preview(body: dict[str, str]) -> str:
    text = body["content"] if body["contentType"] == "text" else html_to_text(body["content"])
    return " ".join(text.split())[:255]


def _attachments(value: Any) -> list[Attachment]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidMessage("attachments must be a list")
    out = []
    now = graph_time(utcnow())
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise InvalidMessage("each attachment needs a name")
        try:
            content = base64.b64decode(str(item.get("contentBytes", "")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidMessage(f"attachment {item['name']!r}: contentBytes is not base64") from exc
        out.append(Attachment(new_graph_id("AAMkAGI2ATT"), item["name"],
                              str(item.get("contentType") or "application/octet-stream"), content, now,
                              bool(item.get("isInline", False))))
    return out


def check_patch(patch: dict[str, Any]) -> None:
    """Graph's answers to wrong values of the fields a PATCH may change."""
    if "isRead" in patch and not isinstance(patch["isRead"], bool):
        raise InvalidMessage("isRead must be true or false")
    if "categories" in patch and (not isinstance(patch["categories"], list)
                                  or not all(isinstance(c, str) for c in patch["categories"])):
        raise InvalidMessage("categories must be a list of strings")
    if "importance" in patch and patch["importance"] not in IMPORTANCE:
        raise InvalidMessage(f"importance must be one of {', '.join(IMPORTANCE)}")
    if "flag" in patch:
        flag = patch["flag"]
        if not isinstance(flag, dict) or flag.get("flagStatus", "notFlagged") not in FLAG_STATUS:
            raise InvalidMessage(f"flag.flagStatus must be one of {', '.join(FLAG_STATUS)}")
    if "subject" in patch and not isinstance(patch["subject"], str):
        raise InvalidMessage("subject must be a string")


def _touch(state: SimState, folder: Folder, message: Message) -> None:
    folder.changes[message.immutable_id] = state.next_seq()


def _new_change_key() -> str:
    return "CQAAABYAAAA" + secrets.token_urlsafe(12)


def create_message(state: SimState, user: User, folder: Folder, fields: dict[str, Any]) -> tuple[Message, MailChange]:
    """Deliver a new message into ``folder`` as arriving mail. Raises InvalidMessage."""
    now = utcnow()
    received = now
    if fields.get("receivedDateTime"):
        try:
            received = parse_graph_time(str(fields["receivedDateTime"]))
        except ValueError as exc:
            raise InvalidMessage("receivedDateTime must be an ISO 8601 time") from exc
    body = _body(fields)
    check_patch({k: fields[k] for k in ("isRead", "categories", "importance", "flag") if k in fields})
    rest_id, immutable_id = new_graph_id(REST_ID_PREFIX), new_graph_id(IMMUTABLE_ID_PREFIX)
    sender = _address(fields.get("from") or "sender@fabrikam.test")
    to = fields.get("toRecipients")
    attachments = _attachments(fields.get("attachments"))
    change_key = _new_change_key()
    data: dict[str, Any] = {
        "createdDateTime": graph_time(now),
        "lastModifiedDateTime": graph_time(now),
        "changeKey": change_key,
        "categories": list(fields.get("categories") or []),
        "receivedDateTime": graph_time(received),
        "sentDateTime": graph_time(received),
        "hasAttachments": any(not a.is_inline for a in attachments),
        "internetMessageId": str(fields.get("internetMessageId") or f"<{secrets.token_hex(12)}@fabrikam.test>"),
        "subject": str(fields.get("subject", "")),
        "bodyPreview": _preview(body),
        "importance": str(fields.get("importance", "normal")),
        "conversationId": str(fields.get("conversationId") or new_graph_id("AAQkAGI2")),
        "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False,
        "isRead": bool(fields.get("isRead", False)),
        "isDraft": False,
        "inferenceClassification": "focused",
        "body": body,
        "sender": sender,
        "from": sender,
        "toRecipients": _recipients(to if to is not None else [user.user_principal_name], "toRecipients"),
        "ccRecipients": _recipients(fields.get("ccRecipients"), "ccRecipients"),
        "bccRecipients": _recipients(fields.get("bccRecipients"), "bccRecipients"),
        "replyTo": [],
        "flag": dict(fields.get("flag") or {"flagStatus": "notFlagged"}),
    }
    message = Message(rest_id, immutable_id, folder.id, data, change_key, attachments)
    box = user.mailbox
    box.messages[immutable_id] = message
    box.rest_ids[rest_id] = immutable_id
    _touch(state, folder, message)
    return message, MailChange(user.id, folder.id, immutable_id, rest_id, CREATED, message.etag())


UPDATABLE = {"isRead", "categories", "subject", "importance", "flag", "inferenceClassification", "body"}


def update_message(state: SimState, user: User, message: Message, patch: dict[str, Any]) -> MailChange:
    for key, value in patch.items():
        if key == "body":
            value = _body({"body": value})
            message.data["bodyPreview"] = _preview(value)
        message.data[key] = value
    _new_version(message)
    folder = user.mailbox.folders[message.folder_id]
    _touch(state, folder, message)
    return MailChange(user.id, folder.id, message.immutable_id, message.id, UPDATED, message.etag())


def _new_version(message: Message) -> None:
    message.change_key = _new_change_key()
    message.data["changeKey"] = message.change_key
    message.data["lastModifiedDateTime"] = graph_time(utcnow())


def delete_message(state: SimState, user: User, message: Message) -> MailChange:
    """Remove the message from the mailbox (``permanentDelete``, or a delete from the control API)."""
    box = user.mailbox
    del box.messages[message.immutable_id]
    box.rest_ids.pop(message.id, None)
    folder = box.folders[message.folder_id]
    folder.departed[message.immutable_id] = message.id
    _touch(state, folder, message)
    return MailChange(user.id, folder.id, message.immutable_id, message.id, DELETED, message.etag())


def move_message(state: SimState, user: User, message: Message, target: Folder) -> list[MailChange]:
    """Move as Exchange does: a new REST id in the target folder, the same immutable id."""
    if target.id == message.folder_id:
        return []
    box = user.mailbox
    source = box.folders[message.folder_id]
    old_id, old_etag = message.id, message.etag()
    source.departed[message.immutable_id] = old_id
    _touch(state, source, message)
    removed = MailChange(user.id, source.id, message.immutable_id, old_id, DELETED, old_etag)
    box.rest_ids.pop(old_id, None)
    message.id = new_graph_id(REST_ID_PREFIX)
    box.rest_ids[message.id] = message.immutable_id
    message.folder_id = target.id
    _new_version(message)
    target.departed.pop(message.immutable_id, None)
    _touch(state, target, message)
    return [removed, MailChange(user.id, target.id, message.immutable_id, message.id, CREATED, message.etag())]


_FIELD_NAMES = {name.lower(): name for name in (
    "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories", "receivedDateTime", "sentDateTime",
    "hasAttachments", "internetMessageId", "subject", "bodyPreview", "importance", "parentFolderId",
    "conversationId", "isDeliveryReceiptRequested", "isReadReceiptRequested", "isRead", "isDraft", "webLink",
    "inferenceClassification", "body", "sender", "from", "toRecipients", "ccRecipients", "bccRecipients",
    "replyTo", "flag", "uniqueBody",
)}


def web_link(message_id: str) -> str:
    return f"https://outlook.office365.com/owa/?ItemID={message_id}&exvsurl=1&viewmodel=ReadMessageItem"


def render_body(body: dict[str, str], wanted: str | None) -> dict[str, str]:
    """The body in the type ``Prefer: outlook.body-content-type`` asked for (the stored one without)."""
    if wanted is None or wanted == body["contentType"]:
        return dict(body)
    if wanted == "text":
        return {"contentType": "text", "content": html_to_text(body["content"])}
    return {"contentType": "html", "content": text_to_html(body["content"])}


def render_message(message: Message, select: list[str] | None = None, *, immutable: bool = False,
                   body_type: str | None = None, expand_attachments: bool = False) -> dict[str, Any]:
    message_id = message.id_for(immutable)
    full: dict[str, Any] = {"id": message_id}
    full.update(message.data)  # the id, folder and link below win over anything stored
    full.update(id=message_id, parentFolderId=message.folder_id, webLink=web_link(message_id))
    full["body"] = render_body(message.data["body"], body_type)
    out: dict[str, Any] = {"@odata.etag": message.etag()}
    if select:
        out["id"] = message_id
        for name in select:
            key = _FIELD_NAMES.get(name.strip().lower())
            if key == "uniqueBody":
                out[key] = full["body"]
            elif key is not None and key in full:
                out[key] = full[key]
    else:
        out.update(full)
    if expand_attachments:
        out["attachments"] = [a.public() for a in message.attachments]
    return out
