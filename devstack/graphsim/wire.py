"""Request and response values passed between the HTTP listener and the endpoint modules."""

from __future__ import annotations

import datetime as dt
import html
import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Request:
    method: str
    path: str  # percent-decoded path, no query
    raw_path: str  # as received, with query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    base_url: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, str]:
        parsed = parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        hdrs = {"Content-Type": "application/json; charset=utf-8"}
        hdrs.update(headers or {})
        return cls(status, json.dumps(payload).encode("utf-8"), hdrs)

    @classmethod
    def html(cls, status: int, text: str, headers: dict[str, str] | None = None) -> Response:
        hdrs = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
        hdrs.update(headers or {})
        return cls(status, text.encode("utf-8"), hdrs)

    @classmethod
    def redirect(cls, location: str) -> Response:
        return cls(302, b"", {"Location": location, "Cache-Control": "no-store"})

    @classmethod
    def empty(cls, status: int = 204) -> Response:
        return cls(status)


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """Graph's OData error body (https://learn.microsoft.com/graph/errors)."""
    request_id = str(uuid.uuid4())
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    hdrs = {"request-id": request_id, "client-request-id": request_id}
    if status == 401:
        hdrs["WWW-Authenticate"] = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
                                    'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"')
    hdrs.update(headers or {})
    return Response.json(
        status,
        {"error": {"code": code, "message": message,
                   "innerError": {"date": now, "request-id": request_id, "client-request-id": request_id}}},
        hdrs,
    )


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)
