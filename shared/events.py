"""The product's output: one CloudEvents 1.0 JSON document per changed message.

This is the one place where events are built (docs/design.md "Events"). ``id`` is a hash of
what makes the change unique (account, message, change type and, for an update, the
message's ``changeKey``), so a replayed change carries the same id and a consumer can
de-duplicate too (CloudEvents 1.0 §3.1.1: source + id identify an event).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from shared.models import Account

SPEC_VERSION = "1.0"
EVENT_TYPE_PREFIX = "com.microsoft.graph.message."
CREATED = "created"
UPDATED = "updated"
DELETED = "deleted"
CHANGE_TYPES = (CREATED, UPDATED, DELETED)


def event_id(account_id: str, message_id: str, change_type: str, change_key: str | None) -> str:
    # A message is created and deleted once; updates differ by their changeKey.
    version = (change_key or "") if change_type == UPDATED else ""
    return hashlib.sha256(f"{account_id}|{message_id}|{change_type}|{version}".encode()).hexdigest()[:32]


def event_source(account_id: str, folder: str) -> str:
    return f"/accounts/{account_id}/mailFolders/{folder}"


def _sender(item: dict[str, Any]) -> str | None:
    sender = item.get("from")
    if isinstance(sender, dict):
        address = sender.get("emailAddress")
        if isinstance(address, dict) and isinstance(address.get("address"), str):
            return address["address"]
    return None


def mail_event(
    account: Account, item: dict[str, Any], change_type: str, *, folder: str, now: dt.datetime
) -> dict[str, Any]:
    """The CloudEvent for one delta item (a message, or ``{"id", "@removed"}`` for a delete)."""
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
            }
        )
    else:
        removed = item.get("@removed")
        data["reason"] = removed.get("reason") if isinstance(removed, dict) else None
    return {
        "specversion": SPEC_VERSION,
        "id": event_id(account.account_id, message_id, change_type, change_key),
        "source": event_source(account.account_id, folder),
        "type": EVENT_TYPE_PREFIX + change_type,
        "subject": message_id,
        "time": now.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }


def encode_event(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
