"""HTTP streams: HTTP functions that take FastAPI's ``Request`` and return Starlette responses.

With ``azurefunctions-extensions-http-fastapi`` the Python worker runs a web server of its
own; the host forwards each HTTP request to it and copies the answer back as it comes, so
a ``StreamingResponse`` reaches the caller chunk by chunk and a request body reaches the
function as it arrives (``await request.body()``, ``request.stream()``)
(https://learn.microsoft.com/azure/azure-functions/functions-reference-python#http-streams).
The devhost does the same over its own socket: the function gets a Starlette ``Request``
over an ASGI scope whose ``receive`` reads the body off the connection in pieces, and its
response is run as an ASGI app whose ``send`` writes each piece to the connection
(``Content-Length`` framing when the response states one, chunked otherwise).

What the worker decides for an app, the devhost decides the same way:
- the app uses HTTP streams when its HTTP functions take the extension's request type;
  then every HTTP function must (Microsoft: "Combining streaming and non-streaming HTTP
  functions within the same app is not supported"; the worker's indexing refuses a
  ``func.HttpRequest`` annotation once the extension is loaded);
- the worker starts its web server only with ``PYTHON_ENABLE_INIT_INDEXING`` true (Python
  3.12 and older), so without it the HTTP functions are in error here, with that reason.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import typing
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from .invocation import FunctionSpec

INIT_INDEXING = "PYTHON_ENABLE_INIT_INDEXING"
BODY_PIECE_BYTES = 64 * 1024
_TRUE_LIKE = {"1", "true", "t", "yes", "y"}  # the worker's is_true_like


class ResponseWriter(typing.Protocol):
    """The connection's side of an ASGI response: headers once, then the body in pieces."""

    started: bool

    def start(self, status: int, headers: list[tuple[str, str]]) -> None: ...

    def write(self, data: bytes) -> None: ...

    def end(self) -> None: ...


def request_type() -> type | None:
    """The request type the extension registered, or None when no web extension is loaded
    (the worker's ``HttpV2FeatureChecker``)."""
    try:
        from azurefunctions.extensions.base import HttpV2FeatureChecker, RequestTrackerMeta
    except ImportError:
        return None
    if not HttpV2FeatureChecker.http_v2_enabled():
        return None
    found = RequestTrackerMeta.get_request_type()
    return found if isinstance(found, type) else None


def takes_streams_request(spec: FunctionSpec) -> bool:
    wanted = request_type()
    if wanted is None:
        return False
    try:
        annotation = typing.get_type_hints(spec.handler).get(spec.trigger.name)
    except (NameError, TypeError):
        return False
    return inspect.isclass(annotation) and issubclass(annotation, wanted)


def init_indexing_enabled() -> bool:
    return os.environ.get(INIT_INDEXING, "").strip().lower() in _TRUE_LIKE


def asgi_scope(method: str, url: str, raw_headers: list[tuple[str, str]], client: tuple[str, int],
               server: tuple[str, int], route_params: dict[str, str]) -> dict[str, Any]:
    """The scope of one request, as the worker's web server builds it, with the host's route
    values as ``path_params`` (the worker's ``sync_route_params``)."""
    parts = urlsplit(url)
    return {
        "type": "http",
        # 2.4: a response that cannot be sent raises OSError in ``send`` instead of the app
        # listening on ``receive`` for the disconnect (ASGI HTTP spec, "Disconnected Client").
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": parts.scheme or "http",
        "path": unquote(parts.path),
        "raw_path": parts.path.encode("latin-1"),
        "query_string": parts.query.encode("latin-1"),
        "root_path": "",
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in raw_headers],
        "client": client,
        "server": server,
        "path_params": dict(route_params),
    }


def make_request(scope: dict[str, Any], read_piece: Callable[[int], bytes], has_body: bool) -> Any:
    """A Starlette ``Request`` over ``scope`` whose body comes off the connection as it arrives."""
    from starlette.requests import Request

    state = {"done": False, "body": has_body}

    async def receive() -> dict[str, Any]:
        if state["done"]:
            # The body is read: the next event would be the client going away, which the
            # devhost only learns by a failed write. Nothing here waits for it.
            await asyncio.sleep(0)
            return {"type": "http.disconnect"}
        piece = await asyncio.to_thread(read_piece, BODY_PIECE_BYTES) if state["body"] else b""
        if not piece:
            state["done"] = True
        return {"type": "http.request", "body": piece, "more_body": bool(piece)}

    return Request(scope, receive)


def as_asgi_response(value: Any) -> Any:
    """What the function returned, as the worker's web server (FastAPI) answers it: a
    Starlette response as it is, anything else as JSON."""
    from starlette.responses import Response

    if isinstance(value, Response):
        return value
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse

    return JSONResponse(jsonable_encoder(value))


def send_response(response: Any, scope: dict[str, Any], writer: ResponseWriter) -> None:
    """Run ``response`` as an ASGI app on this thread, each message written as it comes."""

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
            writer.start(int(message["status"]), headers)
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            if body:
                writer.write(body)
            if not message.get("more_body", False):
                writer.end()

    asyncio.run(response(scope, receive, send))
