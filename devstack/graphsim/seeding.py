"""Bulk seeding for load tests and benchmarks.

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
import uuid
from typing import Any

from .context import SimContext
from .graph_common import CHANGE_TYPES, Caller
from .graph_subscriptions import SubscriptionsApi
from .identity import IdentityPlatform
from .state import (
    DEFAULT_CLIENT_ID,
    Subscription,
    User,
    utcnow,
)
from .wire import Response

BULK_MAX_USERS = 100_000
BULK_SCOPES = ["User.Read", "Mail.Read"]


def _bad(message: str, status: int = 400) -> Response:
    return Response.json(status, {"error": {"code": "BadRequest" if status == 400 else "NotFound", "message": message}})


class BulkSeeding:
    def __init__(self, ctx: SimContext, identity: IdentityPlatform, subscriptions: SubscriptionsApi) -> None:
        self.sim = ctx
        self.state = ctx.state
        self.identity = identity
        self.subscriptions = subscriptions

    def handle(self, body: dict[str, Any]) -> Response:
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
            entry["accessToken"] = self.identity.access_token(app, user, list(BULK_SCOPES), True, lifetime)
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
            expiry = SubscriptionsApi.expiry(str(spec["expirationDateTime"]))
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
        parsed = self.subscriptions.parse_resource(Caller(DEFAULT_CLIENT_ID, probe, set(BULK_SCOPES)), resource)
        if isinstance(parsed, Response):
            return _bad(f"subscription.resource {resource} is not supported")
        if not skip_validation:
            for url in urls:
                failure = self.subscriptions.validate_endpoint(url)
                if failure is not None:
                    return _bad(failure)
        return change_types, expiry, urls

    def _bulk_subscribe(self, app_id: str, user: User, spec: dict[str, Any], checked: Any) -> str:
        change_types, expiry, urls = checked
        resource = str(spec.get("resource") or "/me/mailFolders('inbox')/messages")
        parsed = self.subscriptions.parse_resource(Caller(app_id, user, set(BULK_SCOPES)), resource)
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
