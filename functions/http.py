"""Response headers every HTTP function of the app sends, whatever the route or the outcome.

``X-Content-Type-Options: nosniff`` on every response, so that no browser reads a JSON
error or a plain-text echo as HTML or script. ``Strict-Transport-Security`` on every
response to an HTTPS request (RFC 6797 section 7.2: never over plain HTTP, where it would
be ignored anyway); the deployed app is HTTPS only (``httpsOnly`` in infra/app/function.bicep),
so browsers that met it once never try plain HTTP again. Behind the App Service front end
the request may reach the worker as ``http`` with ``X-Forwarded-Proto: https``: both count.

Every route's function is wrapped with ``secured``; tests/functions/test_security_headers.py
calls every registered route and fails for one that is not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import azure.functions as func

HSTS = "max-age=31536000"
_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def is_https(req: func.HttpRequest) -> bool:
    forwarded = req.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return req.url.lower().startswith("https://") or forwarded == "https"


def add_security_headers(response: func.HttpResponse, req: func.HttpRequest | None) -> func.HttpResponse:
    response.headers["X-Content-Type-Options"] = "nosniff"
    if req is not None and is_https(req):
        response.headers["Strict-Transport-Security"] = HSTS
    return response


def secured(handler: _Handler) -> _Handler:
    """``handler``, with the security headers on every response it returns."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        response = handler(*args, **kwargs)
        if isinstance(response, func.HttpResponse):
            request = next((a for a in (*args, *kwargs.values()) if isinstance(a, func.HttpRequest)), None)
            add_security_headers(response, request)
        return response

    wrapper.secured = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
