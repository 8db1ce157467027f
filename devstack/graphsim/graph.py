"""Microsoft Graph v1.0: users, mail folders, messages, delta and subscriptions.

Every request is authenticated like Graph does it (RS256 signature, audience, expiry;
401 ``InvalidAuthenticationToken``), authorised by scope (403), throttled like Outlook
(4 concurrent requests and a request budget per app per mailbox: 429 with
``Retry-After`` and ``ApplicationThrottled``) and may be hit by injected faults.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests

from . import mailbox
from .drive_notify import is_drive_resource, max_minutes
from .identity import GRAPH_AUDIENCE
from .jwt import TokenInvalid
from .state import (
    DeltaRound,
    Folder,
    Message,
    Subscription,
    User,
    parse_graph_time,
    utcnow,
)
from .wire import Request, Response, graph_error

if TYPE_CHECKING:
    from .server import GraphSimulator

MAIL_READ = {"Mail.Read", "Mail.ReadBasic", "Mail.ReadWrite"}
MAIL_WRITE = {"Mail.ReadWrite"}
USER_READ = {"User.Read", "User.Read.All", "User.ReadBasic.All"}
MAX_MAIL_SUBSCRIPTION_MINUTES = 10_080
MIN_SUBSCRIPTION_MINUTES = 45
MAX_SUBSCRIPTIONS_PER_MAILBOX = 1000  # across all apps
CHANGE_TYPES = ("created", "updated", "deleted")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_PAREN = re.compile(r"\('([^']*)'\)")
DENIED = "Access is denied. Check credentials and try again."


@dataclass
class Caller:
    app_id: str
    user: User | None  # None for an app-only token
    permissions: set[str]

    def has(self, wanted: set[str]) -> bool:
        return bool(self.permissions & wanted)


class GraphApi:
    def __init__(self, sim: GraphSimulator) -> None:
        self.sim = sim
        self.state = sim.state
        self._claims_cache: dict[str, dict[str, Any]] = {}
        self._throttle_lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], int] = {}
        self._budget: dict[tuple[str, str], deque[float]] = {}

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
            return self._subscriptions(request, caller, seg[1:])
        if head == "drives":
            return self.sim.drive.handle_drives(request, caller, seg)
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
            return self.sim.drive.handle_user(request, caller, user, rest)
        return self._mail(request, caller, user, rest)

    # mail ---------------------------------------------------------------------------------
    def _mail(self, request: Request, caller: Caller, user: User, rest: list[str]) -> Response:
        if not caller.has(MAIL_READ):
            return graph_error(403, "ErrorAccessDenied", DENIED)
        head = rest[0].lower()
        method = request.method
        if head == "mailfolders":
            if len(rest) == 1 and method == "GET":
                with self.state.lock:
                    folders = [self._render_folder(user, f) for f in user.folders.values()]
                return Response.json(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('"
                                           f"{user.id}')/mailFolders", "value": folders})
            folder = user.folder(rest[1]) if len(rest) >= 2 else None
            if folder is None:
                return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            if len(rest) == 2 and method == "GET":
                with self.state.lock:
                    return Response.json(200, self._render_folder(user, folder))
            if len(rest) >= 3 and rest[2].lower() == "messages":
                if len(rest) == 3 and method == "GET":
                    return self._list_messages(request, user, folder)
                if len(rest) == 4 and rest[3].lower() == "delta" and method == "GET":
                    return self._delta(request, user, folder)
                if len(rest) >= 4:
                    return self._message_item(request, caller, user, rest[3:], folder)
        elif head == "messages":
            if len(rest) == 1 and method == "GET":
                return self._list_messages(request, user, None)
            if len(rest) >= 2:
                return self._message_item(request, caller, user, rest[1:], None)
        return graph_error(400, "BadRequest", f"Resource not found for the segment '{rest[0]}'.")

    def _render_folder(self, user: User, folder: Folder) -> dict[str, Any]:
        items = [m for m in user.messages.values() if m.folder_id == folder.id]
        return {
            "id": folder.id,
            "displayName": folder.display_name,
            "parentFolderId": "AAMkAGI2root",
            "childFolderCount": 0,
            "unreadItemCount": sum(1 for m in items if not m.data.get("isRead")),
            "totalItemCount": len(items),
            "isHidden": False,
        }

    def _list_messages(self, request: Request, user: User, folder: Folder | None) -> Response:
        select = _select(request)
        try:
            top = min(int(request.query.get("$top", "10")), 1000)
            skip = int(request.query.get("$skip", "0"))
        except ValueError:
            return graph_error(400, "BadRequest", "Invalid $top or $skip.")
        with self.state.lock:
            items = [m for m in user.messages.values() if folder is None or m.folder_id == folder.id]
            items.sort(key=lambda m: (m.data["receivedDateTime"], m.id), reverse=True)
            page = [mailbox.render_message(m, select) for m in items[skip:skip + top]]
        body: dict[str, Any] = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
                                "value": page}
        if skip + top < len(items):
            base = self.sim.base_url + request.raw_path.split("?", 1)[0]
            extra = f"&$select={quote(','.join(select))}" if select else ""
            body["@odata.nextLink"] = f"{base}?$top={top}&$skip={skip + top}{extra}"
        return Response.json(200, body)

    def _message_item(self, request: Request, caller: Caller, user: User, rest: list[str],
                      folder: Folder | None) -> Response:
        message_id = rest[0]
        with self.state.lock:
            message = user.messages.get(message_id)
            if message is None or (folder is not None and message.folder_id != folder.id):
                return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            if len(rest) == 1 and request.method == "GET":
                return Response.json(200, mailbox.render_message(message, _select(request)))
            if not caller.has(MAIL_WRITE):
                return graph_error(403, "ErrorAccessDenied", DENIED)
            if len(rest) == 1 and request.method == "PATCH":
                try:
                    patch = request.json() or {}
                except ValueError:
                    return graph_error(400, "BadRequest", "Unable to read JSON request payload.")
                unknown = [k for k in patch if k not in mailbox.UPDATABLE]
                if not isinstance(patch, dict) or unknown:
                    return graph_error(400, "ErrorInvalidProperty", f"The property '{unknown[:1]}' cannot be updated.")
                change = mailbox.update_message(self.state, user, message, patch)
                self.sim.delivery.publish_changes([change])
                return Response.json(200, mailbox.render_message(message))
            if len(rest) == 1 and request.method == "DELETE":
                deleted = user.folder("deleteditems")
                if deleted is not None and message.folder_id != deleted.id:
                    _, changes = mailbox.move_message(self.state, user, message, deleted)
                else:
                    changes = [mailbox.delete_message(self.state, user, message)]
                self.sim.delivery.publish_changes(changes)
                return Response.empty(204)
            if len(rest) == 2 and rest[1].lower() == "move" and request.method == "POST":
                try:
                    body = request.json() or {}
                except ValueError:
                    body = {}
                target = user.folder(str(body.get("destinationId", ""))) if isinstance(body, dict) else None
                if target is None:
                    return graph_error(400, "ErrorInvalidIdMalformed", "Id is malformed.")
                moved, changes = mailbox.move_message(self.state, user, message, target)
                self.sim.delivery.publish_changes(changes)
                return Response.json(201, mailbox.render_message(moved))
        return graph_error(405, "ErrorInvalidRequest", "The OData request is not supported.")

    # delta --------------------------------------------------------------------------------
    def _delta(self, request: Request, user: User, folder: Folder) -> Response:
        link_base = self.sim.base_url + request.raw_path.split("?", 1)[0]
        page_size = self.state.settings.default_page_size
        prefer = request.header("prefer") or ""
        match = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
        if match:
            page_size = max(1, min(int(match.group(1)), 1000))
        with self.state.lock:
            skiptoken = request.query.get("$skiptoken")
            deltatoken = request.query.get("$deltatoken")
            if skiptoken:
                round_id, _, offset_text = skiptoken.partition(".")
                delta_round = self.state.delta_rounds.get(round_id)
                if delta_round is None or delta_round.user_id != user.id or delta_round.epoch != user.delta_epoch:
                    return _sync_state_gone()
                offset = int(offset_text or 0)
            else:
                select = _select(request)
                if deltatoken:
                    try:
                        token = json.loads(base64.urlsafe_b64decode(deltatoken + "=" * (-len(deltatoken) % 4)))
                        since, epoch, token_folder = int(token["s"]), int(token["e"]), str(token["f"])
                        select = token.get("sel") or None
                    except (ValueError, KeyError, TypeError, binascii.Error):
                        return graph_error(400, "BadRequest", "The delta token is malformed.")
                    if epoch != user.delta_epoch or token_folder != folder.id or token.get("u") != user.id:
                        return _sync_state_gone()
                    changed = sorted(((seq, mid) for mid, seq in folder.changes.items() if seq > since))
                    ids = [mid for _, mid in changed]
                    removed = {mid for mid in ids
                               if mid not in user.messages or user.messages[mid].folder_id != folder.id}
                else:
                    current = [m for m in user.messages.values() if m.folder_id == folder.id]
                    current.sort(key=lambda m: (m.data["receivedDateTime"], m.id), reverse=True)
                    ids, removed = [m.id for m in current], set()
                round_id = secrets.token_urlsafe(12)
                delta_round = DeltaRound(user.id, folder.id, user.delta_epoch, ids, removed, self.state.seq,
                                         select, page_size)
                self.state.delta_rounds[round_id] = delta_round
                offset = 0
            chunk = delta_round.ids[offset:offset + delta_round.page_size]
            value: list[dict[str, Any]] = []
            for mid in chunk:
                message: Message | None = user.messages.get(mid)
                if mid in delta_round.removed or message is None or message.folder_id != folder.id:
                    value.append({"@odata.type": "#microsoft.graph.message", "id": mid,
                                  "@removed": {"reason": "deleted"}})
                else:
                    item = {"@odata.type": "#microsoft.graph.message"}
                    item.update(mailbox.render_message(message, delta_round.select))
                    value.append(item)
            body: dict[str, Any] = {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
                "value": value,
            }
            next_offset = offset + len(chunk)
            if next_offset < len(delta_round.ids):
                body["@odata.nextLink"] = f"{link_base}?$skiptoken={round_id}.{next_offset}"
            else:
                self.state.delta_rounds.pop(round_id, None)
                token_json = json.dumps({"u": user.id, "f": folder.id, "s": delta_round.snapshot_seq,
                                         "e": delta_round.epoch, "sel": delta_round.select}, separators=(",", ":"))
                encoded = base64.urlsafe_b64encode(token_json.encode()).decode().rstrip("=")
                body["@odata.deltaLink"] = f"{link_base}?$deltatoken={encoded}"
        return Response.json(200, body, {"Preference-Applied": f"odata.maxpagesize={delta_round.page_size}"})

    # subscriptions ----------------------------------------------------------------------------
    def _subscriptions(self, request: Request, caller: Caller, rest: list[str]) -> Response:
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
                    expiry = self._expiry(str(body["expirationDateTime"]),
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
    def _expiry(text: str, maximum_minutes: int = MAX_MAIL_SUBSCRIPTION_MINUTES) -> dt.datetime:
        try:
            value = parse_graph_time(text)
        except ValueError as exc:
            raise ValueError(f"Invalid expirationDateTime '{text}'.") from exc
        now = utcnow()
        if value <= now:
            raise ValueError("Subscription expiration date time cannot be in the past.")
        if value > now + dt.timedelta(minutes=maximum_minutes):
            raise ValueError(f"Subscription expiration can only be {maximum_minutes} minutes in the future.")
        return max(value, now + dt.timedelta(minutes=MIN_SUBSCRIPTION_MINUTES))

    def _parse_resource(self, caller: Caller, resource: str) -> tuple[User, Folder | None] | Response:
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
        try:
            body = request.json()
        except ValueError:
            return graph_error(400, "BadRequest", "Unable to read JSON request payload.")
        if not isinstance(body, dict):
            return graph_error(400, "BadRequest", "Unable to read JSON request payload.")
        for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if not body.get(name):
                return graph_error(400, "InvalidRequest", f"The '{name}' property is required.")
        if is_drive_resource(str(body["resource"])):
            return self.sim.drive.subscriptions.create(request, caller, body, self._validate_endpoint,
                                                       self.sim.graph_url)
        change_types = [c.strip() for c in str(body["changeType"]).split(",") if c.strip()]
        if not change_types or any(c not in CHANGE_TYPES for c in change_types):
            return graph_error(400, "InvalidRequest", f"Invalid changeType '{body['changeType']}'.")
        if body.get("includeResourceData") and not body.get("encryptionCertificate"):
            return graph_error(400, "ValidationError", "An encryptionCertificate is required when "
                                                       "includeResourceData is true.")
        client_state = body.get("clientState")
        if client_state is not None and len(str(client_state)) > 128:
            return graph_error(400, "InvalidRequest", "clientState cannot be longer than 128 characters.")
        urls = [str(body["notificationUrl"])]
        if body.get("lifecycleNotificationUrl"):
            urls.append(str(body["lifecycleNotificationUrl"]))
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK):
                return graph_error(400, "ValidationError", f"The notification URL '{url}' must use https.")
        if not caller.has(MAIL_READ):
            return graph_error(403, "ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; "
                                                      "Reason: The caller does not have access to the resource.]")
        parsed = self._parse_resource(caller, str(body["resource"]))
        if isinstance(parsed, Response):
            return parsed
        user, folder = parsed
        try:
            expiry = self._expiry(str(body["expirationDateTime"]))
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
            failure = self._validate_endpoint(url)
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
            )
            self.state.subscriptions[sub.id] = sub
            return Response.json(201, sub.public(), {"Location": f"{self.sim.graph_url}/subscriptions/{sub.id}"})

    def _duplicate(self, caller: Caller, user: User, folder_id: str | None, change_types: list[str]) -> Response | None:
        with self.state.lock:
            for existing in self.state.live_subscriptions():
                if (existing.app_id == caller.app_id and existing.user_id == user.id
                        and existing.folder_id == folder_id and set(existing.change_types) == set(change_types)):
                    return graph_error(409, "ExtensionError",
                                       "Operation: Create; Exception: [Status Code: Conflict; Reason: Subscription "
                                       f"Id {existing.id} already exists for the requested combination]")
        return None

    def _validate_endpoint(self, url: str) -> str | None:
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


def _select(request: Request) -> list[str] | None:
    raw = request.query.get("$select")
    return [s.strip() for s in raw.split(",") if s.strip()] if raw else None


def _select_fields(entity: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    if not select:
        return entity
    wanted = {name.lower() for name in select} | {"@odata.context", "id"}
    return {k: v for k, v in entity.items() if k.lower() in wanted}


def _sync_state_gone() -> Response:
    return graph_error(410, "syncStateNotFound",
                       "The sync state generation is not found. Restart the synchronization from the beginning.")
