"""The product's output: one CloudEvents 1.0 JSON document per changed message (queue
``mail-events``) and per changed drive item (queue ``drive-events``).

This is the one place where events are built (docs/design.md "Events", "Drive events"). ``id`` is a hash of
what makes the change unique (account, message, change type and, for an update, the
message's ``changeKey``), so a replayed change carries the same id and a consumer can
de-duplicate too (CloudEvents 1.0 §3.1.1: source + id identify an event). A move to
another watched folder is an update whose version also names the new folder; a message
that comes back after it left the watched folders is created again under a new version.

An event must fit in one Storage queue message: 64 KiB of base64 text, so at most 48 KiB
of JSON (``MAX_EVENT_BYTES``, learn.microsoft.com/azure/storage/queues/storage-queues-introduction).
``fit_event`` cuts the body (``EVENT_BODY``) first, then the recipient lists, until the
encoded event fits, and says so (``bodyTruncated``, ``recipientsTruncated``).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from typing import Any

from shared.models import Account

SPEC_VERSION = "1.0"
EVENT_TYPE_PREFIX = "com.microsoft.graph.message."
DRIVE_EVENT_TYPE_PREFIX = "com.microsoft.graph.driveItem."


class Change(enum.StrEnum):
    """What an event tells of an item: the last part of its ``type``."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


CREATED = Change.CREATED
UPDATED = Change.UPDATED
DELETED = Change.DELETED
CHANGE_TYPES = tuple(Change)
# The Storage queue's limit is 65,536 characters of (base64) message text: 49,152 bytes of
# JSON, less a margin for the queue client's XML envelope.
MAX_QUEUE_MESSAGE_CHARS = 64 * 1024
MAX_EVENT_BYTES = MAX_QUEUE_MESSAGE_CHARS // 4 * 3 - 1024


def event_id(
    account_id: str, message_id: str, change_type: str, change_key: str | None, *, version: str | None = None
) -> str:
    # A message is created and deleted once; updates differ by their changeKey. ``version``
    # tells apart what would otherwise share an id (a move, a message that came back).
    if version is None:
        version = (change_key or "") if change_type == UPDATED else ""
    return hashlib.sha256(f"{account_id}|{message_id}|{change_type}|{version}".encode()).hexdigest()[:32]


