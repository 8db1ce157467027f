"""Graph's webhooks: POST /api/notifications and POST /api/lifecycle (the hot path).

Only the settings are touched here: no SDK import, no storage read, so Graph's 10 s
validation handshake and 3 s notification deadline hold even on a cold start. Verified
notifications leave through the queue output binding, written by the host once the
function returned (docs/graph-notes.md "Change notifications"). The app is on HTTP streams
(functions/http.py), where the host forwards the worker's answer as it comes and writes
output bindings after the invocation's result: a 202 can reach Graph before the queue
write, and a write that then fails is not retried by Graph. A notification only says
"run the delta": the next notification of the account, or the renewal's catch-up sync,
brings whatever that trigger would have (README "HTTP streams"). The handlers never wait,
so they run on the worker's event loop (``secured_on_loop``).
"""

from __future__ import annotations

import logging

import azure.functions as func

from functions.http import secured_on_loop
from shared import bootstrap
from shared.config import NOTIFICATION_QUEUE
from shared.errors import InvalidInputError, PayloadTooLargeError
from shared.webhook import read_notification_batch, validation_response

bp = func.Blueprint()
log = logging.getLogger(__name__)


def _handshake(req: func.HttpRequest) -> func.HttpResponse | None:
    token = req.params.get("validationToken")
    if token is None:
        return None
    answer = validation_response(token)
    return func.HttpResponse(answer.body, status_code=answer.status, mimetype="text/plain")


def _accept_batch(req: func.HttpRequest, outbox: func.Out[list[str]], endpoint: str) -> func.HttpResponse:
    handshake = _handshake(req)
    if handshake is not None:
        return handshake
    try:
        batch = read_notification_batch(req.get_body(), bootstrap.settings().client_state_keys)
    except PayloadTooLargeError as error:
        log.warning("%s: rejected a body: %s", endpoint, error)
        return func.HttpResponse(str(error), status_code=413, mimetype="text/plain")
    except InvalidInputError as error:
        log.warning("%s: rejected a body: %s", endpoint, error)
        return func.HttpResponse(str(error), status_code=400, mimetype="text/plain")
    if batch.dropped:
        log.warning("%s: dropped %d notification(s) with a bad clientState or shape", endpoint, batch.dropped)
    if batch.messages:
        outbox.set(batch.messages)
    return func.HttpResponse(
        f"accepted {batch.accepted}, dropped {batch.dropped}", status_code=202, mimetype="text/plain"
    )


@bp.function_name("graph_notifications")
@bp.route(route="notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.queue_output(arg_name="outbox", queue_name=NOTIFICATION_QUEUE, connection="AzureWebJobsStorage")
@secured_on_loop
def graph_notifications(req: func.HttpRequest, outbox: func.Out[list[str]]) -> func.HttpResponse:
    return _accept_batch(req, outbox, "notifications")


@bp.function_name("graph_lifecycle")
@bp.route(route="lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.queue_output(arg_name="outbox", queue_name=NOTIFICATION_QUEUE, connection="AzureWebJobsStorage")
@secured_on_loop
def graph_lifecycle(req: func.HttpRequest, outbox: func.Out[list[str]]) -> func.HttpResponse:
    return _accept_batch(req, outbox, "lifecycle")
