"""Microsoft Graph v1.0: users, mail folders, messages, delta and subscriptions.

Every request is authenticated like Graph does it (RS256 signature, audience, expiry;
401 ``InvalidAuthenticationToken``), authorised by scope (403), throttled like Outlook
(4 concurrent requests and a request budget per app per mailbox: 429 with
``Retry-After`` and ``ApplicationThrottled``) and may be hit by injected faults.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from .context import SimContext
from .drive import DriveService
from .graph_common import (
    _PAREN,
    DENIED,
    USER_READ,
    Caller,
    _select,
    _select_fields,
)
from .graph_mail import MailApi
from .graph_subscriptions import SubscriptionsApi
from .jwt import TokenInvalid
from .oauth import GRAPH_AUDIENCE
from .wire import Request, Response, graph_error


class GraphApi:
    def __init__(self, ctx: SimContext) -> None:
        self.sim = ctx
        self.state = ctx.state
        self._claims_cache: dict[str, dict[str, Any]] = {}
        self._throttle_lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], int] = {}
        self._budget: dict[tuple[str, str], deque[float]] = {}
        self.drive = DriveService.build(ctx.state, ctx.delivery)
        self.subscriptions = SubscriptionsApi(ctx, self.drive.subscriptions)
        self.mail = MailApi(ctx)

    # entry --------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        settings = self.state.settings
        caller = self._authenticate(request)
        if isinstance(caller, Response):
            return caller
        path = _PAREN.sub(lambda m: "/" + m.group(1), request.path[len("/v1.0"):]).strip("/")
        segments = path.split("/") if path else []
        faults = self.state.faults
        rng = self.sim.delivery.rng
        if faults.throttle_rate and rng.random() < faults.throttle_rate:
            return self._throttled("Application is over its resource limit.")
        if faults.fail_rate and rng.random() < faults.fail_rate:
            if rng.random() < 0.5:
                return graph_error(503, "ServiceUnavailable", "The service is temporarily unavailable.",
                                   {"Retry-After": "1"})
            return graph_error(500, "InternalServerError", "An internal server error occurred.")
        mailbox_key = self._mailbox_of(caller, segments)
        key = (caller.app_id, mailbox_key)
        with self._throttle_lock:
            now = time.monotonic()
            window = self._budget.setdefault(key, deque())
            while window and window[0] <= now - settings.mailbox_budget_window_seconds:
                window.popleft()
            if len(window) >= settings.mailbox_budget:
                return self._throttled("Application is over its MailboxRequests limit.")
            if self._in_flight.get(key, 0) >= settings.mailbox_concurrency:
                return self._throttled("Application is over its MailboxConcurrency limit.")
            window.append(now)
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            if settings.graph_latency_ms:  # Graph's own processing time, inside the concurrency slot
                time.sleep(settings.graph_latency_ms / 1000.0)
            return self._route(request, caller, segments)
        finally:
            with self._throttle_lock:
                self._in_flight[key] -= 1

    def _throttled(self, message: str) -> Response:
        return graph_error(429, "ApplicationThrottled", message,
                           {"Retry-After": str(self.state.settings.throttle_retry_after_seconds)})

    def _mailbox_of(self, caller: Caller, segments: list[str]) -> str:
        if len(segments) >= 2 and segments[0].lower() == "users":
            user = self.state.find_user(segments[1])
            return user.id if user else segments[1].lower()
        if caller.user is not None:
            return caller.user.id
        return "app:" + caller.app_id

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
        if head == "subscriptions":
            return self.subscriptions.handle(request, caller, seg[1:])
        if head == "drives":
            return self.drive.handle_drives(request, caller, seg)
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
                    return Response.json(200, _select_fields(user.public(), _select(request)))
                return graph_error(403, "ErrorAccessDenied", DENIED)
        else:
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{seg[0]}'.")
        if not rest:
            if request.method != "GET":
                return graph_error(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request.")
            if not caller.has(USER_READ):
                return graph_error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
            return Response.json(200, _select_fields(user.public(), _select(request)))
        if rest[0].lower() in ("drive", "drives"):
            return self.drive.handle_user(request, caller, user, rest)
        return self.mail.handle(request, caller, user, rest)
