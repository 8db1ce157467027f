"""Graph webhook input: the validation handshake and change / lifecycle notification batches.

Handshake (docs/graph-notes.md "Validation handshake"): Graph POSTs ``?validationToken=…`` and
expects 200, text/plain, the URL-decoded token as the body, within 10 seconds. The query
string is already URL-decoded by the host. The token is echoed as plain text only, never
as HTML, and only when it is of a sane length.

Notifications (docs/graph-notes.md "Change notifications", "Lifecycle notifications"): a POST
carries ``{"value": [item, …]}``, items of several subscriptions and tenants mixed. Each
item's ``clientState`` is verified in constant time with the key from the settings
(``shared.client_state``), which also tells the account it belongs to; an item that fails
is dropped and counted, never echoed. The valid items become one *trigger* per account:

    {"v": 1, "accountId": …, "subscriptionIds": [...], "changes": n,
     "lifecycle": [{"subscriptionId": …, "event": "missed"}, …], "receivedAt": epoch ms}

A notification is only a trigger: the delta query is the source of truth (docs/design.md
"Processing"), so the message ids inside the items are not kept. A trigger stays a few
hundred bytes whatever the batch size, well under a Storage queue message's 64 KiB.
Whether the subscription really belongs to the account is checked by processing (one
point read), not here: the hot path reads no storage.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from shared.client_state import verify_client_state
from shared.errors import InvalidInputError, PayloadTooLargeError

MAX_VALIDATION_TOKEN_LENGTH = 1024
# Graph batches items of many subscriptions in one POST; an item is under 1 KiB.
MAX_BODY_BYTES = 1024 * 1024
MAX_ITEMS = 1000
MAX_SUBSCRIPTION_ID_LENGTH = 128
TRIGGER_VERSION = 1
# Verified clientStates, per key. Graph repeats a subscription's clientState on each of its
# notifications, so the HMAC runs once per subscription and process instead of per item.
# Only strings that passed the constant-time check are kept: a hit proves nothing to a
# caller who did not already hold a valid clientState, and a miss runs the full check.
VERIFIED_CACHE_SIZE = 65_536
_verified: dict[bytes, dict[str, str]] = {}

CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: str


def validation_response(token: str) -> WebhookAnswer:
    if not token or len(token) > MAX_VALIDATION_TOKEN_LENGTH:
        return WebhookAnswer(400, "validationToken must be 1 to 1024 characters long")
    if any(ord(ch) < 32 and ch not in "\t" for ch in token):
        return WebhookAnswer(400, "validationToken must not contain control characters")
    return WebhookAnswer(200, token)


@dataclass
class _AccountTrigger:
    subscription_ids: dict[str, None] = field(default_factory=dict)  # ordered set
    changes: int = 0
    lifecycle: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class NotificationBatch:
    """What a POST carried: one queue message per account, and how many items were dropped."""

    messages: list[str]
    accepted: int
    dropped: int


def read_notification_batch(
    body: bytes, key: bytes, *, received_at_ms: int | None = None
) -> NotificationBatch:
    """Parse and verify one notification POST body.

    Raises ``PayloadTooLargeError`` over ``MAX_BODY_BYTES`` or ``MAX_ITEMS``, and
    ``InvalidInputError`` (with the reason) when the body is not a JSON object with a
    ``value`` array. Items that are not ours or not well formed are dropped and counted.
    """
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"body over {MAX_BODY_BYTES} bytes")
    if not body:
        raise InvalidInputError("empty body")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidInputError("body is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise InvalidInputError("body must be a JSON object")
    items = document.get("value")
    if not isinstance(items, list):
        raise InvalidInputError("body must have a 'value' array")
    if len(items) > MAX_ITEMS:
        raise PayloadTooLargeError(f"more than {MAX_ITEMS} notifications in one body")

    triggers: dict[str, _AccountTrigger] = {}
    dropped = 0
    for item in items:
        account_id = _accept(item, key)
        if account_id is None:
            dropped += 1
            continue
        trigger = triggers.get(account_id)
        if trigger is None:
            trigger = triggers[account_id] = _AccountTrigger()
        subscription_id = item["subscriptionId"]
        event = item.get("lifecycleEvent")
        if event is None:
            trigger.changes += 1
            trigger.subscription_ids[subscription_id] = None
        else:
            trigger.lifecycle.append({"subscriptionId": subscription_id, "event": event})

    stamp = int(time.time() * 1000) if received_at_ms is None else received_at_ms
    messages = [
        json.dumps(
            {
                "v": TRIGGER_VERSION,
                "accountId": account_id,
                "subscriptionIds": list(trigger.subscription_ids),
                "changes": trigger.changes,
                "lifecycle": trigger.lifecycle,
                "receivedAt": stamp,
            },
            separators=(",", ":"),
        )
        for account_id, trigger in triggers.items()
    ]
    return NotificationBatch(messages, accepted=len(items) - dropped, dropped=dropped)


def _accept(item: object, key: bytes) -> str | None:
    """The account id of a well-formed item carrying our clientState, else None."""
    if not isinstance(item, dict):
        return None
    subscription_id = item.get("subscriptionId")
    if not isinstance(subscription_id, str) or not 0 < len(subscription_id) <= MAX_SUBSCRIPTION_ID_LENGTH:
        return None
    # Membership is tested on strings only: a list or an object is unhashable.
    event = item.get("lifecycleEvent")
    if event is None:
        change_type = item.get("changeType")
        if not isinstance(change_type, str) or change_type not in CHANGE_TYPES:
            return None
    elif not isinstance(event, str) or event not in LIFECYCLE_EVENTS:
        return None
    client_state = item.get("clientState")
    if not isinstance(client_state, str):
        return None
    verified = _verified.get(key)
    if verified is None:
        verified = _verified[key] = {}
    account_id = verified.get(client_state)
    if account_id is None:
        account_id = verify_client_state(key, client_state)
        if account_id is not None:
            if len(verified) >= VERIFIED_CACHE_SIZE:
                verified.clear()
            verified[client_state] = account_id
    return account_id


@dataclass(frozen=True)
class LifecycleSignal:
    subscription_id: str
    event: str


@dataclass(frozen=True)
class NotificationTrigger:
    """A queue message of ``graph-notifications``, read back by processing."""

    account_id: str
    subscription_ids: tuple[str, ...]
    changes: int
    lifecycle: tuple[LifecycleSignal, ...]
    received_at_ms: int | None


def parse_trigger(body: bytes | str) -> NotificationTrigger:
    """Read a trigger written by ``read_notification_batch``; ``InvalidInputError`` if malformed."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInputError("trigger is not JSON") from None
    if not isinstance(document, dict) or document.get("v") != TRIGGER_VERSION:
        raise InvalidInputError("trigger is not a version 1 object")
    account_id = document.get("accountId")
    subscription_ids = document.get("subscriptionIds", [])
    lifecycle = document.get("lifecycle", [])
    received = document.get("receivedAt")
    changes = document.get("changes", 0)
    if not isinstance(account_id, str) or not account_id:
        raise InvalidInputError("trigger has no accountId")
    if not isinstance(subscription_ids, list) or not all(isinstance(s, str) for s in subscription_ids):
        raise InvalidInputError("trigger subscriptionIds must be strings")
    if not isinstance(lifecycle, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("subscriptionId"), str)
        and e.get("event") in LIFECYCLE_EVENTS
        for e in lifecycle
    ):
        raise InvalidInputError("trigger lifecycle entries are malformed")
    if not isinstance(changes, int):
        raise InvalidInputError("trigger changes must be a number")
    return NotificationTrigger(
        account_id=account_id,
        subscription_ids=tuple(subscription_ids),
        changes=changes,
        lifecycle=tuple(LifecycleSignal(e["subscriptionId"], e["event"]) for e in lifecycle),
        received_at_ms=received if isinstance(received, int) else None,
    )
