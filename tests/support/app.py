"""The app's registered functions, as the Functions host indexes them (once per process)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func
from starlette.requests import Request


@functools.cache
def app_functions() -> dict[str, Any]:
    """Every function of ``function_app.app`` by name.

    azure-functions remembers the names it validated and refuses a second ``get_functions()``
    on one app, so tests share this one indexing.
    """
    import function_app

    function_app.app.functions_bindings = {}
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def handler(name: str) -> Any:
    """The user function behind a registered function; for an HTTP function the handler
    behind its HTTP streams endpoint (functions/http.py), callable with ``func.HttpRequest``."""
    user_function = app_functions()[name].get_user_function()
    return getattr(user_function, "classic", user_function)


def streams_request(method: str, url: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
                    route_params: dict[str, str] | None = None) -> Request:
    """A request as the worker hands it to an HTTP function under HTTP streams: FastAPI's
    (Starlette's) ``Request`` over an ASGI scope, the body read through ``receive``."""
    parts = urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    raw_headers.append((b"host", parts.netloc.encode("latin-1")))
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": method, "scheme": parts.scheme, "server": (parts.hostname, parts.port or default_port),
        "path": parts.path, "raw_path": parts.path.encode("latin-1"), "query_string": parts.query.encode("latin-1"),
        "root_path": "", "headers": raw_headers, "client": ("127.0.0.1", 50000), "path_params": route_params or {},
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def call_endpoint(name: str, request: Request, **others: Any) -> Any:
    """Run the registered HTTP function ``name`` as the worker runs it under HTTP streams."""
    return asyncio.run(app_functions()[name].get_user_function()(req=request, **others))


def http_request(method: str, url: str, *, body: bytes = b"", params: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None, route_params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest(method=method, url=url, body=body, params=params or {}, headers=headers or {},
                            route_params=route_params or {})
