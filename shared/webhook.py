"""Graph webhook input: the validation handshake and change / lifecycle notification batches.

Handshake (docs/graph-notes.md "Validation handshake"): Graph POSTs ``?validationToken=…`` and
expects 200, text/plain, the URL-decoded token as the body, within 10 seconds. The query
string is already URL-decoded by the host. The token is echoed as plain text only, never
as HTML, and only when it is of a sane length.

Notifications (docs/graph-notes.md "Change notifications", "Lifecycle notifications"): a
POST carries ``{"value": [item, …]}``, items of several subscriptions and tenants mixed.
Each item's ``clientState`` is verified in constant time with the keys from the settings
(``shared.client_state``), which also tells the account it belongs to and the nonce of
the subscription it was issued for; its ``subscriptionId`` must be a GUID, as Graph's
are (anything else could not even be a table key). An item that fails either is dropped
and counted, never echoed, and never costs the valid items of the batch anything. The
valid items become one *trigger* per account, and the triggers of one POST travel
together in one queue message (a few when there are many accounts):

    {"v": 3, "receivedAt": epoch ms, "origin": the stamping process,
     "triggers": [{"accountId": …, "changed": [{"subscriptionId": …, "nonce": …}, …],
                   "changes": n,
                   "lifecycle": [{"subscriptionId": …, "event": "missed", "nonce": …}, …]},
                  …]}

(plus ``"attempts": n`` on triggers that failed in an earlier message whose other triggers
succeeded, sent again on their own: ``shared.trigger_batch.settle``.)

Graph's POSTs carry the items of many mailboxes (docs/graph-notes.md "Change
notifications"): one message per POST instead of one per account is one queue write, one
receive share and one delete per POST, where those were the dearest storage operations of a
burst (docs/design.md "Scale"). A message holds at most ``MAX_TRIGGERS_PER_MESSAGE``
triggers and about ``MAX_MESSAGE_BYTES`` of JSON, under a Storage queue message's 64 KiB
once base64-encoded; processing runs its triggers side by side (``shared.trigger_batch``).

A notification is only a trigger: the delta query is the source of truth (docs/design.md
"Processing"), so the message ids inside the items are not kept. A trigger stays a few
hundred bytes whatever the batch size.
Whether the subscription really belongs to the account, and carries that nonce, is
checked by processing (one point read), not here: the hot path reads no storage.
Messages of one trigger each, version 2 (``{"v": 2, "accountId": …, …, "receivedAt",
"origin"}``, written before triggers were batched) and version 1 (``subscriptionIds``, no
nonces, written before nonces were kept), are still read.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from shared.client_state import ClientStateClaim, read_client_state
from shared.errors import InvalidInputError, PayloadTooLargeError

MAX_VALIDATION_TOKEN_LENGTH = 1024
# Graph batches items of many subscriptions in one POST; an item is under 1 KiB.
MAX_BODY_BYTES = 1024 * 1024
MAX_ITEMS = 1000
TRIGGER_BATCH_VERSION = 3
TRIGGER_VERSION = 2
LEGACY_TRIGGER_VERSION = 1
# A message's triggers run side by side in one invocation: this many at most, and about this
# much JSON (base64 makes it 4/3 larger, and a Storage queue message holds 64 KiB).
MAX_TRIGGERS_PER_MESSAGE = 32
MAX_MESSAGE_BYTES = 32 * 1024
# Graph's subscription ids are GUIDs. Nothing else is accepted: a '/', '#', '?' or a control
# character is refused by Azure Tables in a key, and would fail every read of the trigger.
_SUBSCRIPTION_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII)
# Verified clientStates, per set of keys. Graph repeats a subscription's clientState on each of its
# notifications, so the HMAC runs once per subscription and process instead of per item.
# Only strings that passed the constant-time check are kept: a hit proves nothing to a
# caller who did not already hold a valid clientState, and a miss runs the full check.
VERIFIED_CACHE_SIZE = 65_536
_verified: dict[tuple[bytes, ...], dict[str, ClientStateClaim]] = {}

# Which process stamped a trigger's receivedAt: processing in the same process compares
# it with its own clock, with no allowance for another machine's (``shared.sync``).
ORIGIN = os.urandom(8).hex()

_E = TypeVar("_E")

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


def is_subscription_id(value: object) -> bool:
    """Whether ``value`` has the shape of a Graph subscription id (a GUID)."""
    return isinstance(value, str) and _SUBSCRIPTION_ID.fullmatch(value) is not None


@dataclass
class _AccountTrigger:
    changed: dict[tuple[str, str], None] = field(default_factory=dict)  # ordered set of (id, nonce)
    changes: int = 0
    lifecycle: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class NotificationBatch:
    """What a POST carried: its accounts' triggers in as few queue messages as the bounds
    allow, and how many items were dropped."""

    messages: list[str]
    accepted: int
    dropped: int


def read_notification_batch(
    body: bytes, keys: bytes | Sequence[bytes], *, received_at_ms: int | None = None
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

    key_tuple = (keys,) if isinstance(keys, bytes) else tuple(keys)
    triggers: dict[str, _AccountTrigger] = {}
    dropped = 0
    for item in items:
        claim = _accept(item, key_tuple)
        if claim is None:
            dropped += 1
            continue
        trigger = triggers.get(claim.account_id)
        if trigger is None:
            trigger = triggers[claim.account_id] = _AccountTrigger()
        subscription_id = item["subscriptionId"]
        event = item.get("lifecycleEvent")
        if event is None:
            trigger.changes += 1
            trigger.changed[(subscription_id, claim.nonce)] = None
        else:
            trigger.lifecycle.append({"subscriptionId": subscription_id, "event": event, "nonce": claim.nonce})

    stamp = int(time.time() * 1000) if received_at_ms is None else received_at_ms
    entries = [
        json.dumps(
            {
                "accountId": account_id,
                "changed": [{"subscriptionId": sid, "nonce": nonce} for sid, nonce in trigger.changed],
                "changes": trigger.changes,
                "lifecycle": trigger.lifecycle,
            },
            separators=(",", ":"),
        )
        for account_id, trigger in triggers.items()
    ]
    return NotificationBatch(_messages(entries, stamp), accepted=len(items) - dropped, dropped=dropped)


def _entry(trigger: NotificationTrigger) -> dict[str, object]:
    def signed(entry: dict[str, str], nonce: str | None) -> dict[str, str]:
        return {**entry, "nonce": nonce} if nonce is not None else entry

    return {
        "accountId": trigger.account_id,
        "changed": [signed({"subscriptionId": c.subscription_id}, c.nonce) for c in trigger.changed],
        "changes": trigger.changes,
        "lifecycle": [
            signed({"subscriptionId": s.subscription_id, "event": s.event}, s.nonce) for s in trigger.lifecycle
        ],
    }


def retry_messages(triggers: Sequence[NotificationTrigger], attempts: int) -> list[str]:
    """Triggers of one message that failed, packed again (version 3, ``attempts`` carried)
    so that they alone are tried again. They keep the message's receivedAt and origin: a
    round that began after they were received still serves them (``shared.sync_joining``)."""
    if not triggers:
        return []
    entries = [json.dumps(_entry(t), separators=(",", ":")) for t in triggers]
    first = triggers[0]
    return _messages(entries, first.received_at_ms, first.origin, attempts)


def single_trigger_json(trigger: NotificationTrigger) -> str:
    """One trigger as a version 2 message (what the poison queue holds of a batch)."""
    document = {"v": TRIGGER_VERSION, **_entry(trigger), "receivedAt": trigger.received_at_ms, "origin": trigger.origin}
    return json.dumps(document, separators=(",", ":"))


def _messages(entries: list[str], stamp: int | None, origin: str | None = ORIGIN, attempts: int = 0) -> list[str]:
    """The triggers (JSON texts) packed into version 3 messages within the bounds."""
    retried = f',"attempts":{attempts}' if attempts else ""
    head = (
        f'{{"v":{TRIGGER_BATCH_VERSION},"receivedAt":{json.dumps(stamp)},"origin":{json.dumps(origin)}'
        f'{retried},"triggers":['
    )
    messages: list[str] = []
    group: list[str] = []
    size = len(head)
    for entry in entries:
        # One account's trigger alone over the size goes in a message of its own: it was one before.
        if group and (len(group) >= MAX_TRIGGERS_PER_MESSAGE or size + len(entry) + 1 > MAX_MESSAGE_BYTES):
            messages.append(head + ",".join(group) + "]}")
            group, size = [], len(head)
        group.append(entry)
        size += len(entry) + 1
    if group:
        messages.append(head + ",".join(group) + "]}")
    return messages


def _accept(item: object, keys: tuple[bytes, ...]) -> ClientStateClaim | None:
    """What the clientState of a well-formed item of ours says, else None."""
    if not isinstance(item, dict):
        return None
    if not is_subscription_id(item.get("subscriptionId")):
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
    verified = _verified.get(keys)
    if verified is None:
        verified = _verified[keys] = {}
    claim = verified.get(client_state)
    if claim is None:
        claim = read_client_state(keys, client_state)
        if claim is not None:
            if len(verified) >= VERIFIED_CACHE_SIZE:
                verified.clear()
            verified[client_state] = claim
    return claim


@dataclass(frozen=True)
class LifecycleSignal:
    subscription_id: str
    event: str
    nonce: str | None = None  # None: a version 1 trigger, written before nonces were kept


@dataclass(frozen=True)
class SubscriptionChange:
    """A subscription that said "something changed", with the nonce its clientState carried."""

    subscription_id: str
    nonce: str | None = None


@dataclass(frozen=True)
class NotificationTrigger:
    """A queue message of ``graph-notifications``, read back by processing."""

    account_id: str
    subscription_ids: tuple[str, ...]
    changes: int
    lifecycle: tuple[LifecycleSignal, ...]
    received_at_ms: int | None
    changed: tuple[SubscriptionChange, ...] = ()  # empty: one per subscription id, nonce unknown
    rejected: int = 0  # entries left out because their subscription id is not a Graph id
    origin: str | None = None  # the process whose clock stamped received_at_ms

    def __post_init__(self) -> None:
        if not self.changed and self.subscription_ids:
            object.__setattr__(self, "changed", tuple(SubscriptionChange(s) for s in self.subscription_ids))


@dataclass(frozen=True)
class TriggerMessage:
    """A queue message of ``graph-notifications`` read back: its well-formed triggers, and
    each malformed one as the JSON text of a version 2 message (for the poison queue)."""

    triggers: list[NotificationTrigger]
    malformed: list[str] = field(default_factory=list)
    # Deliveries of these triggers before this message: they failed in an earlier message
    # whose other triggers succeeded, and were sent again on their own (``retry_messages``).
    attempts: int = 0


def parse_triggers(body: bytes | str) -> TriggerMessage:
    """Read a message written by ``read_notification_batch`` (or a version 1 or 2 message
    of one trigger); ``InvalidInputError`` when it is none of those.

    A malformed trigger of a version 3 message is set apart, so it cannot take the other
    accounts' triggers to the poison queue with it.
    """
    document = _document(body)
    if not isinstance(document, dict) or document.get("v") != TRIGGER_BATCH_VERSION:
        return TriggerMessage([_read_trigger(document)])
    entries = document.get("triggers")
    if not isinstance(entries, list):
        raise InvalidInputError("trigger message has no triggers list")
    envelope = {"v": TRIGGER_VERSION, "receivedAt": document.get("receivedAt"), "origin": document.get("origin")}
    attempts = document.get("attempts", 0)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
        raise InvalidInputError("trigger message attempts must be a count")
    message = TriggerMessage([], attempts=attempts)
    for entry in entries:
        single = {**entry, **envelope} if isinstance(entry, dict) else entry
        try:
            message.triggers.append(_read_trigger(single))
        except InvalidInputError:
            message.malformed.append(json.dumps(single, separators=(",", ":")))
    return message


def parse_trigger(body: bytes | str) -> NotificationTrigger:
    """Read a message of one trigger (version 1 or 2); ``InvalidInputError`` if malformed.

    An entry whose subscription id is not a Graph id is left out and counted in
    ``rejected`` (it was queued before the webhook checked ids): it must not fail the others.
    """
    return _read_trigger(_document(body))


def _document(body: bytes | str) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInputError("trigger is not JSON") from None


def _read_trigger(document: object) -> NotificationTrigger:
    if not isinstance(document, dict) or document.get("v") not in (TRIGGER_VERSION, LEGACY_TRIGGER_VERSION):
        raise InvalidInputError("trigger is not a version 1 or 2 object")
    account_id = document.get("accountId")
    received = document.get("receivedAt")
    changes = document.get("changes", 0)
    if not isinstance(account_id, str) or not account_id:
        raise InvalidInputError("trigger has no accountId")
    if document["v"] == LEGACY_TRIGGER_VERSION:
        ids = document.get("subscriptionIds", [])
        if not isinstance(ids, list) or not all(isinstance(s, str) for s in ids):
            raise InvalidInputError("trigger subscriptionIds must be strings")
        entries: object = [{"subscriptionId": s} for s in ids]
    else:
        entries = document.get("changed", [])
    changed = _entries(entries, "changed", lambda e: SubscriptionChange(e["subscriptionId"], e.get("nonce")))
    lifecycle = _entries(
        document.get("lifecycle", []),
        "lifecycle",
        lambda e: LifecycleSignal(e["subscriptionId"], e["event"], e.get("nonce")),
        events=True,
    )
    if not isinstance(changes, int) or isinstance(changes, bool):
        raise InvalidInputError("trigger changes must be a number")
    good_changes = tuple(dict.fromkeys(c for c in changed if is_subscription_id(c.subscription_id)))
    good_lifecycle = tuple(s for s in lifecycle if is_subscription_id(s.subscription_id))
    return NotificationTrigger(
        account_id=account_id,
        subscription_ids=tuple(dict.fromkeys(c.subscription_id for c in good_changes)),
        changes=changes,
        lifecycle=good_lifecycle,
        received_at_ms=received if isinstance(received, int) else None,
        changed=good_changes,
        rejected=len(changed) + len(lifecycle) - len(good_changes) - len(good_lifecycle),
        origin=origin if isinstance(origin := document.get("origin"), str) else None,
    )


def _entries(value: object, name: str, build: Callable[[dict[str, str]], _E], *, events: bool = False) -> list[_E]:
    """The entries of a trigger's list ``name``; ``InvalidInputError`` when one is not an entry."""
    if not isinstance(value, list):
        raise InvalidInputError(f"trigger {name} must be a list")
    out: list[_E] = []
    for entry in value:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("subscriptionId"), str)
            or not isinstance(entry.get("nonce", ""), str)
            or (events and entry.get("event") not in LIFECYCLE_EVENTS)
        ):
            raise InvalidInputError(f"trigger {name} entries are malformed")
        out.append(build(entry))
    return out
