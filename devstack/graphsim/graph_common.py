"""What the Graph areas share: the caller, scope sets, Graph's limits, preferences and query helpers."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .state import User, parse_graph_time, utcnow
from .wire import Request, Response, graph_error

MAIL_READ = {"Mail.Read", "Mail.ReadBasic", "Mail.ReadWrite"}
MAIL_WRITE = {"Mail.ReadWrite"}
USER_READ = {"User.Read", "User.Read.All", "User.ReadBasic.All"}
MAX_MAIL_SUBSCRIPTION_MINUTES = 10_080
MIN_SUBSCRIPTION_MINUTES = 45
MAX_SUBSCRIPTIONS_PER_MAILBOX = 1000  # across all apps
CHANGE_TYPES = ("created", "updated", "deleted")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_TOP = 1000  # Outlook's largest $top / odata.maxpagesize
_PAREN = re.compile(r"\('([^']*)'\)")
DENIED = "Access is denied. Check credentials and try again."
CONTEXT = "https://graph.microsoft.com/v1.0/$metadata#"


def subscription_expiry(text: str, maximum_minutes: int) -> dt.datetime:
    """Graph's expiry rules for any resource: in the future, at most ``maximum_minutes``
    (the resource's own maximum), at least 45 minutes."""
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


@dataclass
class Caller:
    app_id: str
    user: User | None  # None for an app-only token
    permissions: set[str]

    def has(self, wanted: set[str]) -> bool:
        return bool(self.permissions & wanted)


# An area of Graph under a user (``/me/{area}/...`` or ``/users/{id}/{area}/...``):
# (request, caller, user, the path segments from the area's name on) -> response.
AreaHandler = Callable[[Request, Caller, User, list[str]], Response]


def normalize_path(path: str) -> list[str]:
    """``/v1.0/me/mailFolders('inbox')/messages/delta()`` -> ``["me", "mailFolders", "inbox", "messages", "delta"]``.

    OData's key form ``('x')`` and a function call's empty ``()`` (how Microsoft's SDKs
    call ``delta``) address the same resources as the plain segments.
    """
    trimmed = path[len("/v1.0"):] if path.startswith("/v1.0") else path
    plain = _PAREN.sub(lambda m: "/" + m.group(1), trimmed).replace("()", "").strip("/")
    return plain.split("/") if plain else []


@dataclass(frozen=True)
class Preferences:
    """The ``Prefer`` header (RFC 7240) as Graph reads it, case-insensitive names."""

    immutable_ids: bool = False  # IdType="ImmutableId"
    body_type: str | None = None  # outlook.body-content-type="text"|"html"
    max_page_size: int | None = None  # odata.maxpagesize=N

    @classmethod
    def of(cls, request: Request) -> Preferences:
        raw = request.header("prefer")
        if not raw:
            return _NO_PREFERENCES
        values: dict[str, str] = {}
        for part in raw.split(","):
            name, _, value = part.strip().partition("=")
            values[name.strip().lower()] = value.strip().strip('"').strip("'")
        body_type = values.get("outlook.body-content-type", "").lower() or None
        size = values.get("odata.maxpagesize", "")
        return cls(
            immutable_ids=values.get("idtype", "").lower() == "immutableid",
            body_type=body_type if body_type in ("text", "html") else None,
            max_page_size=max(1, min(int(size), MAX_TOP)) if size.isdigit() else None,
        )

    def applied(self) -> dict[str, str]:
        """The ``Preference-Applied`` header for the preferences Graph confirms."""
        applied = []
        if self.body_type:
            applied.append(f'outlook.body-content-type="{self.body_type}"')
        if self.immutable_ids:
            applied.append('IdType="ImmutableId"')
        if self.max_page_size:
            applied.append(f"odata.maxpagesize={self.max_page_size}")
        return {"Preference-Applied": ", ".join(applied)} if applied else {}


_NO_PREFERENCES = Preferences()


def without_annotations(value: Any) -> Any:
    """Drop OData annotations (``@odata.type``, ``x@odata.type``) at every depth: Graph ignores them."""
    if isinstance(value, dict):
        return {k: without_annotations(v) for k, v in value.items() if "@" not in k}
    if isinstance(value, list):
        return [without_annotations(v) for v in value]
    return value


def json_object(request: Request) -> dict[str, Any] | Response:
    """The request's JSON object body without annotations, or Graph's 400."""
    try:
        body = request.json()
    except (ValueError, UnicodeDecodeError):
        return graph_error(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type "
                                              "header is set and payload is of valid JSON format.")
    if body is None:
        return {}
    if not isinstance(body, dict):
        return graph_error(400, "BadRequest", "The request payload must be a JSON object.")
    return without_annotations(body)


def page_bounds(request: Request, default_top: int) -> tuple[int, int] | Response:
    """``$top`` and ``$skip`` of a collection request, or Graph's 400."""
    try:
        top = int(request.query.get("$top", str(default_top)))
        skip = int(request.query.get("$skip", "0"))
    except ValueError:
        return graph_error(400, "BadRequest", "Invalid value for $top or $skip: a whole number is expected.")
    if top < 0 or skip < 0:
        return graph_error(400, "BadRequest", "$top and $skip cannot be negative.")
    return min(top, MAX_TOP), skip


def next_link(base_url: str, request: Request, top: int, skip: int, keep: tuple[str, ...]) -> str:
    """``@odata.nextLink`` of a $skip-paged collection, with the query options that shape it."""
    path = request.raw_path.split("?", 1)[0]
    options = [f"{name}={quote(request.query[name], safe=',')}" for name in keep if name in request.query]
    return f"{base_url}{path}?" + "&".join([*options, f"$top={top}", f"$skip={skip}"])


def select_of(request: Request) -> list[str] | None:
    raw = request.query.get("$select")
    return [s.strip() for s in raw.split(",") if s.strip()] if raw else None


def select_fields(entity: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    if not select:
        return entity
    wanted = {name.lower() for name in select} | {"@odata.context", "@odata.etag", "id"}
    return {k: v for k, v in entity.items() if k.lower() in wanted}


def item_not_found() -> Response:
    return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def access_denied() -> Response:
    return graph_error(403, "ErrorAccessDenied", DENIED)


def not_supported() -> Response:
    return graph_error(405, "ErrorInvalidRequest", "The OData request is not supported.")


def sync_state_gone() -> Response:
    return graph_error(410, "syncStateNotFound",
                       "The sync state generation is not found. Restart the synchronization from the beginning.")


def collection(context: str, value: list[dict[str, Any]], extra: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"@odata.context": CONTEXT + context, "value": value}
    body.update(extra or {})
    return Response(200, json.dumps(body).encode("utf-8"),
                    {"Content-Type": "application/json; charset=utf-8", **(headers or {})})


def duplicate_subscription(existing_id: str) -> Response:
    """Graph's 409 for a second subscription of one app with the same resource and change
    types (https://learn.microsoft.com/graph/api/subscription-post-subscriptions)."""
    return graph_error(409, "ExtensionError", "Operation: Create; Exception: [Status Code: Conflict; Reason: "
                                              f"Subscription Id {existing_id} already exists for the requested "
                                              "combination]")


def delivery_fields(body: dict[str, Any]) -> tuple[list[str], Any] | Response:
    """A new subscription's notification URLs (the lifecycle URL second) and clientState,
    or what Graph answers when it cannot take them (mail and drive alike)."""
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
    return urls, client_state
