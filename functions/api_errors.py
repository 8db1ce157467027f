"""Typed errors of the core -> HTTP status codes, for every route; the mail routes' answers.

``status_for`` is the one table from the error tree to a status code, used by every HTTP
handler; the core never knows a status code. Input problems are 4xx with the reason; a
dependency that failed is 502/503; nothing a caller sends can make a 500. The body of an
error answer is each route's own contract: ``{"error": {"code", "message"}}`` on the mail
and connect-session routes (``response_for``, ``error_response``), ``{"error": "..."}`` on
the operators' ``/api/accounts`` routes.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import azure.functions as func

from shared.errors import (
    ConflictError,
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

# Graph's answers that are about the request (bad, forbidden, in conflict, a range past the
# end), passed on as they are; any other Graph failure is a 502.
GRAPH_REFUSALS = {400: "invalid_request", 403: "access_denied", 409: "conflict", 416: "invalid_range"}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json", headers=headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def status_for(error: ConnectorError) -> int:
    """The status code of an answer to a request that ended in ``error``."""
    if isinstance(error, PayloadTooLargeError):
        return 413
    if isinstance(error, InvalidInputError):
        return 400
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, MissingScopeError):
        return 403
    if isinstance(error, ConflictError | ReauthRequiredError):
        return 409
    if isinstance(error, ThrottledError):
        return 429
    if isinstance(error, GraphError) and error.status in GRAPH_REFUSALS:
        return error.status  # Graph refused the request itself: the caller's to change
    if isinstance(error, UpstreamError):
        return 502
    return 503  # storage, Key Vault, a conflict that kept going: try again


def retry_after(error: ConnectorError) -> int | None:
    """Whole seconds for a ``Retry-After`` header (a throttled request), else None."""
    return max(1, math.ceil(error.retry_after)) if isinstance(error, ThrottledError) else None


def response_for(error: ConnectorError, what: str) -> func.HttpResponse:
    """The answer to a request that ended in ``error``; ``what`` names the request in logs."""
    status = status_for(error)
    if isinstance(error, InvalidInputError):
        return error_response(status, "too_large" if status == 413 else "invalid_request", str(error))
    if isinstance(error, NotFoundError):
        return error_response(status, "not_found", "no such account, message, attachment or folder")
    if isinstance(error, MissingScopeError):
        return error_response(
            status,
            "missing_scope",
            f"the account has not granted {error.scope}: set MAIL_ACTIONS_ENABLED=true and have its user "
            "connect again",
        )
    if isinstance(error, ReauthRequiredError):
        return error_response(status, "reauth_required", "the account's user must sign in again")
    wait = retry_after(error)
    if wait is not None:
        return error_response(
            status, "throttled", f"Graph throttles this mailbox; try again in {wait} s", {"Retry-After": str(wait)}
        )
    if isinstance(error, GraphError) and status in GRAPH_REFUSALS:
        return error_response(status, GRAPH_REFUSALS[status], f"Graph refused the request: {error.code}")
    if isinstance(error, UpstreamError):
        log.warning("%s: Graph failed: %s", what, type(error).__name__)
        return error_response(status, "upstream_error", "Microsoft Graph failed; try again")
    log.warning("%s: failed: %s", what, type(error).__name__)
    return error_response(status, "unavailable", "the request could not be handled right now; try again")
