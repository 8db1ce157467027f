"""Graph's webhooks: POST /api/notifications and POST /api/lifecycle (the hot path).

Only the settings are touched here: no SDK import, no storage read, so Graph's 10 s
validation handshake and 3 s notification deadline hold even on a cold start.
"""

from __future__ import annotations

import azure.functions as func

from shared.webhook import validation_response

bp = func.Blueprint()


def _handshake(req: func.HttpRequest) -> func.HttpResponse | None:
    token = req.params.get("validationToken")
    if token is None:
        return None
    answer = validation_response(token)
    return func.HttpResponse(answer.body, status_code=answer.status, mimetype="text/plain")


@bp.function_name("graph_notifications")
@bp.route(route="notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    handshake = _handshake(req)
    if handshake is not None:
        return handshake
    return func.HttpResponse("change notifications are not accepted yet", status_code=503)


@bp.function_name("graph_lifecycle")
@bp.route(route="lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    handshake = _handshake(req)
    if handshake is not None:
        return handshake
    return func.HttpResponse("lifecycle notifications are not accepted yet", status_code=503)
