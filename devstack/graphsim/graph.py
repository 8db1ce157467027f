"""Microsoft Graph v1.0: the front door (authentication, throttling, faults, routing, request log).

Every request is authenticated like Graph does it (RS256 signature, audience, expiry;
401 ``InvalidAuthenticationToken``), throttled like Outlook (4 concurrent requests and a
request budget per app per mailbox: 429 with ``Retry-After`` and
``ApplicationThrottled``), may be hit by injected faults, and is then handed to its
area: ``$batch`` and :attr:`GraphApi.top_level` (``subscriptions``, ``drives``) at the top,
and under ``/me`` or ``/users/{id}`` :attr:`GraphApi.areas` (``mailFolders``, ``messages``,
``translateExchangeIds``, ``drive``, ``drives``); further areas register in these two. The inner requests of a
``$batch`` pass through the same door one by one (:meth:`GraphApi.serve`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .context import RequestLog, SimContext
from .drive import DriveService
from .graph_batch import BatchApi
from .graph_common import (
    DENIED,
    USER_READ,
    AreaHandler,
    Caller,
    normalize_path,
    select_fields,
    select_of,
)
from .graph_folders import FoldersApi
from .graph_mail import MailApi
from .graph_subscriptions import SubscriptionsApi
from .jwt import TokenInvalid
from .oauth import GRAPH_AUDIENCE
from .state import SimState
from .wire import Request, Response, graph_error


class MailboxThrottle:
    """Outlook's limits per app and mailbox: concurrent requests and a request budget per window.

    (https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits)
    """

    def __init__(self, state: SimState) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], int] = {}
        self._budget: dict[tuple[str, str], deque[float]] = {}

    def enter(self, key: tuple[str, str]) -> Response | None:
        """Take a slot; a 429 when the mailbox is over one of its limits."""
        settings = self._state.settings
        with self._lock:
            now = time.monotonic()
            window = self._budget.setdefault(key, deque())
            while window and window[0] <= now - settings.mailbox_budget_window_seconds:
                window.popleft()
            if len(window) >= settings.mailbox_budget:
                return self.throttled("Application is over its MailboxRequests limit.")
            if self._in_flight.get(key, 0) >= settings.mailbox_concurrency:
                return self.throttled("Application is over its MailboxConcurrency limit.")
            window.append(now)
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return None

    def leave(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._in_flight[key] -= 1

    def throttled(self, message: str) -> Response:
        return graph_error(429, "ApplicationThrottled", message,
                           {"Retry-After": str(self._state.settings.throttle_retry_after_seconds)})


class GraphApi:
    def __init__(self, ctx: SimContext) -> None:
        self.sim = ctx
        self.state = ctx.state
        self._claims_cache: dict[str, dict[str, Any]] = {}
        self.throttle = MailboxThrottle(ctx.state)
        self.drive = DriveService.build(ctx.state, ctx.delivery, ctx.requests)
        self.subscriptions = SubscriptionsApi(ctx, self.drive.subscriptions)
        self.mail = MailApi(ctx)
        self.folders = FoldersApi(ctx, self.mail)
        self.batch = BatchApi(ctx, self.serve, self.user_of)
        # top-level segments other than /me and /users: (request, caller, segments after it) -> response
        self.top_level: dict[str, Callable[[Request, Caller, list[str]], Response]] = {
            "subscriptions": self.subscriptions.handle,
            "drives": self.drive.handle_drives,
        }
        self.areas: dict[str, AreaHandler] = {
            "mailfolders": self.folders.handle,
            "messages": self.mail.handle,
            "translateexchangeids": self.mail.translate_ids,
            "drive": self.drive.handle_user,
            "drives": self.drive.handle_user,
        }

    # entry --------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        caller = self._authenticate(request)
        if isinstance(caller, Response):
            self._log(request, caller, None, None)
            return caller
        segments = normalize_path(request.path)
        if segments == ["$batch"]:
            if request.method != "POST":
                response = graph_error(405, "BadRequest", "Specified HTTP method is not allowed for the request.")
                self._log(request, response, caller, segments)
                return response
            response, inner = self.batch.handle(request, caller)
            self._log(request, response, caller, segments, inner)
            return response
        response = self.serve(request, caller, segments)
        self._log(request, response, caller, segments)
        return response

    def serve(self, request: Request, caller: Caller, segments: list[str] | None = None) -> Response:
        """One Graph request of an authenticated caller: faults, throttling, then its area."""
        if segments is None:
            segments = normalize_path(request.path)
        faults = self.state.faults
        rng = self.sim.delivery.rng
        if faults.throttle_rate and rng.random() < faults.throttle_rate:
            return self.throttle.throttled("Application is over its resource limit.")
        if faults.fail_rate and rng.random() < faults.fail_rate:
            if rng.random() < 0.5:
                return graph_error(503, "ServiceUnavailable", "The service is temporarily unavailable.",
                                   {"Retry-After": "1"})
            return graph_error(500, "InternalServerError", "An internal server error occurred.")
        key = (caller.app_id, self._mailbox_of(caller, segments))
        if key[1] in faults.failing_mailboxes:
            return graph_error(500, "InternalServerError", "An internal server error occurred.")
        refused = self.throttle.enter(key)
        if refused is not None:
            return refused
        try:
            latency = self.state.settings.graph_latency_ms
            if latency:  # Graph's own processing time, inside the concurrency slot
                time.sleep(latency / 1000.0)
            return self._route(request, caller, segments)
        finally:
            self.throttle.leave(key)

    def _mailbox_of(self, caller: Caller, segments: list[str]) -> str:
        if len(segments) >= 2 and segments[0].lower() == "users":
            user = self.state.find_user(segments[1])
            return user.id if user else segments[1].lower()
        if caller.user is not None:
            return caller.user.id
        return "app:" + caller.app_id

    def _log(self, request: Request, response: Response, caller: Caller | Response | None,
             segments: list[str] | None, inner: list[dict[str, Any]] | None = None) -> None:
        user_id = app_id = None
        if isinstance(caller, Caller):
            app_id, user_id = caller.app_id, self.user_of(caller, segments or [])
        entry = RequestLog.entry(request.method, request.path, request.raw_path, response.status, user_id, app_id)
        if inner is not None:
            entry["requests"] = inner
        self.sim.requests.append(entry)

    def user_of(self, caller: Caller, segments: list[str]) -> str | None:
        mailbox = self._mailbox_of(caller, segments)
        return None if mailbox.startswith("app:") else mailbox

    # authentication -------------------------------------------------------------------------
    def _authenticate(self, request: Request) -> Caller | Response:
        header = request.header("authorization") or ""
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        token = header[7:].strip()
        claims = self._claims_cache.get(token)
        if claims is None:
            try:
                claims = self.sim.key.verify(token)
            except TokenInvalid:
                return graph_error(401, "InvalidAuthenticationToken", "Access token validation failure.")
            if claims.get("aud") not in (GRAPH_AUDIENCE, GRAPH_AUDIENCE + "/", "00000003-0000-0000-c000-000000000000"):
                return graph_error(401, "InvalidAuthenticationToken",
                                   "Access token validation failure. Invalid audience.")
            if len(self._claims_cache) > 10_000:
                self._claims_cache.clear()
            self._claims_cache[token] = claims
        if float(claims.get("exp", 0)) < time.time():
            return graph_error(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
        app_id = str(claims.get("appid", ""))
        if claims.get("idtyp") == "app":
            return Caller(app_id, None, set(claims.get("roles", [])))
        user = self.state.users.get(str(claims.get("oid", "")))
        if user is None:
            return graph_error(401, "InvalidAuthenticationToken", "The user in the token does not exist.")
        return Caller(app_id, user, set(str(claims.get("scp", "")).split()))

    # routing ----------------------------------------------------------------------------------
    def _route(self, request: Request, caller: Caller, seg: list[str]) -> Response:
        if not seg:
            return graph_error(400, "BadRequest", "Invalid request.")
        head = seg[0].lower()
        top = self.top_level.get(head)
        if top is not None:
            return top(request, caller, seg[1:])
        if head == "$batch":
            return graph_error(400, "BadRequest", "A batch request cannot contain another batch request.")
        if head == "me":
            if caller.user is None:
                return graph_error(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            user, rest = caller.user, seg[1:]
        elif head == "users" and len(seg) >= 2:
            found = self.state.find_user(seg[1])
            if found is None:
                return graph_error(404, "Request_ResourceNotFound",
                                   f"Resource '{seg[1]}' does not exist or one of its queried reference-property "
                                   "objects are not present.")
            user, rest = found, seg[2:]
            if caller.user is not None and caller.user.id != user.id:
                if not rest and caller.has({"User.Read.All", "User.ReadBasic.All"}):
                    return Response.json(200, select_fields(user.public(), select_of(request)))
                return graph_error(403, "ErrorAccessDenied", DENIED)
        else:
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{seg[0]}'.")
        if not rest:
            if request.method != "GET":
                return graph_error(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request.")
            if not caller.has(USER_READ):
                return graph_error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
            return Response.json(200, select_fields(user.public(), select_of(request)))
        area = self.areas.get(rest[0].lower())
        if area is None:
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{rest[0]}'.")
        return area(request, caller, user, rest)
