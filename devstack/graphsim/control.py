"""The control API under ``/_sim``: what tests and demos use to drive the simulator.

No authentication (the listener is on loopback). The contract is fixed; see the package
docstring for the list of endpoints.

``POST /_sim/bulk`` seeds many mailboxes in one call (load tests, benchmarks)::

    {"users": 10000,                       # how many new users, each with the default mailbox
     "userPrefix": "bulk",                 # optional: UPNs are {prefix}{n:06d}-{random}@contoso.test
     "subscription": {                     # optional: one subscription per user, for the default app
         "notificationUrl": "https://...", "lifecycleNotificationUrl": "https://...",
         "expirationDateTime": "...",      # Graph's rules: in the future, at most 10,080 minutes
         "resource": "/me/mailFolders('inbox')/messages",   # optional, this by default
         "changeType": "created,updated,deleted",           # optional, this by default
         "clientState": "..."},            # optional
     "skipValidation": true,               # optional: no validation handshake (else one per URL)
     "tokenLifetimeSeconds": 86400}        # optional: lifetime of the access tokens issued

answers ``201 {"value": [{"userId", "userPrincipalName", "tenantId", "subscriptionId",
"accessToken"}]}``: per user a delegated access token of the default app (User.Read
Mail.Read), and the subscription's id (null without ``subscription``). At most 100,000
users per call.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any

from . import mailbox
from .graph import CHANGE_TYPES, Caller, GraphApi
from .state import (
    DEFAULT_CLIENT_ID,
    Faults,
    Subscription,
    User,
    graph_time_precise,
    parse_graph_time,
    utcnow,
)
from .wire import Request, Response

if TYPE_CHECKING:
    from .server import GraphSimulator

LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
BULK_MAX_USERS = 100_000
BULK_SCOPES = ["User.Read", "Mail.Read"]


def _bad(message: str, status: int = 400) -> Response:
    return Response.json(status, {"error": {"code": "BadRequest" if status == 400 else "NotFound", "message": message}})


class ControlApi:
    def __init__(self, sim: GraphSimulator) -> None:
        self.sim = sim
        self.state = sim.state

    def handle(self, request: Request) -> Response:
        seg = [p for p in request.path.split("/") if p][1:]
        method = request.method
        try:
            body = request.json() if request.body else {}
        except ValueError:
            return _bad("the body is not JSON")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            return _bad("the body must be a JSON object")
        if seg == ["bulk"] and method == "POST":
            return self._bulk(body)
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
                for n in range(count):
                    mailbox.create_message(self.state, user, folder, {**body, "subject": f"{subject} {n}"})
                return Response.json(201, {"created": count})
            message, change = mailbox.create_message(self.state, user, folder, body)
            self.sim.delivery.publish_changes([change])
            return Response.json(201, mailbox.render_message(message))
        if rest == ["messages"] and method == "GET":
            return Response.json(200, {"value": [mailbox.render_message(m) for m in user.messages.values()]})
        if len(rest) == 2 and rest[0] == "messages":
            found = user.messages.get(rest[1])
            if found is None:
                return _bad(f"unknown message {rest[1]}", 404)
            message = found
            if method == "PATCH":
                if "folder" in body:
                    target = user.folder(str(body.pop("folder")))
                    if target is None:
                        return _bad("unknown folder")
                    message, changes = mailbox.move_message(self.state, user, message, target)
                    self.sim.delivery.publish_changes(changes)
                if body:
                    self.sim.delivery.publish_changes([mailbox.update_message(self.state, user, message, body)])
                return Response.json(200, mailbox.render_message(message))
            if method == "DELETE":
                self.sim.delivery.publish_changes([mailbox.delete_message(self.state, user, message)])
                return Response.empty(204)
            if method == "GET":
                return Response.json(200, mailbox.render_message(message))
        if rest == ["revoke"] and method == "POST":
            user.tokens_valid_from = time.time() + 1e-6
            return Response.empty(204)
        if rest == ["delta", "reset"] and method == "POST":
            user.delta_epoch += 1
            for round_id in [r for r, v in self.state.delta_rounds.items() if v.user_id == user.id]:
                del self.state.delta_rounds[round_id]
            return Response.empty(204)
        return _bad(f"no control endpoint {method} {request.path}", 404)

    # bulk seeding -------------------------------------------------------------------------
    def _bulk(self, body: dict[str, Any]) -> Response:
        count = body.get("users")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= BULK_MAX_USERS:
            return _bad(f"users must be a whole number from 1 to {BULK_MAX_USERS}")
        prefix = str(body.get("userPrefix") or "bulk")
        lifetime = body.get("tokenLifetimeSeconds", 86_400)
        if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime <= 0:
            return _bad("tokenLifetimeSeconds must be a positive whole number")
        spec = body.get("subscription")
        if spec is not None and not isinstance(spec, dict):
            return _bad("subscription must be a JSON object")
        app = self.state.apps[DEFAULT_CLIENT_ID]
        if spec is not None:
            checked = self._bulk_subscription_spec(spec, skip_validation=bool(body.get("skipValidation", False)))
            if isinstance(checked, Response):
                return checked
        run = secrets.token_hex(4)
        seeded: list[dict[str, Any]] = []
        with self.state.lock:
            for n in range(count):
                user = self.state.add_user(f"{prefix}{n:06d}-{run}@contoso.test", f"{prefix} {n}")
                subscription_id = None
                if spec is not None:
                    subscription_id = self._bulk_subscribe(app.client_id, user, spec, checked)
                seeded.append({
                    "userId": user.id,
                    "userPrincipalName": user.user_principal_name,
                    "tenantId": user.tenant_id,
                    "subscriptionId": subscription_id,
                })
        # Signing is the slow part and needs no lock.
        for entry in seeded:
            user = self.state.users[entry["userId"]]
            entry["accessToken"] = self.sim.identity.access_token(app, user, list(BULK_SCOPES), True, lifetime)
        return Response.json(201, {"value": seeded})

    def _bulk_subscription_spec(self, spec: dict[str, Any], *, skip_validation: bool) -> Any:
        """Graph's checks of a new subscription, done once for the whole batch."""
        for name in ("notificationUrl", "expirationDateTime"):
            if not spec.get(name):
                return _bad(f"subscription.{name} is required")
        change_types = [c.strip() for c in str(spec.get("changeType") or ",".join(CHANGE_TYPES)).split(",")]
        if not all(c in CHANGE_TYPES for c in change_types):
            return _bad(f"subscription.changeType must be made of {', '.join(CHANGE_TYPES)}")
        client_state = spec.get("clientState")
        if client_state is not None and len(str(client_state)) > 128:
            return _bad("subscription.clientState cannot be longer than 128 characters")
        try:
            expiry = GraphApi._expiry(str(spec["expirationDateTime"]))
        except ValueError as exc:
            return _bad(str(exc))
        urls = [str(spec["notificationUrl"])]
        if spec.get("lifecycleNotificationUrl"):
            urls.append(str(spec["lifecycleNotificationUrl"]))
        # A fresh user's mailbox has the well-known folders only: any user of the tenant will do.
        resource = str(spec.get("resource") or "/me/mailFolders('inbox')/messages")
        if not resource.lower().startswith("/me/"):
            return _bad("subscription.resource must be a /me/... mail resource")
        probe = next(iter(self.state.users.values()))
        parsed = self.sim.graph._parse_resource(Caller(DEFAULT_CLIENT_ID, probe, set(BULK_SCOPES)), resource)
        if isinstance(parsed, Response):
            return _bad(f"subscription.resource {resource} is not supported")
        if not skip_validation:
            for url in urls:
                failure = self.sim.graph._validate_endpoint(url)
                if failure is not None:
                    return _bad(failure)
        return change_types, expiry, urls

    def _bulk_subscribe(self, app_id: str, user: User, spec: dict[str, Any], checked: Any) -> str:
        change_types, expiry, urls = checked
        resource = str(spec.get("resource") or "/me/mailFolders('inbox')/messages")
        parsed = self.sim.graph._parse_resource(Caller(app_id, user, set(BULK_SCOPES)), resource)
        assert not isinstance(parsed, Response)  # checked on a user of the same shape first
        folder = parsed[1]
        client_state = spec.get("clientState")
        sub = Subscription(
            id=str(uuid.uuid4()), app_id=app_id, user_id=user.id, delegated=True,
            resource=resource, folder_id=folder.id if folder else None, change_types=list(change_types),
            notification_url=urls[0], lifecycle_url=urls[1] if len(urls) > 1 else None, expiration=expiry,
            client_state=None if client_state is None else str(client_state), created=utcnow(),
        )
        self.state.subscriptions[sub.id] = sub
        return sub.id

    # subscriptions -----------------------------------------------------------------------
    @staticmethod
    def _subscription_public(sub: Any) -> dict[str, Any]:
        out = sub.public()
        out.pop("@odata.context", None)
        out["userId"] = sub.user_id
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
                # bypasses Graph's expiry rules, so that tests can make a subscription expire now or soon
                try:
                    sub.expiration = parse_graph_time(str(body["expirationDateTime"]))
                except (KeyError, ValueError):
                    return _bad("expirationDateTime (ISO 8601) is required")
                out = self._subscription_public(sub)
                self.state.live_subscription(sub.id)  # an expiry in the past removes it at once
                return Response.json(200, out)
            if rest == ["lifecycle"] and request.method == "POST":
                event = body.get("event")
                if event not in LIFECYCLE_EVENTS:
                    return _bad(f"event must be one of {', '.join(LIFECYCLE_EVENTS)}")
                queued = self.sim.delivery.publish_lifecycle(sub, str(event))
                if event == "subscriptionRemoved":
                    del self.state.subscriptions[sub.id]
                return Response.json(202, {"queued": queued})
        return _bad(f"no control endpoint {request.method} {request.path}", 404)

    def _set_faults(self, body: dict[str, Any]) -> Response:
        faults = Faults()
        try:
            for key, attr in (("dropRate", "drop_rate"), ("duplicateRate", "duplicate_rate"),
                              ("throttleRate", "throttle_rate"), ("failRate", "fail_rate")):
                value = float(body.get(key, 0.0))
                if not 0.0 <= value <= 1.0:
                    return _bad(f"{key} must be between 0 and 1")
                setattr(faults, attr, value)
            faults.reorder = bool(body.get("reorder", False))
            faults.delay_ms = int(body.get("delayMs", 0))
            seed = body.get("seed")
            faults.seed = None if seed is None else int(seed)
        except (TypeError, ValueError) as exc:
            return _bad(str(exc))
        unknown = set(body) - {"dropRate", "duplicateRate", "reorder", "delayMs", "throttleRate", "failRate", "seed"}
        if unknown:
            return _bad(f"unknown fault keys: {', '.join(sorted(unknown))}")
        self.state.faults = faults
        self.sim.delivery.reseed(faults.seed)
        return Response.json(200, faults.public())
