"""The product's backend (function key): POST /api/connect-sessions,
GET /api/connect-sessions/{sessionId}; and the timer ``purge_expired_connects``.

JSON in and out; bad input is a 400 ``{"error": {"code", "message"}}``. The timer deletes
expired pending sign-ins and connect sessions an hour past their expiry, so anonymous or
abandoned starts leave nothing behind (``shared.connect_sessions.purge_expired``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from functions.api_errors import status_for
from functions.http import secured
from shared import bootstrap
from shared.connect_sessions import (
    create_session,
    parse_session_request,
    purge_expired,
    show_session,
)
from shared.errors import ConnectorError, NotFoundError, SessionInputError

bp = func.Blueprint()
log = logging.getLogger(__name__)

# Every 10 minutes: a pending sign-in lives 10 minutes, so none outlives its expiry by more.
PURGE_SCHEDULE = "0 */10 * * * *"


def _json(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             headers={"Cache-Control": "no-store"})


def _error(status: int, code: str, message: str) -> func.HttpResponse:
    return _json({"error": {"code": code, "message": message}}, status)


@bp.function_name("connect_sessions_create")
@bp.route(route="connect-sessions", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@secured
def connect_sessions_create(req: func.HttpRequest) -> func.HttpResponse:
    try:
        body = create_session(bootstrap.services(), parse_session_request(req.get_body() or b""))
    except SessionInputError as exc:
        return _error(status_for(exc), exc.code, str(exc))
    except ConnectorError as exc:
        log.warning("connect sessions: creating failed: %s", type(exc).__name__)
        return _error(status_for(exc), "unavailable", "the connect session could not be created; try again")
    return _json(body, 201)


@bp.function_name("connect_sessions_item")
@bp.route(route="connect-sessions/{session_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@secured
def connect_sessions_item(req: func.HttpRequest) -> func.HttpResponse:
    try:
        return _json(show_session(bootstrap.services(), req.route_params.get("session_id", "")))
    except SessionInputError as exc:
        return _error(status_for(exc), exc.code, str(exc))
    except NotFoundError as exc:
        return _error(status_for(exc), "not_found", str(exc))
    except ConnectorError as exc:
        log.warning("connect sessions: reading failed: %s", type(exc).__name__)
        return _error(status_for(exc), "unavailable", "the connect session could not be read; try again")


@bp.function_name("purge_expired_connects")
@bp.timer_trigger(arg_name="timer", schedule=PURGE_SCHEDULE, run_on_startup=False, use_monitor=True)
def purge_expired_connects(timer: func.TimerRequest) -> None:
    purge_expired(bootstrap.services())
