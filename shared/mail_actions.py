"""Mail actions: read, list, move, change and delete one account's mail for its consumers.

A consumer never holds a Microsoft token: it names an account and a message, and the
connector acts with the account's token (``TokenProvider``), through the one Graph client
(``Services.mail``: one retry policy, Outlook's 4 concurrent requests per mailbox). The
routes in ``functions/messages.py``, the CLI's ``messages`` and the command queue
(``shared/mail_commands.py``) all end here.

- Reads need ``Mail.Read`` (or ``Mail.ReadWrite``), actions ``Mail.ReadWrite``: an account
  whose grant lacks the scope is refused before any Graph call (``MissingScopeError``), as
  is a 403 from Graph. ``MAIL_ACTIONS_ENABLED=true`` asks for ``Mail.ReadWrite`` at connect;
  an account connected before keeps its read-only grant until its user connects again.
- Ids are Graph's immutable ids (the adapter sends ``Prefer: IdType="ImmutableId"`` on every
  mail call): a moved message keeps its id, so an id from an event stays valid.
- A refused access token (401) is replaced once, as the sync does; a dead refresh token is
  ``ReauthRequiredError`` (the account is marked ``reauth_required``).
- Input is checked here and refused with ``InvalidInputError`` naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from shared.errors import (
    GraphError,
    InvalidInputError,
    MissingScopeError,
    NotFoundError,
    ReauthRequiredError,
)

# ``folder_names`` (defined with the folders) is named here too: the delta round imports it from here.
from shared.mail_folders import folder_names as folder_names
from shared.models import Account, AccountStatus
from shared.ports import AttachmentContent, GraphAuth, JsonObject
from shared.retry import with_fresh_token

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

READ_SCOPES = ("Mail.Read", "Mail.ReadWrite")
WRITE_SCOPE = "Mail.ReadWrite"
BODY_TYPES = ("html", "text")
FLAG_STATUSES = ("notFlagged", "flagged", "complete")
DEFAULT_TOP = 50
MAX_TOP = 100
MAX_CATEGORIES = 25
MAX_ID_LENGTH = 1024
MAX_FOLDERS = 2000  # a bound on the folder walk: mailboxes with more are cut, and say so in the log

T = TypeVar("T")


# --- input ---------------------------------------------------------------------------


def check_id(value: object, what: str) -> str:
    """A message, attachment or folder id as Graph hands them out: a non-empty string of
    printable characters."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{what} is missing")
    if len(value) > MAX_ID_LENGTH or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidInputError(f"{what} is not a valid id")
    return value


def check_body_type(value: str | None) -> str:
    chosen = (value or "html").strip().lower()
    if chosen not in BODY_TYPES:
        raise InvalidInputError("bodyType must be text or html")
    return chosen


def check_top(value: str | int | None) -> int:
    if value is None or value == "":
        return DEFAULT_TOP
    try:
        top = int(value)
    except (TypeError, ValueError):
        raise InvalidInputError("top must be a whole number") from None
    if not 1 <= top <= MAX_TOP:
        raise InvalidInputError(f"top must be between 1 and {MAX_TOP}")
    return top


