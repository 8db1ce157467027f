"""Mail actions over HTTP (function key): read, list, move, change and delete an account's mail.

    GET    /api/accounts/{id}/messages?folder=&since=&top=&continuation=
    GET    /api/accounts/{id}/messages/{messageId}?bodyType=text|html
    PATCH  /api/accounts/{id}/messages/{messageId}            {"isRead"?, "categories"?, "flag"?}
    DELETE /api/accounts/{id}/messages/{messageId}[?permanent=true]
    POST   /api/accounts/{id}/messages/{messageId}/move       {"destination"}
    GET    /api/accounts/{id}/messages/{messageId}/attachments/{attachmentId}
    GET    /api/accounts/{id}/folders

Each handler parses, calls one function of ``shared.mail_actions`` and maps the typed error
(``functions/api_errors.py``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import azure.functions as func

from functions.api_errors import json_response, response_for
from functions.http import secured
from shared import bootstrap, mail_actions
from shared.errors import ConnectorError, InvalidInputError

bp = func.Blueprint()

_MIME_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$")
_UNSAFE_FILENAME = re.compile(r'[\x00-\x1f\x7f"\\/]')


def _ids(req: func.HttpRequest) -> tuple[str, str]:
    return req.route_params.get("account_id", ""), req.route_params.get("message_id", "")


def _json_body(req: func.HttpRequest) -> Any:
    try:
        return req.get_json()
    except ValueError:
        raise InvalidInputError("the body must be JSON") from None


def _permanent(req: func.HttpRequest) -> bool:
    raw = (req.params.get("permanent") or "false").strip().lower()
    if raw not in ("true", "false"):
        raise InvalidInputError("permanent must be true or false")
    return raw == "true"


@bp.function_name("messages_list")
@bp.route(route="accounts/{account_id}/messages", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@secured
def messages_list(req: func.HttpRequest) -> func.HttpResponse:
    account_id = req.route_params.get("account_id", "")
    try:
        messages, continuation = mail_actions.list_messages(
            bootstrap.services(),
            account_id,
            folder=req.params.get("folder") or "inbox",
            since=mail_actions.check_since(req.params.get("since")),
            top=mail_actions.check_top(req.params.get("top")),
            continuation=req.params.get("continuation") or None,
        )
    except ConnectorError as error:
        return response_for(error, f"list messages of account {account_id}")
    return json_response({"messages": messages, "continuation": continuation})


@bp.function_name("messages_item")
@bp.route(
    route="accounts/{account_id}/messages/{message_id}",
    methods=["GET", "PATCH", "DELETE"],
    auth_level=func.AuthLevel.FUNCTION,
)
@secured
def messages_item(req: func.HttpRequest) -> func.HttpResponse:
    account_id, message_id = _ids(req)
    services = bootstrap.services()
    method = req.method.upper()
    try:
        if method == "PATCH":
            return json_response(mail_actions.update_message(services, account_id, message_id, _json_body(req)))
        if method == "DELETE":
            mail_actions.delete_message(services, account_id, message_id, permanent=_permanent(req))
            return func.HttpResponse(status_code=204)
        body_type = req.params.get("bodyType")
        return json_response(mail_actions.get_message(services, account_id, message_id, body_type=body_type or "html"))
    except ConnectorError as error:
        return response_for(error, f"{method} message of account {account_id}")


@bp.function_name("messages_move")
@bp.route(
    route="accounts/{account_id}/messages/{message_id}/move", methods=["POST"], auth_level=func.AuthLevel.FUNCTION
)
@secured
def messages_move(req: func.HttpRequest) -> func.HttpResponse:
    account_id, message_id = _ids(req)
    try:
        body = _json_body(req)
        if not isinstance(body, dict):
            raise InvalidInputError('the body must be {"destination": "<folder name or id>"}')
        moved = mail_actions.move_message(bootstrap.services(), account_id, message_id, body.get("destination"))
    except ConnectorError as error:
        return response_for(error, f"move a message of account {account_id}")
    return json_response(moved)


@bp.function_name("messages_attachment")
@bp.route(
    route="accounts/{account_id}/messages/{message_id}/attachments/{attachment_id}",
    methods=["GET"],
    auth_level=func.AuthLevel.FUNCTION,
)
@secured
def messages_attachment(req: func.HttpRequest) -> func.HttpResponse:
    account_id, message_id = _ids(req)
    try:
        attachment = mail_actions.get_attachment(
            bootstrap.services(), account_id, message_id, req.route_params.get("attachment_id", "")
        )
    except ConnectorError as error:
        return response_for(error, f"attachment of account {account_id}")
    content_type = attachment.content_type if _MIME_TYPE.match(attachment.content_type) else "application/octet-stream"
    return func.HttpResponse(
        attachment.content,
        status_code=200,
        mimetype=content_type,
        headers={
            "Content-Disposition": _disposition(attachment.name),
            # Served from the app's own origin: never rendered or sniffed as something else.
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )


def _disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the exact name in UTF-8 (RFC 6266 §4.3, RFC 8187)."""
    plain = _UNSAFE_FILENAME.sub("_", name).encode("ascii", "replace").decode("ascii").replace("?", "_") or "attachment"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


@bp.function_name("folders_list")
@bp.route(route="accounts/{account_id}/folders", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@secured
def folders_list(req: func.HttpRequest) -> func.HttpResponse:
    account_id = req.route_params.get("account_id", "")
    try:
        return json_response(mail_actions.list_folders(bootstrap.services(), account_id))
    except ConnectorError as error:
        return response_for(error, f"folders of account {account_id}")

