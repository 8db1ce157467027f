"""The control API under ``/_sim``: what tests and demos use to drive the simulator.

No authentication (the listener is on loopback). The contract is fixed; see the package
docstring for the list of endpoints.

``POST /_sim/bulk`` seeds many mailboxes in one call (``seeding.py``).
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

from . import mailbox
from .context import SimContext
from .drive import DriveService
from .drive_control import DriveControl
from .drive_notify import is_drive_subscription
from .graph_subscriptions import SubscriptionsApi
from .identity import IdentityPlatform
from .mailstore import Message
from .seeding import BulkSeeding
from .state import (
    Faults,
    SimState,
    User,
    graph_time_precise,
    parse_graph_time,
)
from .wire import Request, Response

LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
BULK_MAX_USERS = 100_000
BULK_SCOPES = ["User.Read", "Mail.Read"]


def _bad(message: str, status: int = 400) -> Response:
    return Response.json(status, {"error": {"code": "BadRequest" if status == 400 else "NotFound", "message": message}})


def _message_public(message: Message) -> dict[str, Any]:
    """The message as Graph renders it (REST id), plus its ``immutableId`` and its attachments."""
    out = mailbox.render_message(message, expand_attachments=True)
    out["immutableId"] = message.immutable_id
    return out


class ControlApi:
    def __init__(self, ctx: SimContext, identity: IdentityPlatform, subscriptions: SubscriptionsApi,
                 drive: DriveService) -> None:
        self.sim = ctx
        self.state = ctx.state
        self.drive = DriveControl(drive)
        self.identity = identity
        self.subscriptions = subscriptions
        self.seeding = BulkSeeding(ctx, identity, subscriptions)

    def handle(self, request: Request) -> Response:
        seg = [p for p in request.path.split("/") if p][1:]
        method = request.method
        if len(seg) >= 3 and seg[0] == "users" and seg[2] == "drive":  # raw bodies: see drive_control
            with self.state.lock:
                user = self.state.find_user(seg[1])
                return self.drive.handle(request, user, seg[3:]) if user else _bad(f"unknown user {seg[1]}", 404)
        try:
            body = request.json() if request.body else {}
        except ValueError:
            return _bad("the body is not JSON")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            return _bad("the body must be a JSON object")
        if seg == ["bulk"] and method == "POST":
            return self.seeding.handle(body)
        if seg == ["health"] and method == "GET":
            return Response.json(200, {"status": "ok"})
        if seg == ["apps"]:
            if method == "POST":
                return self._create_app(body)
            if method == "GET":
                with self.state.lock:
                    return Response.json(200, {"value": [a.public() for a in self.state.apps.values()]})
        if seg == ["settings"]:
            if method == "PUT":
                try:
                    with self.state.lock:
                        unknown = self.state.settings.update(body)
                except ValueError as exc:
                    return _bad(str(exc))
                if unknown:
                    return _bad(f"unknown settings: {', '.join(unknown)}")
                return Response.json(200, self.state.settings.public())
            if method == "GET":
                return Response.json(200, self.state.settings.public())
        if seg == ["faults"]:
            if method == "PUT":
                return self._set_faults(body)
            if method == "DELETE":
                self.state.faults = Faults()
                self.sim.delivery.reseed(None)
                return Response.empty(204)
            if method == "GET":
                return Response.json(200, self.state.faults.public())
        if seg == ["users"]:
            if method == "POST":
                return self._create_user(body)
            if method == "GET":
                with self.state.lock:
                    return Response.json(200, {"value": [self._user_public(u) for u in self.state.users.values()]})
        if len(seg) >= 2 and seg[0] == "users":
            with self.state.lock:
                user = self.state.find_user(seg[1])
                if user is None:
                    return _bad(f"unknown user {seg[1]}", 404)
                return self._user_routes(request, user, seg[2:], body)
        if seg == ["subscriptions"] and method == "GET":
            with self.state.lock:
                subs = self.state.live_subscriptions()
                return Response.json(200, {"value": [self._subscription_public(s) for s in subs]})
        if len(seg) >= 2 and seg[0] == "subscriptions":
            return self._subscription_routes(request, seg[1], seg[2:], body)
        if seg == ["requests"]:
            if method == "GET":
                entries = self.sim.requests.entries()
                wanted = request.query.get("userId")
                if wanted:  # one mailbox's share, by id or UPN
                    user = self.state.find_user(wanted)
                    entries = [e for e in entries if user is not None and e["userId"] == user.id]
                return Response.json(200, {"value": entries})
            if method == "DELETE":
                self.sim.requests.clear()
                return Response.empty(204)
        if seg == ["deliveries"]:
            if method == "GET":
                return Response.json(200, {"value": self.sim.delivery.log()})
            if method == "DELETE":
                self.sim.delivery.clear_log()
                return Response.empty(204)
        return _bad(f"no control endpoint {method} {request.path}", 404)

    # apps and users ---------------------------------------------------------------------
    def _create_app(self, body: dict[str, Any]) -> Response:
        uris = body.get("redirectUris", [])
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            return _bad("redirectUris must be a list of strings")
        with self.state.lock:
            app = self.state.add_app(str(uuid.uuid4()), "sim~" + secrets.token_urlsafe(30),
                                     str(body.get("displayName") or "app"), uris)
        return Response.json(201, app.public())

    @staticmethod
    def _user_public(user: User) -> dict[str, Any]:
        out = user.public()
        out.pop("@odata.context", None)
        out["tenantId"] = user.tenant_id
        return out

    def _create_user(self, body: dict[str, Any]) -> Response:
        upn = str(body.get("userPrincipalName") or "").strip()
        if "@" not in upn:
            return _bad("userPrincipalName must look like name@domain")
        with self.state.lock:
            if self.state.find_user(upn) is not None:
                return _bad(f"user {upn} already exists", 409)
            user = self.state.add_user(upn, str(body.get("displayName") or upn.split("@")[0]), body.get("id"))
            return Response.json(201, self._user_public(user))

    def _user_routes(self, request: Request, user: User, rest: list[str], body: dict[str, Any]) -> Response:
        method = request.method
        if not rest and method == "GET":
            return Response.json(200, self._user_public(user))
        if rest == ["messages"] and method == "POST":
            folder = user.folder(str(body.get("folder") or "inbox"))
            if folder is None:
                return _bad(f"unknown folder {body.get('folder')}")
            if "count" in body:  # seeding a large mailbox: that many messages, no notification
                count = body["count"]
                if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= 100_000:
                    return _bad("count must be a whole number from 1 to 100000")
                subject = str(body.get("subject") or "message")
                seed = {k: v for k, v in body.items() if k != "count"}
                try:
                    for n in range(count):
                        mailbox.create_message(self.state, user, folder, {**seed, "subject": f"{subject} {n}"})
                except mailbox.InvalidMessage as exc:
                    return _bad(str(exc))
                return Response.json(201, {"created": count})
            try:
                message, change = mailbox.create_message(self.state, user, folder, body)
            except mailbox.InvalidMessage as exc:
                return _bad(str(exc))
            self.sim.delivery.publish_changes([change])
            return Response.json(201, _message_public(message))
        if rest == ["messages"] and method == "GET":
            return Response.json(200, {"value": [_message_public(m) for m in user.mailbox.messages.values()]})
        if len(rest) == 2 and rest[0] == "messages":
            found = user.mailbox.message(rest[1])
            if found is None:
                return _bad(f"unknown message {rest[1]}", 404)
            message = found
            if method == "PATCH":
                if "folder" in body:
                    target = user.folder(str(body.pop("folder")))
                    if target is None:
                        return _bad("unknown folder")
                    self.sim.delivery.publish_changes(mailbox.move_message(self.state, user, message, target))
                if body:
                    try:
                        mailbox.check_patch(body)
                    except mailbox.InvalidMessage as exc:
                        return _bad(str(exc))
                    self.sim.delivery.publish_changes([mailbox.update_message(self.state, user, message, body)])
                return Response.json(200, _message_public(message))
            if method == "DELETE":
                self.sim.delivery.publish_changes([mailbox.delete_message(self.state, user, message)])
                return Response.empty(204)
            if method == "GET":
                return Response.json(200, _message_public(message))
        if rest == ["revoke"] and method == "POST":
            user.tokens_valid_from = time.time() + 1e-6
            return Response.empty(204)
        if rest == ["delta", "reset"] and method == "POST":
            user.delta_epoch += 1
            for round_id in [r for r, v in self.state.delta_rounds.items() if v.user_id == user.id]:
                del self.state.delta_rounds[round_id]
            return Response.empty(204)
        return _bad(f"no control endpoint {method} {request.path}", 404)

    # subscriptions -----------------------------------------------------------------------
    @staticmethod
    def _subscription_public(sub: Any) -> dict[str, Any]:
        out = sub.public()
        out.pop("@odata.context", None)
        out["userId"] = sub.user_id
        out["immutableIds"] = sub.immutable_ids  # created with Prefer: IdType="ImmutableId"
        out["expirationDateTime"] = graph_time_precise(sub.expiration)
        return out

    def _subscription_routes(self, request: Request, sub_id: str, rest: list[str], body: dict[str, Any]) -> Response:
        with self.state.lock:
            sub = self.state.live_subscription(sub_id)
            if sub is None:
                return _bad(f"unknown subscription {sub_id}", 404)
            if not rest and request.method == "GET":
                return Response.json(200, self._subscription_public(sub))
            if not rest and request.method == "DELETE":
                del self.state.subscriptions[sub.id]
                return Response.empty(204)
            if not rest and request.method == "PATCH":
                # Bypasses Graph's rules: tests make a subscription expire now or soon, or send its
                # notifications to another instance (as a front end spreads Graph's POSTs).
                url = body.get("notificationUrl")
                if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
                    return _bad("notificationUrl must be an http(s) URL")
                if "expirationDateTime" in body or url is None:
                    try:
                        sub.expiration = parse_graph_time(str(body["expirationDateTime"]))
                    except (KeyError, ValueError):
                        return _bad("expirationDateTime (ISO 8601) is required")
                if url is not None:
                    sub.notification_url = url
                out = self._subscription_public(sub)
                self.state.live_subscription(sub.id)  # an expiry in the past removes it at once
                return Response.json(200, out)
            if rest == ["lifecycle"] and request.method == "POST":
                event = body.get("event")
                if event not in LIFECYCLE_EVENTS:
                    return _bad(f"event must be one of {', '.join(LIFECYCLE_EVENTS)}")
                if is_drive_subscription(sub) and event != "reauthorizationRequired":
                    return _bad("drive subscriptions get reauthorizationRequired only (the others are Outlook's)")
                queued = self.sim.delivery.publish_lifecycle(sub, str(event))
                if event == "subscriptionRemoved":
                    del self.state.subscriptions[sub.id]
                return Response.json(202, {"queued": queued})
        return _bad(f"no control endpoint {request.method} {request.path}", 404)

    def _set_faults(self, body: dict[str, Any]) -> Response:
        try:
            faults = faults_from(body, self.state)
        except ValueError as exc:
            return _bad(str(exc))
        self.state.faults = faults
        self.sim.delivery.reseed(faults.seed)
        return Response.json(200, faults.public())


_FAULT_KEYS = {"dropRate", "duplicateRate", "reorder", "delayMs", "throttleRate", "failRate", "seed", "failMailboxes"}


def faults_from(body: dict[str, Any], state: SimState) -> Faults:
    """The faults a ``PUT /_sim/faults`` body asks for; ``ValueError`` with the reason."""
    faults = Faults()
    try:
        for key, attr in (("dropRate", "drop_rate"), ("duplicateRate", "duplicate_rate"),
                          ("throttleRate", "throttle_rate"), ("failRate", "fail_rate")):
            value = float(body.get(key, 0.0))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be between 0 and 1")
            setattr(faults, attr, value)
        faults.reorder = bool(body.get("reorder", False))
        faults.delay_ms = int(body.get("delayMs", 0))
        seed = body.get("seed")
        faults.seed = None if seed is None else int(seed)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    failing = body.get("failMailboxes", [])
    if not isinstance(failing, list) or not all(isinstance(ref, str) for ref in failing):
        raise ValueError("failMailboxes must be a list of user ids or userPrincipalNames")
    users = [state.find_user(ref) for ref in failing]
    if None in users:
        raise ValueError("failMailboxes names a user the simulator does not have")
    faults.failing_mailboxes = frozenset(user.id for user in users if user is not None)
    unknown = set(body) - _FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
    return faults
