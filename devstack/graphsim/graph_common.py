"""What the Graph areas share: the caller, scope sets, Graph's limits and query helpers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .state import (
    User,
)
from .wire import Request, Response, graph_error

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