def check_since(value: str | None) -> dt.datetime | None:
    if value is None or value.strip() == "":
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError("since must be an ISO 8601 time, such as 2026-11-20T12:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def check_flag(value: object) -> JsonObject:
    """A Graph followupFlag, or its status alone (``"flagged"``)."""
    if isinstance(value, str):
        value = {"flagStatus": value}
    if not isinstance(value, dict):
        raise InvalidInputError("flag must be an object such as {\"flagStatus\": \"flagged\"}")
    status = value.get("flagStatus")
    if status not in FLAG_STATUSES:
        raise InvalidInputError(f"flag.flagStatus must be one of {', '.join(FLAG_STATUSES)}")
    unknown = sorted(set(value) - {"flagStatus", "startDateTime", "dueDateTime", "completedDateTime"})
    if unknown:
        raise InvalidInputError(f"flag has fields that cannot be set: {', '.join(unknown)}")
    return dict(value)


def check_categories(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(c, str) and c.strip() for c in value):
        raise InvalidInputError("categories must be a list of names")
    if len(value) > MAX_CATEGORIES:
        raise InvalidInputError(f"categories takes at most {MAX_CATEGORIES} names")
    return list(value)


UPDATABLE = ("isRead", "categories", "flag")


def check_changes(body: object) -> JsonObject:
    """The body of ``PATCH .../messages/{id}``: ``isRead``, ``categories``, ``flag``."""
    if not isinstance(body, dict):
        raise InvalidInputError("the body must be a JSON object")
    unknown = sorted(set(body) - set(UPDATABLE))
    if unknown:
        raise InvalidInputError(f"only {', '.join(UPDATABLE)} can be changed, not {', '.join(unknown)}")
    if not body:
        raise InvalidInputError(f"nothing to change: give {', '.join(UPDATABLE)}")
    changes: JsonObject = {}
    if "isRead" in body:
        if not isinstance(body["isRead"], bool):
            raise InvalidInputError("isRead must be true or false")
        changes["isRead"] = body["isRead"]
    if "categories" in body:
        changes["categories"] = check_categories(body["categories"])
    if "flag" in body:
        changes["flag"] = check_flag(body["flag"])
    return changes


def encode_continuation(next_link: str | None) -> str | None:
    if not next_link:
        return None
    return base64.urlsafe_b64encode(next_link.encode("utf-8")).decode("ascii").rstrip("=")


def decode_continuation(token: str) -> str:
    try:
        link = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        link = ""
    if not link.startswith("https://"):
        raise InvalidInputError("continuation token is not valid")
    return link


# --- the account behind an action -------------------------------------------------------


def active_account(services: Services, account_id: str) -> Account:
    """The account, if it can act now: ``NotFoundError`` when unknown, ``ReauthRequiredError``
    when its user must sign in again (or it was disconnected)."""
    account = services.accounts.get(account_id) if account_id else None
    if account is None:
        raise NotFoundError(f"account {account_id} does not exist")
    if account.status in (AccountStatus.REAUTH_REQUIRED, AccountStatus.DISCONNECTED):
        raise ReauthRequiredError(account_id, account.status.value)
    return account


def require_scope(account: Account, scope: str) -> None:
    """Refuse before any Graph call when the account's grant lacks ``scope`` (reads are
    satisfied by ``Mail.ReadWrite`` too). Accounts without recorded scopes are left to Graph."""
    if not account.scopes:
        return
    granted = set(account.scopes)
    needed = {WRITE_SCOPE} if scope == WRITE_SCOPE else set(READ_SCOPES)
    if not granted & needed:
        raise MissingScopeError(account.account_id, scope)


def with_mailbox(services: Services, account_id: str, scope: str, call: Callable[[GraphAuth], T]) -> T:
    """Run ``call`` with the account's token: a 401 gets one fresh token (the cached one was
    refused, say revoked), a 403 is a missing scope."""
    account = active_account(services, account_id)
    require_scope(account, scope)
    try:
        return with_fresh_token(services.tokens, account_id, call, lambda: services.tokens.graph_auth(account))
    except GraphError as error:
        if error.status == 403:
            raise MissingScopeError(account_id, scope) from error
        raise


# --- what a consumer sees ----------------------------------------------------------------


def _address(value: object) -> str | None:
    if isinstance(value, dict):
        inner = value.get("emailAddress")
        if isinstance(inner, dict) and isinstance(inner.get("address"), str):
            return str(inner["address"])
    return None


def _addresses(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [a for a in (_address(v) for v in value) if a]


def message_view(item: Mapping[str, Any], folder_names: Mapping[str, str]) -> JsonObject:
    """The message as the API shows it: addresses as strings, ``folder`` the well-known name
    of its folder when it is one, else the folder's id (usable as a move destination)."""
    parent = item.get("parentFolderId")
    view: JsonObject = {
        "id": item.get("id"),
        "subject": item.get("subject"),
        "from": _address(item.get("from")),
        "toRecipients": _addresses(item.get("toRecipients")),
        "ccRecipients": _addresses(item.get("ccRecipients")),
        "receivedDateTime": item.get("receivedDateTime"),
        "bodyPreview": item.get("bodyPreview"),
        "hasAttachments": bool(item.get("hasAttachments")),
        "parentFolderId": parent,
        "folder": folder_names.get(parent, parent) if isinstance(parent, str) else None,
        "isRead": item.get("isRead"),
        "importance": item.get("importance"),
        "categories": list(item.get("categories") or []),
        "flag": item.get("flag") if isinstance(item.get("flag"), dict) else {"flagStatus": "notFlagged"},
        "conversationId": item.get("conversationId"),
        "internetMessageId": item.get("internetMessageId"),
        "webLink": item.get("webLink"),
    }
    body = item.get("body")
    if isinstance(body, dict):
        view["body"] = {"contentType": body.get("contentType"), "content": body.get("content")}
    return view


def attachment_view(item: Mapping[str, Any]) -> JsonObject:
    return {
        "id": item.get("id"),
        "name": item.get("name"),
        "contentType": item.get("contentType"),
        "size": item.get("size"),
    }


def folder_view(item: Mapping[str, Any], folder_names: Mapping[str, str]) -> JsonObject:
    view: JsonObject = {"id": item.get("id"), "displayName": item.get("displayName")}
    well_known = item.get("wellKnownName") or folder_names.get(str(item.get("id")))
    if well_known:
        view["wellKnownName"] = well_known
    view.update(
        {
            "parentFolderId": item.get("parentFolderId"),
            "totalItemCount": item.get("totalItemCount"),
            "unreadItemCount": item.get("unreadItemCount"),
            "childFolderCount": item.get("childFolderCount"),
        }
    )
    return view


# --- the actions -----------------------------------------------------------------------------


def get_message(services: Services, account_id: str, message_id: str, *, body_type: str = "html") -> JsonObject:
    message_id = check_id(message_id, "message id")
    body_type = check_body_type(body_type)

    def read(auth: GraphAuth) -> JsonObject:
        item = services.mail.get_message(auth, message_id, body_type=body_type)
        attachments = services.mail.list_attachments(auth, message_id) if item.get("hasAttachments") else []
        view = message_view(item, folder_names(services, auth))
        view["attachments"] = [attachment_view(a) for a in attachments]
        return view

    return with_mailbox(services, account_id, "Mail.Read", read)


def get_attachment(services: Services, account_id: str, message_id: str, attachment_id: str) -> AttachmentContent:
    """The attachment's bytes; ``PayloadTooLargeError`` over ``MAX_ATTACHMENT_BYTES``."""
    message_id = check_id(message_id, "message id")
    attachment_id = check_id(attachment_id, "attachment id")
    limit = services.settings.max_attachment_bytes
    return with_mailbox(
        services,
        account_id,
        "Mail.Read",
        lambda auth: services.mail.get_attachment_content(auth, message_id, attachment_id, max_bytes=limit),
    )


def list_messages(
    services: Services,
    account_id: str,
    *,
    folder: str = "inbox",
    since: dt.datetime | None = None,
    top: int = DEFAULT_TOP,
    continuation: str | None = None,
) -> tuple[list[JsonObject], str | None]:
    """One page of a folder's messages, newest first, received at or after ``since``; the
    continuation of the next page (None on the last). A continuation carries the folder,
    ``since`` and ``top`` of the first page."""
    folder = check_id(folder or "inbox", "folder")
    link = decode_continuation(continuation) if continuation else None

    def read(auth: GraphAuth) -> tuple[list[JsonObject], str | None]:
        page = services.mail.list_messages(auth, folder=folder, since=since, top=top, link=link)
        names = folder_names(services, auth)
        return [message_view(item, names) for item in page.items], encode_continuation(page.next_link)

    return with_mailbox(services, account_id, "Mail.Read", read)


def list_folders(services: Services, account_id: str) -> list[JsonObject]:
    """Every folder of the mailbox, child folders included (each after its parent)."""

    def read(auth: GraphAuth) -> list[JsonObject]:
        names = folder_names(services, auth)
        found: list[JsonObject] = []
        pending: list[str | None] = [None]
        while pending and len(found) < MAX_FOLDERS:
            parent = pending.pop(0)
            for item in services.mail.list_folders(auth, parent):
                found.append(folder_view(item, names))
                if isinstance(item.get("id"), str) and (item.get("childFolderCount") or 0) > 0:
                    pending.append(item["id"])
        if pending:
            log.warning("account %s: folder listing cut at %d folders", account_id, MAX_FOLDERS)
        return found[:MAX_FOLDERS]

    return with_mailbox(services, account_id, "Mail.Read", read)


def move_message(services: Services, account_id: str, message_id: str, destination: object) -> JsonObject:
    """Move to a folder given by well-known name or id; the message keeps its id."""
    message_id = check_id(message_id, "message id")
    target = check_id(destination, "destination")

    def act(auth: GraphAuth) -> JsonObject:
        moved = services.mail.move_message(auth, message_id, target)
        return message_view(moved, folder_names(services, auth))

    return with_mailbox(services, account_id, WRITE_SCOPE, act)


def update_message(services: Services, account_id: str, message_id: str, body: object) -> JsonObject:
    message_id = check_id(message_id, "message id")
    changes = check_changes(body)

    def act(auth: GraphAuth) -> JsonObject:
        updated = services.mail.update_message(auth, message_id, changes)
        return message_view(updated, folder_names(services, auth))

    return with_mailbox(services, account_id, WRITE_SCOPE, act)


def delete_message(services: Services, account_id: str, message_id: str, *, permanent: bool = False) -> None:
    """To Deleted Items, or with ``permanent`` for good (``permanentDelete``)."""
    message_id = check_id(message_id, "message id")
    with_mailbox(
        services,
        account_id,
        WRITE_SCOPE,
        lambda auth: services.mail.delete_message(auth, message_id, permanent=permanent),
    )
