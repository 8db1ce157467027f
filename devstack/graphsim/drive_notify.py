"""Drive subscriptions and their change notifications.

Graph's rules for drives (https://learn.microsoft.com/graph/api/resources/subscription,
https://learn.microsoft.com/graph/change-notifications-overview):

- resource ``/me/drive/root`` (also ``/users/{id}/drive/root``, ``/drives/{id}/root``);
  OneDrive for Business subscribes at the root only;
- changeType ``updated`` only (anything else: 400); no rich notifications
  (``includeResourceData``: 400);
- the longest lifetime for a driveItem is 42,300 minutes (under 30 days);
- a second subscription of the same app for the same resource and change types is a 409,
  as for every resource (https://learn.microsoft.com/graph/api/subscription-post-subscriptions);
- a notification carries no resource data, only the subscription's resource: the
  receiver runs the drive delta. Changes close together are coalesced into one
  notification per subscription (``driveNotificationDelayMs``, the window).

A drive subscription is a :class:`Subscription` whose ``folder_id`` is
``drive:{driveId}``, so that mail changes never match it.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from .delivery import Delivery, Pending
from .drive_store import Drive, DriveStore
from .graph_common import delivery_fields, duplicate_subscription, subscription_expiry
from .state import SimState, Subscription, User, graph_time_precise, utcnow
from .wire import Request, Response, graph_error

MAX_DRIVE_SUBSCRIPTION_MINUTES = 42_300
DRIVE_SCOPE = "drive:"
FILES_READ = {"Files.Read", "Files.Read.All", "Files.ReadWrite", "Files.ReadWrite.All"}
_PAREN = re.compile(r"\('([^']*)'\)")
_DRIVE_RESOURCE = re.compile(r"^(me/drive|users/([^/]+)/drive|drives/([^/]+))(/.*)?$", re.IGNORECASE)

Validator = Callable[[str], "str | None"]


class DriveCaller(Protocol):
    """Who calls Graph: the app, the signed-in user (None for app-only tokens), the scopes."""

    app_id: str
    user: User | None

    def has(self, wanted: set[str]) -> bool: ...


def is_drive_resource(resource: str) -> bool:
    path = _PAREN.sub(lambda m: "/" + m.group(1), resource.strip()).strip("/")
    return _DRIVE_RESOURCE.match(path) is not None


def is_drive_subscription(sub: Subscription) -> bool:
    return bool(sub.folder_id and sub.folder_id.startswith(DRIVE_SCOPE))


def max_minutes(sub: Subscription, default: int) -> int:
    return MAX_DRIVE_SUBSCRIPTION_MINUTES if is_drive_subscription(sub) else default


class DriveSubscriptions:
    def __init__(self, state: SimState, store: DriveStore, delivery: Delivery) -> None:
        self.state = state
        self.store = store
        self.delivery = delivery
        self._armed: set[str] = set()

    # creation -----------------------------------------------------------------------------
    def create(self, request: Request, caller: DriveCaller, body: dict[str, Any], validate: Validator,
               graph_url: str) -> Response:
        """POST /subscriptions for a drive resource (the mail checks do not apply)."""
        change_types = [c.strip() for c in str(body.get("changeType", "")).split(",") if c.strip()]
        if change_types != ["updated"]:
            return graph_error(400, "InvalidRequest", f"The changeType '{body.get('changeType')}' is not supported "
                                                      "for drive items: only 'updated' is.")
        if body.get("includeResourceData"):
            return graph_error(400, "InvalidRequest", "Drive items do not support notifications with resource "
                                                      "data.")
        fields = delivery_fields(body)
        if isinstance(fields, Response):
            return fields
        urls, client_state = fields
        if not caller.has(FILES_READ):
            return graph_error(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; "
                                                      "Reason: The caller does not have access to the resource.]")
        with self.state.lock:
            drive = self._drive(caller, str(body["resource"]))
            if isinstance(drive, Response):
                return drive
        try:
            expiry = subscription_expiry(str(body["expirationDateTime"]), MAX_DRIVE_SUBSCRIPTION_MINUTES)
        except ValueError as exc:
            return graph_error(400, "InvalidRequest", str(exc))
        assert caller.user is not None
        scope = DRIVE_SCOPE + drive.id
        duplicate = self._duplicate(caller.app_id, caller.user.id, scope)
        if duplicate is not None:
            return duplicate
        for url in urls:
            failure = validate(url)
            if failure is not None:
                return graph_error(400, "ValidationError", failure)
        with self.state.lock:
            duplicate = self._duplicate(caller.app_id, caller.user.id, scope)
            if duplicate is not None:
                return duplicate
            sub = Subscription(
                id=str(uuid.uuid4()), app_id=caller.app_id, user_id=caller.user.id, delegated=True,
                resource=str(body["resource"]), folder_id=scope, change_types=["updated"],
                notification_url=urls[0], lifecycle_url=urls[1] if len(urls) > 1 else None, expiration=expiry,
                client_state=None if client_state is None else str(client_state), created=utcnow(),
            )
            self.state.subscriptions[sub.id] = sub
            return Response.json(201, sub.public(), {"Location": f"{graph_url}/subscriptions/{sub.id}"})

    def _duplicate(self, app_id: str, user_id: str, scope: str) -> Response | None:
        """Graph's 409 for a second subscription of the app to the same drive (drives take
        ``updated`` only, so the change types always match)."""
        with self.state.lock:
            for existing in self.state.live_subscriptions():
                if existing.app_id == app_id and existing.user_id == user_id and existing.folder_id == scope:
                    return duplicate_subscription(existing.id)
        return None

    def _drive(self, caller: DriveCaller, resource: str) -> Drive | Response:
        path = _PAREN.sub(lambda m: "/" + m.group(1), resource.strip()).strip("/")
        match = _DRIVE_RESOURCE.match(path)
        assert match is not None
        if (match.group(4) or "").strip("/").lower() != "root":
            return graph_error(400, "InvalidRequest", f"The resource '{resource}' is not supported: OneDrive for "
                                                      "Business subscribes at the drive root only.")
        if caller.user is None:
            return graph_error(400, "InvalidRequest", "Drive subscriptions need a delegated token here.")
        owner: User | None = caller.user
        if match.group(2):
            owner = self.state.find_user(match.group(2))
        if match.group(3):
            found = self.store.drives.get(match.group(3))
            owner = found.owner if found is not None else None
        if owner is None:
            return graph_error(404, "ExtensionError", f"The resource '{resource}' does not exist.")
        if owner.id != caller.user.id:
            return graph_error(403, "ExtensionError", "Access denied.")
        return self.store.drive_of(owner)

    # notifications ------------------------------------------------------------------------
    def drive_changed(self, drive: Drive) -> None:
        """A change in ``drive`` (the caller holds the state lock): arm one notification per
        subscription, unless one is already waiting (Graph coalesces drive changes)."""
        scope = DRIVE_SCOPE + drive.id
        delay = max(self.state.settings.drive_notification_delay_ms, 0) / 1000.0
        for sub in self.state.live_subscriptions():
            if sub.folder_id != scope or sub.id in self._armed:
                continue
            self._armed.add(sub.id)
            timer = threading.Timer(delay, self._fire, (sub.id,))
            timer.daemon = True
            timer.start()

    def _fire(self, sub_id: str) -> None:
        with self.state.lock:
            self._armed.discard(sub_id)
            sub = self.state.live_subscription(sub_id)
            if sub is None:
                return
            user = self.state.users.get(sub.user_id)
            item = {
                "id": str(uuid.uuid4()),
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": graph_time_precise(sub.expiration, "+00:00"),
                "changeType": "updated",
                "resource": sub.resource,
                "clientState": sub.client_state,
                "tenantId": user.tenant_id if user else None,
            }
            pending = Pending(sub.notification_url, "change", sub.id, item, time.time())
        self.delivery.enqueue(pending)
