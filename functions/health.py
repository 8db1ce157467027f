"""GET /api/health: is the app able to reach table storage, queues and Key Vault?"""

from __future__ import annotations

import json

import azure.functions as func

from shared import bootstrap
from shared.health import check_dependencies

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    report = check_dependencies(bootstrap.services())
    status = 200 if report.healthy else 503
    return func.HttpResponse(json.dumps(report.as_json()), status_code=status, mimetype="application/json")
