"""JSON batching: ``POST /v1.0/$batch`` (https://learn.microsoft.com/graph/json-batching).

``{"requests": [{"id", "method", "url", "headers"?, "body"?, "dependsOn"?}]}``, at most
20, answered ``200 {"responses": [{"id", "status", "headers", "body"}]}``. Each inner
request runs through the same door as a request of its own (scopes, faults, Outlook's
throttling: a 429 inside carries its own ``Retry-After``) with the batch's token.
Requests with no unmet ``dependsOn`` run together, at most 4 at a time: Graph dispatches
up to four requests of a batch to Outlook at once. A request whose dependency failed
gets 424 Failed Dependency. A body that is not JSON comes back base64-encoded, as Graph
returns binary bodies in a batch.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .context import RequestLog, SimContext
from .graph_common import Caller, json_object, normalize_path
from .wire import Request, Response, graph_error

MAX_BATCH_REQUESTS = 20
BATCH_PARALLELISM = 4
METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")

Serve = Callable[[Request, Caller, list[str] | None], Response]
UserOf = Callable[[Caller, list[str]], str | None]


class BatchApi:
    def __init__(self, ctx: SimContext, serve: Serve, user_of: UserOf) -> None:
        self.sim = ctx
        self._serve = serve
        self._user_of = user_of
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="graphsim-batch")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def handle(self, request: Request, caller: Caller) -> tuple[Response, list[dict[str, Any]]]:
        """The batch's answer and the request log entries of its inner requests."""
        body = json_object(request)
        if isinstance(body, Response):
            return body, []
        items = body.get("requests")
        if not isinstance(items, list) or not items:
            return graph_error(400, "BadRequest", "Invalid batch payload format: 'requests' is required."), []
        if len(items) > MAX_BATCH_REQUESTS:
            return graph_error(400, "BadRequest", f"The number of batch requests cannot exceed "
                                                  f"{MAX_BATCH_REQUESTS}."), []
        parsed = self._parse(request, items)
        if isinstance(parsed, Response):
            return parsed, []
        requests, depends = parsed
        results: dict[str, Response] = {}
        log: list[dict[str, Any]] = []
        pending = list(requests)
        while pending:
            ready = [rid for rid in pending if all(d in results for d in depends[rid])]
            pending = [rid for rid in pending if rid not in ready]
            runnable = []
            for rid in ready:
                if any(not 200 <= results[d].status < 300 for d in depends[rid]):
                    results[rid] = graph_error(424, "FailedDependency", "A request this one depends on failed.")
                    log.append(self._entry(rid, requests[rid], results[rid], caller))
                else:
                    runnable.append(rid)
            for start in range(0, len(runnable), BATCH_PARALLELISM):
                wave = runnable[start:start + BATCH_PARALLELISM]
                if len(wave) == 1:
                    answers = [self._serve(requests[wave[0]], caller, None)]
                else:
                    answers = list(self._pool.map(lambda rid: self._serve(requests[rid], caller, None), wave))
                for rid, answer in zip(wave, answers, strict=True):
                    results[rid] = answer
                    log.append(self._entry(rid, requests[rid], answer, caller))
        responses = [self._render(rid, results[rid]) for rid in requests]
        return Response.json(200, {"responses": responses}), log

    def _parse(self, outer: Request, items: list[Any]) -> tuple[dict[str, Request], dict[str, list[str]]] | Response:
        requests: dict[str, Request] = {}
        depends: dict[str, list[str]] = {}
        for item in items:
            if not isinstance(item, dict):
                return graph_error(400, "BadRequest", "Invalid batch payload format: each request is an object.")
            rid, method, url = item.get("id"), str(item.get("method", "")).upper(), item.get("url")
            if not isinstance(rid, str | int) or isinstance(rid, bool) or str(rid) == "":
                return graph_error(400, "BadRequest", "Invalid batch payload format: each request needs an id.")
            rid = str(rid)
            if rid in requests:
                return graph_error(400, "BadRequest", f"Batch request ids must be unique: '{rid}' is used twice.")
            if method not in METHODS:
                return graph_error(400, "BadRequest", f"Request '{rid}': the method '{method}' is not supported.")
            if not isinstance(url, str) or not url or "://" in url:
                return graph_error(400, "BadRequest", f"Request '{rid}': the url must be relative, "
                                                      "like /me/messages.")
            after = item.get("dependsOn") or []
            if not isinstance(after, list) or any(str(d) not in requests for d in after):
                return graph_error(400, "BadRequest", f"Request '{rid}': dependsOn must name requests that come "
                                                      "before it in the batch.")
            headers = item.get("headers") or {}
            if not isinstance(headers, dict):
                return graph_error(400, "BadRequest", f"Request '{rid}': headers must be an object.")
            inner_headers = {"authorization": outer.header("authorization") or ""}
            inner_headers.update({str(k).lower(): ", ".join(map(str, v)) if isinstance(v, list) else str(v)
                                  for k, v in headers.items()})
            body = item.get("body")
            raw = b""
            if body is not None:
                if isinstance(body, str) and "json" not in inner_headers.get("content-type", "json"):
                    raw = body.encode("utf-8")
                else:
                    raw = json.dumps(body).encode("utf-8")
            relative = url if url.startswith("/") else "/" + url
            split = urlsplit(relative)
            query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            requests[rid] = Request(method, "/v1.0" + unquote(split.path), "/v1.0" + relative, query,
                                    inner_headers, raw, outer.base_url)
            depends[rid] = [str(d) for d in after]
        return requests, depends

    def _entry(self, rid: str, request: Request, response: Response, caller: Caller) -> dict[str, Any]:
        entry = RequestLog.entry(request.method, request.path, request.raw_path, response.status,
                                 self._user_of(caller, normalize_path(request.path)), caller.app_id)
        entry["id"] = rid
        return entry

    @staticmethod
    def _render(rid: str, response: Response) -> dict[str, Any]:
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        out: dict[str, Any] = {"id": rid, "status": response.status, "headers": headers}
        if response.body:
            content_type = headers.get("Content-Type", "")
            if "json" in content_type:
                out["body"] = json.loads(response.body)
            else:
                out["body"] = base64.b64encode(response.body).decode("ascii")
        return out
