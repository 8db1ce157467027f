"""The kinds of Microsoft 365 data the connector pushes: a *resource* says how one kind is
subscribed to, how long its subscriptions live, which lifecycle events Graph sends for it,
which grants reach it, where its events go and under which key its sync state lives.

Two members today, mail (Outlook messages of the watched folders) and drive (the user's
OneDrive, from its root). Subscriptions, renewal, processing, the ledger and the stored
delta links dispatch on ``Resource.kind``; what differs in the delta round itself lives in
the sync of each kind (``shared.sync`` for mail).
docs/design.md "Resources" says how a third one (calendar events) is added.

Graph's rules per resource (docs/graph-notes.md "Subscriptions" and "OneDrive"): Outlook
messages without resource data live at most 10,080 minutes and take created, updated and
deleted; drive items live at most 42,300 minutes, take ``updated`` only, can be subscribed
at the root only (business drives) and get only the ``reauthorizationRequired`` lifecycle
event.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.config import DRIVE_EVENT_QUEUE, MAIL_EVENT_QUEUE
from shared.mail_folders import is_mail_resource, subscription_resource

if TYPE_CHECKING:
    from shared.config import Settings

# Asked for a little less than each maximum: a clock a few minutes ahead of Graph's must not
# turn a renewal into a 400 "expirationDateTime is too far in the future".
LIFETIME_MARGIN = dt.timedelta(minutes=30)

REAUTHORIZATION_REQUIRED = "reauthorizationRequired"
SUBSCRIPTION_REMOVED = "subscriptionRemoved"
MISSED = "missed"

DRIVE_ROOT_RESOURCE = "/me/drive/root"


class ResourceKind(enum.StrEnum):
    MAIL = "mail"
    DRIVE = "drive"


@dataclass(frozen=True)
class Resource:
    kind: ResourceKind
    change_types: str
    max_lifetime: dt.timedelta
    lifecycle_events: frozenset[str]
    event_queue: str
    # The Graph resource path a new subscription asks for (it may follow settings).
    subscription_path: Callable[[Settings], str]
    # Whether a recorded subscription's resource path is one of this kind.
    owns_path: Callable[[str], bool]
    # The scope prefixes (lower case) that reach this data: "mail." or "files.".
    scope_prefix: str
    # The module whose ``SYNC_TARGET`` runs this resource's delta rounds
    # (``shared.resource_sync`` imports it when a sync of the resource first runs).
    sync_module: str

    @property
    def lifetime(self) -> dt.timedelta:
        """What a creation or renewal asks for."""
        return self.max_lifetime - LIFETIME_MARGIN

    def expiry(self, now: dt.datetime) -> dt.datetime:
        return (now + self.lifetime).replace(microsecond=0)

    def granted(self, scopes: Sequence[str]) -> bool:
        """Whether a grant reaches this data (``Mail.Read``, ``Files.ReadWrite.All``, ...)."""
        return any(scope.lower().startswith(self.scope_prefix) for scope in scopes)

    def sync_key(self, account_id: str) -> str:
        """The key the account's sync state of this kind lives under (ledger partition,
        lease): the account id for mail, as ever; ``{account id}|drive`` for the drive.
        ``|`` is allowed in a Table Storage key and never part of an account id."""
        return account_id if self.kind is ResourceKind.MAIL else f"{account_id}|{self.kind.value}"


MAIL = Resource(
    kind=ResourceKind.MAIL,
    change_types="created,updated,deleted",
    max_lifetime=dt.timedelta(minutes=10_080),
    lifecycle_events=frozenset({REAUTHORIZATION_REQUIRED, SUBSCRIPTION_REMOVED, MISSED}),
    event_queue=MAIL_EVENT_QUEUE,
    subscription_path=lambda settings: subscription_resource(settings.mail_folders),
    owns_path=is_mail_resource,
    scope_prefix="mail.",
    sync_module="shared.sync",
)

DRIVE = Resource(
    kind=ResourceKind.DRIVE,
    change_types="updated",  # the only change type drive items support
    max_lifetime=dt.timedelta(minutes=42_300),
    lifecycle_events=frozenset({REAUTHORIZATION_REQUIRED}),
    event_queue=DRIVE_EVENT_QUEUE,
    subscription_path=lambda settings: DRIVE_ROOT_RESOURCE,
    owns_path=lambda path: path == DRIVE_ROOT_RESOURCE,
    scope_prefix="files.",
    sync_module="shared.drive_sync",
)

RESOURCES: tuple[Resource, ...] = (MAIL, DRIVE)
_BY_KIND = {resource.kind: resource for resource in RESOURCES}


def by_kind(kind: ResourceKind | str) -> Resource:
    """The resource of a kind name (``ValueError`` for an unknown one)."""
    return _BY_KIND[ResourceKind(kind)]


def resource_of(path: str) -> Resource | None:
    """The resource a recorded subscription's path belongs to; None for one the connector
    does not make (it is left alone)."""
    for resource in RESOURCES:
        if resource.owns_path(path):
            return resource
    return None


def granted_resources(scopes: Sequence[str]) -> tuple[Resource, ...]:
    """The resources an account's grant reaches, mail first."""
    return tuple(resource for resource in RESOURCES if resource.granted(scopes))