def _event_time(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_source(account_id: str, folder: str) -> str:
    return f"/accounts/{account_id}/mailFolders/{folder}"


def _sender(item: dict[str, Any]) -> str | None:
    sender = item.get("from")
    if isinstance(sender, dict):
        address = sender.get("emailAddress")
        if isinstance(address, dict) and isinstance(address.get("address"), str):
            return address["address"]
    return None


def _addresses(item: dict[str, Any], field: str) -> list[str]:
    recipients = item.get(field)
    found: list[str] = []
    for recipient in recipients if isinstance(recipients, list) else []:
        address = recipient.get("emailAddress") if isinstance(recipient, dict) else None
        if isinstance(address, dict) and isinstance(address.get("address"), str):
            found.append(address["address"])
    return found


def _cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 form has at most ``max_bytes`` bytes."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    # errors="ignore" drops the partial character a cut in the middle of one leaves.
    return raw[: max(max_bytes, 0)].decode("utf-8", errors="ignore")


def mail_event(
    account: Account,
    item: dict[str, Any],
    change_type: str,
    *,
    folder: str,
    now: dt.datetime,
    previous_folder: str | None = None,
    reason: str | None = None,
    version: str | None = None,
    body: str = "none",
    body_max_bytes: int = 65536,
) -> dict[str, Any]:
    """The CloudEvent for one delta item (a message, or ``{"id", "@removed"}`` for a delete).

    ``previous_folder``: the watched folder a moved message came from. ``reason``: why a
    message left (``deleted``, ``moved``), else the delta's own. ``body``: ``text`` or
    ``html`` puts the item's body in, cut to ``body_max_bytes`` of UTF-8."""
    message_id = str(item["id"])
    change_key = item.get("changeKey") if isinstance(item.get("changeKey"), str) else None
    data: dict[str, Any] = {
        "accountId": account.account_id,
        "tenantId": account.tenant_id,
        "userId": account.user_id,
        "ownerId": account.owner_id,
        "messageId": message_id,
        "folder": folder,
        "changeType": change_type,
    }
    if change_type != DELETED:
        data.update(
            {
                "subject": item.get("subject"),
                "from": _sender(item),
                "receivedDateTime": item.get("receivedDateTime"),
                "changeKey": change_key,
                "isRead": item.get("isRead"),
                "internetMessageId": item.get("internetMessageId"),
                "webLink": item.get("webLink"),
                "bodyPreview": item.get("bodyPreview"),
                "toRecipients": _addresses(item, "toRecipients"),
                "ccRecipients": _addresses(item, "ccRecipients"),
                "hasAttachments": item.get("hasAttachments"),
                "importance": item.get("importance"),
                "categories": item.get("categories") if isinstance(item.get("categories"), list) else [],
                "flag": item.get("flag") if isinstance(item.get("flag"), dict) else None,
                "conversationId": item.get("conversationId"),
                "parentFolderId": item.get("parentFolderId"),
            }
        )
        if previous_folder is not None:
            data["previousFolder"] = previous_folder
        if body != "none":
            raw_body = item.get("body")
            content = raw_body.get("content") if isinstance(raw_body, dict) else None
            content = content if isinstance(content, str) else ""
            cut = _cut_utf8(content, body_max_bytes)
            # What Graph says it sent (it converts to the format asked for, where it can).
            kind = raw_body.get("contentType") if isinstance(raw_body, dict) else None
            data["body"] = {"contentType": str(kind).lower() if isinstance(kind, str) else body, "content": cut}
            data["bodyTruncated"] = len(cut) != len(content)
    else:
        removed = item.get("@removed")
        data["reason"] = reason or (removed.get("reason") if isinstance(removed, dict) else None)
    return {
        "specversion": SPEC_VERSION,
        "id": event_id(account.account_id, message_id, change_type, change_key, version=version),
        "source": event_source(account.account_id, folder),
        "type": EVENT_TYPE_PREFIX + change_type,
        "subject": message_id,
        "time": _event_time(now),
        "datacontenttype": "application/json",
        "data": data,
    }


# --- drive items -------------------------------------------------------------------------


def drive_event_id(account_id: str, item_id: str, change: Change, version: str) -> str:
    # ``version``: what tells two events of one item and change type apart (the eTag of an
    # update, the last eTag published before a deletion, "" for a first creation).
    return hashlib.sha256(f"{account_id}|drive|{item_id}|{change.value}|{version}".encode()).hexdigest()[:32]


def drive_source(account_id: str) -> str:
    return f"/accounts/{account_id}/drive"


def drive_item_path(item: dict[str, Any]) -> str | None:
    """The item's path below the drive's root as the files API shows it (``/Docs/a.docx``),
    from ``parentReference.path`` (``/drive/root:/Docs`` or ``/drives/{id}/root:/Docs``);
    None when Graph left it out (delta answers do: docs/graph-notes.md "OneDrive")."""
    if "root" in item:
        return "/"
    parent = item.get("parentReference")
    parent_path = parent.get("path") if isinstance(parent, dict) else None
    if not isinstance(parent_path, str) or "root:" not in parent_path:
        return None
    return f"{parent_path.split('root:', 1)[1]}/{item.get('name') or ''}"


def _modified_by(item: dict[str, Any]) -> str | None:
    identity = item.get("lastModifiedBy")
    user = identity.get("user") if isinstance(identity, dict) else None
    if not isinstance(user, dict):
        return None
    named = user.get("displayName") or user.get("email") or user.get("id")
    return str(named) if named is not None else None


def drive_event(
    account: Account,
    item: dict[str, Any],
    change: Change,
    *,
    now: dt.datetime,
    content_changed: bool,
    version: str,
    known: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """The CloudEvent for one drive item (docs/design.md "Drive events"): ``item`` as Graph
    shows it (a deletion: what delta tells of it, often no more than its ids); ``known``:
    its ``name`` and ``path`` as last published, for what the item no longer tells."""
    known = known or {}
    item_id = str(item["id"])
    raw_parent = item.get("parentReference")
    parent: dict[str, Any] = raw_parent if isinstance(raw_parent, dict) else {}
    file = item.get("file") if isinstance(item.get("file"), dict) else None
    data: dict[str, Any] = {"accountId": account.account_id}
    if account.owner_id is not None:
        data["ownerId"] = account.owner_id
    data.update(
        {
            "driveId": parent.get("driveId"),
            "itemId": item_id,
            "changeType": change.value,
            "name": item.get("name") or known.get("name"),
            "path": drive_item_path(item) or known.get("path"),
            "parentId": parent.get("id"),
            "webUrl": item.get("webUrl"),
            "size": item.get("size"),
            "eTag": item.get("eTag"),
            "cTag": item.get("cTag"),
            "mimeType": file.get("mimeType") if file else None,
            "isFolder": "folder" in item,
            "lastModifiedDateTime": item.get("lastModifiedDateTime"),
            "lastModifiedBy": _modified_by(item),
            "contentChanged": content_changed,
        }
    )
    return {
        "specversion": SPEC_VERSION,
        "id": drive_event_id(account.account_id, item_id, change, version),
        "source": drive_source(account.account_id),
        "type": DRIVE_EVENT_TYPE_PREFIX + change.value,
        "subject": item_id,
        "time": _event_time(now),
        "datacontenttype": "application/json",
        "data": data,
    }


def encode_event(event: dict[str, Any], *, max_bytes: int = MAX_EVENT_BYTES) -> str:
    """The event as compact JSON, cut to fit ``max_bytes`` of UTF-8 (``fit_event``)."""
    return _encoded(fit_event(event, max_bytes=max_bytes))


def _encoded(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def _size(event: dict[str, Any]) -> int:
    return len(_encoded(event).encode("utf-8"))


def fit_event(event: dict[str, Any], *, max_bytes: int = MAX_EVENT_BYTES) -> dict[str, Any]:
    """``event`` unchanged when its JSON fits ``max_bytes``; else with the body cut (JSON
    escaping can make a byte of body take up to six, hence the loop), then the recipient
    lists shortened, each flagged; the rest of an event is small (subject, preview: 255)."""
    size = _size(event)
    if size <= max_bytes:
        return event
    event = {**event, "data": dict(event["data"])}
    data = event["data"]
    body = data.get("body")
    if isinstance(body, dict) and isinstance(body.get("content"), str):
        content = body["content"]
        data["bodyTruncated"] = True
        data["body"] = {**body, "content": ""}
        room = max_bytes - _size(event)  # what the body's JSON string may take
        raw = len(content.encode("utf-8"))
        escaped = len(json.dumps(content, ensure_ascii=False).encode("utf-8")) - 2
        keep = raw * max(room, 0) // max(escaped, 1)  # escaping spreads evenly, more or less
        while True:
            cut = _cut_utf8(content, keep)
            data["body"] = {**body, "content": cut}
            size = _size(event)
            if size <= max_bytes or not cut:
                break
            keep = keep * 9 // 10
    for field in ("ccRecipients", "toRecipients"):
        addresses = data.get(field)
        while size > max_bytes and isinstance(addresses, list) and addresses:
            addresses = addresses[: len(addresses) // 2]
            data[field] = addresses
            data["recipientsTruncated"] = True
            size = _size(event)
    return event
