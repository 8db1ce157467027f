"""An app with one HTTP streams function and one classic one: what the worker refuses to load."""

from __future__ import annotations

import azure.functions as func
from azurefunctions.extensions.http.fastapi import PlainTextResponse, Request

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="streams", methods=["GET"])
async def streams(req: Request) -> PlainTextResponse:
    return PlainTextResponse("streams")


@app.route(route="classic", methods=["GET"])
def classic(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("classic")
