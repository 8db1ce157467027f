"""In-memory state of the simulated tenant: apps, users, mailboxes, tokens, subscriptions.

Everything lives in one :class:`SimState` guarded by one re-entrant lock; the HTTP
handlers take the lock for the duration of a read-modify-write and never do network I/O
while holding it (the validation handshake and notification delivery run outside it).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .mailstore import Folder, Mailbox

DEFAULT_TENANT_ID = "8f5c1f3e-6a1b-4c2d-9e7f-00000000c0de"
DEFAULT_CLIENT_ID = "00000000-0000-4000-8000-00000000c0de"
DEFAULT_CLIENT_SECRET = "devstack-client-secret-not-for-production"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:7071/api/auth/callback"
DEFAULT_USERS = (
    ("adele@contoso.test", "Adele Vance", "7d1a3a5e-0c4b-4d6e-8a0f-00000000ade1"),
    ("megan@contoso.test", "Megan Bowen", "2b6e9f4c-3d2a-4b1c-9f8e-0000000e6a11"),
)

def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def graph_time(value: dt.datetime) -> str:
    """Graph's DateTimeOffset form for resources: ``2026-11-20T23:10:19Z``."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def graph_time_precise(value: dt.datetime, suffix: str = "Z") -> str:
    """Seven fractional digits, as subscriptions and notifications carry them."""
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}0" + suffix


