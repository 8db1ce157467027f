"""The app's HTTP functions on HTTP streams, and the headers every response of theirs sends.

**HTTP streams.** Importing ``azurefunctions.extensions.http.fastapi`` (here, which every
HTTP blueprint imports) switches the Python worker to HTTP streams for the whole app: the
host forwards each HTTP request to a web server inside the worker, the function takes a
FastAPI ``Request`` and returns a Starlette ``Response``, and a ``StreamingResponse``
goes out chunk by chunk instead of as one body
(https://learn.microsoft.com/azure/azure-functions/functions-reference-python#http-streams).
It needs the app setting ``PYTHON_ENABLE_INIT_INDEXING=1`` (Python 3.12 and older), and it
is all or nothing: "If you are using HTTP streams, all HTTP functions in the app need to
use streaming. Combining streaming and non-streaming HTTP functions within the same app is
not supported" (https://learn.microsoft.com/azure/azure-functions/functions-bindings-http-webhook-trigger).
The worker checks it: with the extension loaded, a trigger annotated
``azure.functions.HttpRequest`` fails indexing.

So every route is registered through ``secured`` (or ``secured_on_loop``), which turns a
handler written against ``func.HttpRequest`` into the function the worker calls: it reads
the request's body (bounded by the host's ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT``), hands
the handler a ``func.HttpRequest``, and returns what the handler returned as a Starlette
response: a ``func.HttpResponse`` converted, a Starlette ``Response`` (a
``StreamingResponse`` of a download) as it is. The handler runs in a worker thread
(``secured``), since it may wait on Graph or storage and the worker's event loop also
serves every other request of the instance; ``secured_on_loop`` runs one that never waits
(the webhooks) on the loop itself, without the thread hop. The handler behind a
registered function is its ``classic`` attribute (what the function tests call).

**Headers.** ``X-Content-Type-Options: nosniff`` on every response, so that no browser
reads a JSON error or a plain-text echo as HTML or script. ``Strict-Transport-Security``
on every response to an HTTPS request (RFC 6797 section 7.2: never over plain HTTP, where
it would be ignored anyway); the deployed app is HTTPS only (``httpsOnly`` in
infra/app/function.bicep), so browsers that met it once never try plain HTTP again. Behind
the App Service front end (and the host's forwarding to the worker) the request may
arrive as ``http`` with ``X-Forwarded-Proto: https``: both count.
tests/functions/test_security_headers.py calls every registered route and fails for one
that is not secured.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

HSTS = "max-age=31536000"
ClassicHandler = Callable[..., Any]
Endpoint = Callable[..., Awaitable[Response]]


def is_https(req: func.HttpRequest | Request) -> bool:
    forwarded = req.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return str(req.url).lower().startswith("https://") or forwarded == "https"


def add_security_headers(response: Any, req: func.HttpRequest | Request | None) -> Any:
    """``response`` (a ``func.HttpResponse`` or a Starlette one) with the headers above."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    if req is not None and is_https(req):
        response.headers["Strict-Transport-Security"] = HSTS
    return response


def secured(handler: ClassicHandler) -> Endpoint:
    """The HTTP streams function for ``handler``, run in a worker thread; see the module docstring."""
    return _endpoint(handler, in_thread=True)


def secured_on_loop(handler: ClassicHandler) -> Endpoint:
    """As ``secured``, for a handler that never waits: it runs on the worker's event loop."""
    return _endpoint(handler, in_thread=False)


def classic_request(request: Request, body: bytes) -> func.HttpRequest:
    """``request`` as a ``func.HttpRequest``: repeated headers joined with ``", "`` (RFC 9110
    section 5.3), a repeated query parameter by its first value, as the classic worker does."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        params.setdefault(name, value)
    route_params = {str(k): str(v) for k, v in request.path_params.items()}
    return func.HttpRequest(method=request.method, url=str(request.url), headers=headers, params=params,
                            route_params=route_params, body=body)


def streams_response(response: Any) -> Response:
    """What a handler returned, as the Starlette response HTTP streams sends."""
    if isinstance(response, Response):
        return response
    if isinstance(response, func.HttpResponse):
        headers = dict(response.headers.items())
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = f"{response.mimetype}; charset={response.charset}"
        return Response(content=response.get_body(), status_code=response.status_code, headers=headers)
    if response is None:
        return Response(status_code=204)
    raise TypeError(f"an HTTP handler returned {type(response).__name__}")


def _endpoint(handler: ClassicHandler, *, in_thread: bool) -> Endpoint:
    hints = typing.get_type_hints(handler)
    signature = inspect.signature(handler)
    trigger = next((name for name in signature.parameters if hints.get(name) is func.HttpRequest), None)
    if trigger is None:
        raise TypeError(f"{handler.__name__} takes no func.HttpRequest")
    wants_context = "context" in signature.parameters
    parameters = [
        p.replace(annotation=Request if p.name == trigger else hints.get(p.name, p.annotation))
        for p in signature.parameters.values()
    ]
    if in_thread and not wants_context:
        # The worker passes ``context`` to a function that names it; the thread needs its id.
        parameters.append(inspect.Parameter("context", inspect.Parameter.KEYWORD_ONLY, annotation=func.Context))

    async def endpoint(**arguments: Any) -> Response:
        request: Request = arguments[trigger]
        context = arguments.get("context")
        passed = {name: value for name, value in arguments.items() if name != "context" or wants_context}
        passed[trigger] = classic_request(request, await request.body())
        if in_thread:
            result = await asyncio.to_thread(_in_thread, handler, passed, context)
        else:
            result = handler(**passed)
        return add_security_headers(streams_response(result), request)  # type: ignore[no-any-return]

    functools.update_wrapper(endpoint, handler)
    del endpoint.__wrapped__  # type: ignore[attr-defined] # the worker reads this signature, not the handler's
    endpoint.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters, return_annotation=Response)
    endpoint.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": Response}
    endpoint.classic = handler  # type: ignore[attr-defined]
    endpoint.secured = True  # type: ignore[attr-defined]
    return endpoint


def _in_thread(handler: ClassicHandler, arguments: Mapping[str, Any], context: Any) -> Any:
    if context is not None:
        # Logs written from a thread reach the invocation's log only with its id set there
        # (https://learn.microsoft.com/azure/azure-functions/functions-reference-python#logging).
        context.thread_local_storage.invocation_id = context.invocation_id
    return handler(**arguments)
