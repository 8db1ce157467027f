"""Typed errors of the core -> HTTP answers of the mail routes: ``{"error": {"code", "message"}}``.

One table for every route of ``functions/messages.py``; the core never knows a status code.
Input problems are 4xx with the reason; a dependency that failed is 502/503; nothing a
caller sends can make a 500.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import azure.functions as func

from shared.errors import (
    ConnectorError,
    GraphError,
    InvalidInputError,
    MissingScopeError,
    NotFoundError,
    PayloadTooLargeError,
    ReauthRequiredError,
    ThrottledError,
    UpstreamError,
)

log = logging.getLogger(__name__)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json", headers=headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def response_for(error: ConnectorError, what: str) -> func.HttpResponse:
    """The answer to a request that ended in ``error``; ``what`` names the request in logs."""
    if isinstance(error, PayloadTooLargeError):
        return error_response(413, "too_large", str(error))
    if isinstance(error, InvalidInputError):
        return error_response(400, "invalid_request", str(error))
    if isinstance(error, NotFoundError):
        return error_response(404, "not_found", "no such account, message, attachment or folder")
    if isinstance(error, MissingScopeError):
        return error_response(
            403,
            "missing_scope",
            f"the account has not granted {error.scope}: set MAIL_ACTIONS_ENABLED=true and have its user "
            "connect again",
        )
    if isinstance(error, ReauthRequiredError):
        return error_response(409, "reauth_required", "the account's user must sign in again")
    if isinstance(error, ThrottledError):
        wait = max(1, math.ceil(error.retry_after))
        return error_response(
            429, "throttled", f"Graph throttles this mailbox; try again in {wait} s", {"Retry-After": str(wait)}
        )
    if isinstance(error, GraphError) and error.status == 400:
        return error_response(400, "invalid_request", f"Graph refused the request: {error.code}")
    if isinstance(error, GraphError) and error.status == 409:
        return error_response(409, "conflict", f"Graph refused the request: {error.code}")
    if isinstance(error, UpstreamError):
        log.warning("%s: Graph failed: %s", what, type(error).__name__)
        return error_response(502, "upstream_error", "Microsoft Graph failed; try again")
    log.warning("%s: failed: %s", what, type(error).__name__)
    return error_response(503, "unavailable", "the request could not be handled right now; try again")
