"""Graph subscriptions: create (with the validation handshake), list, get, renew, delete, reauthorize.

Rules from Graph's change notification pages: Outlook resources live at most 10,080
minutes, an expiry under 45 minutes is raised to 45, at most 1,000 subscriptions per
mailbox across apps, a duplicate (same app, resource and change types) is a 409.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from urllib.parse import quote, urlsplit

import requests

from .context import SimContext
from .drive_notify import DriveSubscriptions, is_drive_resource, max_minutes
from .graph_common import (
    _PAREN,
    CHANGE_TYPES,
    DENIED,
    MAIL_READ,
    MAX_MAIL_SUBSCRIPTION_MINUTES,
    MAX_SUBSCRIPTIONS_PER_MAILBOX,
    Caller,
    Preferences,
    delivery_fields,
    duplicate_subscription,
    json_object,
    subscription_expiry,
)
from .state import (
    Folder,
    Subscription,
    User,
    utcnow,
)
from .wire import Request, Response, graph_error


class SubscriptionsApi:
    def __init__(self, ctx: SimContext, drive: DriveSubscriptions | None = None) -> None:
        self.sim = ctx
        self.state = ctx.state
        self.drive = drive

    # subscriptions ----------------------------------------------------------------------------
    def handle(self, request: Request, caller: Caller, rest: list[str]) -> Response:
        if not rest:
            if request.method == "POST":
                return self._create_subscription(request, caller)
            if request.method == "GET":
                with self.state.lock:
                    mine = [s.public() for s in self.state.live_subscriptions() if self._owns(caller, s)]
                return Response.json(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions",
                                           "value": mine})
            return graph_error(405, "BadRequest", "Specified HTTP method is not allowed for the request.")
        sub_id = rest[0]
        with self.state.lock:
            sub = self.state.live_subscription(sub_id)
            if sub is None or not self._owns(caller, sub):
                return graph_error(404, "ResourceNotFound", f"The object was not found. Subscription '{sub_id}'")
            if len(rest) == 2 and rest[1].lower() == "reauthorize" and request.method == "POST":
                return Response.empty(204)
            if len(rest) != 1:
                return graph_error(400, "BadRequest", "Invalid request.")
            if request.method == "GET":
                return Response.json(200, sub.public())
            if request.method == "DELETE":
                del self.state.subscriptions[sub.id]
                return Response.empty(204)
            if request.method == "PATCH":
                try:
                    body = request.json() or {}
                    expiry = self.expiry(str(body["expirationDateTime"]),
                                         max_minutes(sub, MAX_MAIL_SUBSCRIPTION_MINUTES))
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    return graph_error(400, "InvalidRequest", str(exc) if isinstance(exc, ValueError)
                                       else "expirationDateTime is required.")
                sub.expiration = expiry
                return Response.json(200, sub.public())
        return graph_error(405, "BadRequest", "Specified HTTP method is not allowed for the request.")

    @staticmethod
    def _owns(caller: Caller, sub: Subscription) -> bool:
        if sub.app_id != caller.app_id:
            return False
        return caller.user is None or sub.user_id == caller.user.id

    @staticmethod
    def expiry(text: str, maximum_minutes: int = MAX_MAIL_SUBSCRIPTION_MINUTES) -> dt.datetime:
        return subscription_expiry(text, maximum_minutes)

    def parse_resource(self, caller: Caller, resource: str) -> tuple[User, Folder | None] | Response:
        path = _PAREN.sub(lambda m: "/" + m.group(1), resource.strip()).strip("/")
        seg = path.split("/")
        if seg[0].lower() == "me":
            if caller.user is None:
                return graph_error(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            user: User | None = caller.user
            rest = seg[1:]
        elif seg[0].lower() == "users" and len(seg) >= 2:
            user = self.state.find_user(seg[1])
            rest = seg[2:]
            if user is None:
                return graph_error(404, "ExtensionError", f"The requested user '{seg[1]}' is invalid.")
            if caller.user is not None and caller.user.id != user.id:
                return graph_error(403, "ExtensionError", DENIED)
        else:
            return graph_error(400, "InvalidRequest", f"The resource '{resource}' is not supported.")
        assert user is not None
        lowered = [s.lower() for s in rest]
        if lowered == ["messages"]:
            return user, None
        if len(rest) == 3 and lowered[0] == "mailfolders" and lowered[2] == "messages":
            folder = user.folder(rest[1])
            if folder is None:
                return graph_error(404, "ExtensionError", "The specified folder could not be found in the store.")
            return user, folder
        return graph_error(400, "InvalidRequest", f"The resource '{resource}' is not supported.")

    def _create_subscription(self, request: Request, caller: Caller) -> Response:
        body = json_object(request)
        if isinstance(body, Response):
            return body
        for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if not body.get(name):
                return graph_error(400, "InvalidRequest", f"The '{name}' property is required.")
        if self.drive is not None and is_drive_resource(str(body["resource"])):
            return self.drive.create(request, caller, body, self.validate_endpoint, self.sim.graph_url)
        change_types = [c.strip() for c in str(body["changeType"]).split(",") if c.strip()]
        if not change_types or any(c not in CHANGE_TYPES for c in change_types):
            return graph_error(400, "InvalidRequest", f"Invalid changeType '{body['changeType']}'.")
        if body.get("includeResourceData") and not body.get("encryptionCertificate"):
            return graph_error(400, "ValidationError", "An encryptionCertificate is required when "
                                                       "includeResourceData is true.")
        fields = delivery_fields(body)
        if isinstance(fields, Response):
            return fields
        urls, client_state = fields
        if not caller.has(MAIL_READ):
            return graph_error(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; "
                                                      "Reason: The caller does not have access to the resource.]")
        parsed = self.parse_resource(caller, str(body["resource"]))
        if isinstance(parsed, Response):
            return parsed
        user, folder = parsed
        try:
            expiry = self.expiry(str(body["expirationDateTime"]))
        except ValueError as exc:
            return graph_error(400, "InvalidRequest", str(exc))
        folder_id = folder.id if folder else None
        with self.state.lock:
            in_mailbox = sum(1 for s in self.state.live_subscriptions() if s.user_id == user.id)
        if in_mailbox >= MAX_SUBSCRIPTIONS_PER_MAILBOX:
            return graph_error(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; "
                                                      "Reason: The mailbox has reached its subscription limit.]")
        duplicate = self._duplicate(caller, user, folder_id, change_types)
        if duplicate is not None:
            return duplicate
        for url in urls:
            failure = self.validate_endpoint(url)
            if failure is not None:
                return graph_error(400, "ValidationError", failure)
        with self.state.lock:
            duplicate = self._duplicate(caller, user, folder_id, change_types)
            if duplicate is not None:
                return duplicate
            now = utcnow()
            sub = Subscription(
                id=str(uuid.uuid4()), app_id=caller.app_id, user_id=user.id, delegated=caller.user is not None,
                resource=str(body["resource"]), folder_id=folder_id, change_types=change_types,
                notification_url=urls[0], lifecycle_url=urls[1] if len(urls) > 1 else None,
                expiration=expiry, client_state=None if client_state is None else str(client_state), created=now,
                include_resource_data=bool(body.get("includeResourceData", False)),
                immutable_ids=Preferences.of(request).immutable_ids,
            )
            self.state.subscriptions[sub.id] = sub
            return Response.json(201, sub.public(), {"Location": f"{self.sim.graph_url}/subscriptions/{sub.id}"})

    def _duplicate(self, caller: Caller, user: User, folder_id: str | None, change_types: list[str]) -> Response | None:
        with self.state.lock:
            for existing in self.state.live_subscriptions():
                if (existing.app_id == caller.app_id and existing.user_id == user.id
                        and existing.folder_id == folder_id and set(existing.change_types) == set(change_types)):
                    return duplicate_subscription(existing.id)
        return None

    def validate_endpoint(self, url: str) -> str | None:
        """Graph's validation handshake; the failure message, or None when the endpoint passed."""
        token = ("Validation: Testing client application reachability for subscription Request-Id: "
                 f"{uuid.uuid4()}")
        separator = "&" if urlsplit(url).query else "?"
        timeout = self.state.settings.validation_timeout_seconds
        started = time.monotonic()
        try:
            response = requests.post(url + separator + "validationToken=" + quote(token, safe=""),
                                     headers={"Content-Type": "text/plain; charset=utf-8"}, data=b"",
                                     timeout=timeout, verify=self.sim.ca_file)
        except requests.Timeout:
            return "Subscription validation request timed out."
        except requests.RequestException:
            return "Subscription validation request failed. Notification endpoint must respond with 200 OK to " \
                   "validation request."
        if time.monotonic() - started > timeout:
            return "Subscription validation request timed out."
        content_type = response.headers.get("Content-Type", "")
        if response.status_code != 200:
            return (f"Subscription validation request failed. Notification endpoint must respond with 200 OK to "
                    f"validation request. Response status code: {response.status_code}.")
        if not content_type.lower().startswith("text/plain"):
            return "Subscription validation request failed. Must respond with 200 OK to this request and " \
                   "Content-Type text/plain."
        if response.text != token:
            return "Subscription validation request failed. Response must exactly match validationToken query " \
                   "parameter."
        return None

