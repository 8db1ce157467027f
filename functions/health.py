"""GET /api/health (anonymous: ``ok`` or ``degraded``) and GET /api/health/details (function
key: which dependency, which error). Both answer from a report a few seconds old at most
(``shared.health``), so neither can be used to fan out billed Key Vault calls."""

from __future__ import annotations

import json

import azure.functions as func

from functions.http import secured
from shared import bootstrap
from shared.health import HealthReport, current_health, details_of

bp = func.Blueprint()


def _answer(report: HealthReport, body: dict[str, object]) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body),
        status_code=200 if report.healthy else 503,
        mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@secured
def health(req: func.HttpRequest) -> func.HttpResponse:
    report = current_health(bootstrap.services())
    return _answer(report, {"status": report.status})


@bp.function_name("health_details")
@bp.route(route="health/details", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@secured
def health_details(req: func.HttpRequest) -> func.HttpResponse:
    services = bootstrap.services()
    report = current_health(services)
    return _answer(report, details_of(services, report))