def parse_graph_time(text: str) -> dt.datetime:
    """Parse an ISO 8601 DateTimeOffset with up to seven fractional digits."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    main, sep, rest = text.partition(".")
    if sep:
        digits = ""
        tail = ""
        for i, ch in enumerate(rest):
            if not ch.isdigit():
                tail = rest[i:]
                break
            digits += ch
        text = main + "." + (digits[:6].ljust(6, "0")) + tail
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


@dataclass
class App:
    client_id: str
    client_secret: str
    display_name: str
    redirect_uris: list[str]
    tenant_id: str = DEFAULT_TENANT_ID

    def public(self) -> dict[str, Any]:
        return {
            "clientId": self.client_id,
            "clientSecret": self.client_secret,
            "displayName": self.display_name,
            "redirectUris": list(self.redirect_uris),
        }


@dataclass
class User:
    id: str
    user_principal_name: str
    display_name: str
    tenant_id: str
    mailbox: Mailbox = field(default_factory=Mailbox)
    tokens_valid_from: float = 0.0
    delta_epoch: int = 0

    def public(self) -> dict[str, Any]:
        given, _, surname = self.display_name.partition(" ")
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
            "id": self.id,
            "userPrincipalName": self.user_principal_name,
            "displayName": self.display_name,
            "givenName": given or None,
            "surname": surname or None,
            "mail": self.user_principal_name,
            "jobTitle": None,
            "businessPhones": [],
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": "en-US",
        }

    def folder(self, ref: str) -> Folder | None:
        """A folder by id or well-known name (case-insensitive)."""
        return self.mailbox.folder(ref)


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    user_id: str
    scopes: list[str]
    code_challenge: str
    nonce: str | None
    expires_at: float
    redeemed: bool = False


@dataclass
class RefreshToken:
    token: str
    client_id: str
    user_id: str
    scopes: list[str]
    public_client: bool
    issued_at: float


@dataclass
class DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scopes: list[str]
    expires_at: float
    user_id: str | None = None
    declined: bool = False
    redeemed: bool = False


@dataclass
class Subscription:
    id: str
    app_id: str
    user_id: str
    delegated: bool
    resource: str
    folder_id: str | None  # None: every folder of the mailbox (``/me/messages``); ``drive:{id}``: a drive
    change_types: list[str]
    notification_url: str
    lifecycle_url: str | None
    expiration: dt.datetime
    client_state: str | None
    created: dt.datetime
    include_resource_data: bool = False
    immutable_ids: bool = False  # created with Prefer: IdType="ImmutableId": notifications carry immutable ids

    def public(self) -> dict[str, Any]:
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.app_id,
            "changeType": ",".join(self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": graph_time_precise(self.expiration),
            "creatorId": self.user_id if self.delegated else self.app_id,
            "includeResourceData": self.include_resource_data,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


@dataclass
class DeltaRound:
    """A delta round in progress: the ids to return, fixed when the round started."""

    user_id: str
    folder_id: str
    epoch: int
    ids: list[str]
    removed: set[str]
    snapshot_seq: int
    select: list[str] | None
    page_size: int
    filter: str | None = None  # $filter of the first request (receivedDateTime ge|gt), kept in the links


@dataclass
class Settings:
    auto_consent: bool = True
    access_token_lifetime_seconds: int = 3600
    auth_code_lifetime_seconds: int = 600
    device_code_lifetime_seconds: int = 900
    device_code_interval_seconds: int = 5
    validation_timeout_seconds: float = 10.0
    delivery_timeout_seconds: float = 3.0
    delivery_retry_base_seconds: float = 0.5
    delivery_max_attempts: int = 6
    delivery_batch_window_ms: int = 20
    graph_latency_ms: int = 0
    mailbox_concurrency: int = 4
    mailbox_budget: int = 10_000
    mailbox_budget_window_seconds: float = 600.0
    throttle_retry_after_seconds: int = 1
    default_page_size: int = 10
    drive_notification_delay_ms: int = 50
    upload_session_lifetime_seconds: int = 3600
    drive_delta_includes_ctag: bool = False

    KEYS = {
        "autoConsent": ("auto_consent", bool),
        "accessTokenLifetimeSeconds": ("access_token_lifetime_seconds", int),
        "authCodeLifetimeSeconds": ("auth_code_lifetime_seconds", int),
        "deviceCodeLifetimeSeconds": ("device_code_lifetime_seconds", int),
        "deviceCodeIntervalSeconds": ("device_code_interval_seconds", int),
        "validationTimeoutSeconds": ("validation_timeout_seconds", float),
        "deliveryTimeoutSeconds": ("delivery_timeout_seconds", float),
        "deliveryRetryBaseSeconds": ("delivery_retry_base_seconds", float),
        "deliveryMaxAttempts": ("delivery_max_attempts", int),
        "deliveryBatchWindowMs": ("delivery_batch_window_ms", int),
        "graphLatencyMs": ("graph_latency_ms", int),
        "mailboxConcurrency": ("mailbox_concurrency", int),
        "mailboxBudget": ("mailbox_budget", int),
        "mailboxBudgetWindowSeconds": ("mailbox_budget_window_seconds", float),
        "throttleRetryAfterSeconds": ("throttle_retry_after_seconds", int),
        "defaultPageSize": ("default_page_size", int),
        "driveNotificationDelayMs": ("drive_notification_delay_ms", int),
        "uploadSessionLifetimeSeconds": ("upload_session_lifetime_seconds", int),
        "driveDeltaIncludesCTag": ("drive_delta_includes_ctag", bool),
    }

    def update(self, values: dict[str, Any]) -> list[str]:
        """Apply the known keys; return the unknown ones."""
        unknown = []
        for key, value in values.items():
            if key not in self.KEYS:
                unknown.append(key)
                continue
            attr, kind = self.KEYS[key]
            if kind is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be a boolean")
                setattr(self, attr, value)
            else:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{key} must be a number")
                setattr(self, attr, kind(value))
        return unknown

    def public(self) -> dict[str, Any]:
        return {key: getattr(self, attr) for key, (attr, _) in self.KEYS.items()}


@dataclass
class Faults:
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    reorder: bool = False
    delay_ms: int = 0
    throttle_rate: float = 0.0
    fail_rate: float = 0.0
    seed: int | None = None
    # User ids whose every Graph request answers 500 (one mailbox broken, the others not).
    failing_mailboxes: frozenset[str] = frozenset()

    def public(self) -> dict[str, Any]:
        return {
            "failMailboxes": sorted(self.failing_mailboxes),
            "dropRate": self.drop_rate,
            "duplicateRate": self.duplicate_rate,
            "reorder": self.reorder,
            "delayMs": self.delay_ms,
            "throttleRate": self.throttle_rate,
            "failRate": self.fail_rate,
            "seed": self.seed,
        }


class SimState:
    """All mutable state of one simulator instance."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.settings = Settings()
        self.faults = Faults()
        self.apps: dict[str, App] = {}
        self.users: dict[str, User] = {}
        self.codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.device_codes: dict[str, DeviceCode] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.delta_rounds: dict[str, DeltaRound] = {}
        self.seq = 0
        self.add_app(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, "m365 connector (devstack)", [DEFAULT_REDIRECT_URI])
        for upn, name, oid in DEFAULT_USERS:
            self.add_user(upn, name, oid)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # apps and users -------------------------------------------------------------------
    def add_app(self, client_id: str, secret: str, name: str, redirect_uris: list[str]) -> App:
        app = App(client_id, secret, name, list(redirect_uris))
        self.apps[client_id] = app
        return app

    def add_user(self, upn: str, display_name: str, oid: str | None = None) -> User:
        user = User(oid or str(uuid.uuid4()), upn, display_name, DEFAULT_TENANT_ID)
        self.users[user.id] = user
        return user

    def find_user(self, ref: str) -> User | None:
        user = self.users.get(ref)
        if user is not None:
            return user
        lowered = ref.lower()
        for candidate in self.users.values():
            if candidate.user_principal_name.lower() == lowered or candidate.id.lower() == lowered:
                return candidate
        return None

    # subscriptions --------------------------------------------------------------------
    def live_subscription(self, sub_id: str) -> Subscription | None:
        """The subscription unless it is unknown or expired (Graph deletes expired ones)."""
        sub = self.subscriptions.get(sub_id)
        if sub is not None and sub.expiration <= utcnow():
            del self.subscriptions[sub_id]
            return None
        return sub

    def live_subscriptions(self) -> list[Subscription]:
        now = utcnow()
        for sub_id in [s.id for s in self.subscriptions.values() if s.expiration <= now]:
            del self.subscriptions[sub_id]
        return list(self.subscriptions.values())


def monotonic() -> float:
    return time.monotonic()
