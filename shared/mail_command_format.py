"""A mail command and its result as they travel on the queues.

A command is a JSON object (or base64 of one) on ``mail-commands``: ``parse_command``
checks it and gives a ``MailCommand``, which knows the Graph request that carries it out.
Its result is a CloudEvent ``com.m365connector.command.succeeded`` or ``.failed``
(``result_event``), with the reason a consumer reads (``failure_of``). Running commands
once only, in batches, is ``shared.mail_commands``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from shared.errors import (
    GraphError,
    InvalidInputError,
    MissingScopeError,
    NotFoundError,
    ReauthRequiredError,
    ThrottledError,
)
from shared.mail_actions import check_categories, check_flag, check_id
from shared.ports import BatchRequest, JsonObject

# The product's prefix for its own event types (account lifecycle events use
# com.m365connector.account.*): one result per command, .succeeded or .failed.
COMMAND_EVENT_TYPE_PREFIX = "com.m365connector.command."
SUCCEEDED = "succeeded"
FAILED = "failed"
ACTIONS = ("move", "delete", "permanentDelete", "markRead", "markUnread", "categorize", "flag")
MAX_COMMAND_BYTES = 64 * 1024


class MalformedCommandError(InvalidInputError):
    """A command that cannot be run; ``known`` holds the fields that could be read."""

    def __init__(self, message: str, known: dict[str, Any]) -> None:
        super().__init__(message)
        self.known = known


@dataclass(frozen=True)
class MailCommand:
    id: str
    account_id: str
    message_id: str
    action: str
    destination: str | None = None
    categories: tuple[str, ...] | None = None
    flag: JsonObject | None = field(default=None, hash=False, compare=False)

    def graph_request(self, request_id: str) -> BatchRequest:
        """The Graph request that carries the command out, as part of a batch."""
        path = f"/me/messages/{quote(self.message_id, safe='')}"
        if self.action == "move":
            return BatchRequest(request_id, "POST", f"{path}/move", {"destinationId": self.destination})
        if self.action == "delete":
            return BatchRequest(request_id, "DELETE", path)
        if self.action == "permanentDelete":
            return BatchRequest(request_id, "POST", f"{path}/permanentDelete")
        if self.action in ("markRead", "markUnread"):
            return BatchRequest(request_id, "PATCH", path, {"isRead": self.action == "markRead"})
        if self.action == "categorize":
            return BatchRequest(request_id, "PATCH", path, {"categories": list(self.categories or ())})
        return BatchRequest(request_id, "PATCH", path, {"flag": self.flag})

    def fields(self) -> dict[str, Any]:
        return {"id": self.id, "accountId": self.account_id, "messageId": self.message_id, "action": self.action}


def parse_command(body: bytes | str) -> MailCommand:
    """A command from a queue message's body: JSON, or base64 of JSON."""
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if len(raw) > MAX_COMMAND_BYTES:
        raise MalformedCommandError(f"a command has at most {MAX_COMMAND_BYTES} bytes", {})
    document = _json_object(raw)
    if document is None:
        try:
            document = _json_object(base64.b64decode(raw.strip(), validate=True))
        except (binascii.Error, ValueError):
            document = None
    if document is None:
        raise MalformedCommandError("the command is not a JSON object (nor base64 of one)", {})
    known = {k: document[k] for k in ("id", "accountId", "messageId", "action") if isinstance(document.get(k), str)}
    try:
        command_id = check_id(document.get("id"), "id")
        account_id = check_id(document.get("accountId"), "accountId")
        message_id = check_id(document.get("messageId"), "messageId")
        action = document.get("action")
        if action not in ACTIONS:
            raise InvalidInputError(f"action must be one of {', '.join(ACTIONS)}")
        destination = check_id(document.get("destination"), "destination") if action == "move" else None
        categories = tuple(check_categories(document.get("categories"))) if action == "categorize" else None
        flag = check_flag(document.get("flag")) if action == "flag" else None
    except InvalidInputError as error:
        raise MalformedCommandError(str(error), known) from None
    return MailCommand(command_id, account_id, message_id, str(action), destination, categories, flag)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandFailure:
    code: str
    message: str
    retry_after: float | None = None


def failure_of(error: Exception) -> CommandFailure:
    """The reason a consumer reads, with the codes of the HTTP routes."""
    if isinstance(error, MalformedCommandError | InvalidInputError):
        return CommandFailure("invalid_command", str(error))
    if isinstance(error, NotFoundError):
        return CommandFailure("not_found", str(error))
    if isinstance(error, MissingScopeError):
        return CommandFailure("missing_scope", f"the account has not granted {error.scope}; enable mail actions "
                              "(MAIL_ACTIONS_ENABLED) and have its user connect again")
    if isinstance(error, ReauthRequiredError):
        return CommandFailure("reauth_required", "the account's user must sign in again")
    if isinstance(error, ThrottledError):
        return CommandFailure(
            "throttled",
            "Graph throttled the mailbox; the command was not run and may be sent again with the same id",
            error.retry_after,
        )
    if isinstance(error, GraphError) and error.status == 400:
        return CommandFailure("invalid_request", f"Graph refused the command: {error.code}")
    if isinstance(error, GraphError) and error.status == 409:
        return CommandFailure("conflict", f"Graph refused the command: {error.code}")
    return CommandFailure("upstream_error", f"Graph failed: {type(error).__name__}")


def result_event(
    fields: dict[str, Any], failure: CommandFailure | None, now: dt.datetime, *, fallback_id: str = ""
) -> dict[str, Any]:
    command_id = str(fields.get("id") or fallback_id)
    account_id = fields.get("accountId")
    data: dict[str, Any] = {
        "commandId": fields.get("id"),
        "accountId": account_id,
        "messageId": fields.get("messageId"),
        "action": fields.get("action"),
    }
    if failure is not None:
        data["error"] = {"code": failure.code, "message": failure.message}
        if failure.retry_after is not None:
            data["error"]["retryAfter"] = failure.retry_after
    outcome = FAILED if failure is not None else SUCCEEDED
    return {
        "specversion": "1.0",
        # One result per command id: a consumer de-duplicates on it.
        "id": hashlib.sha256(f"command|{command_id}|{outcome}".encode()).hexdigest()[:32],
        "source": f"/accounts/{account_id}" if account_id else "/commands",
        "type": COMMAND_EVENT_TYPE_PREFIX + outcome,
        "subject": command_id,
        "time": now.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
