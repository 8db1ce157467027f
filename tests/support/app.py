"""The app's registered functions, as the Functions host indexes them (once per process)."""

from __future__ import annotations

import functools
from typing import Any

import azure.functions as func


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
    """The user function behind a registered function, callable with ``func.HttpRequest``."""
    return app_functions()[name].get_user_function()


def http_request(method: str, url: str, *, body: bytes = b"", params: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None, route_params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest(method=method, url=url, body=body, params=params or {}, headers=headers or {},
                            route_params=route_params or {})
