"""Settings: read once from the environment, validated, frozen.

Every name here is also in ``local.settings.json.example`` and in ``infra/`` (a test keeps
the three in step). The first Microsoft settings carry the names the original polling
connector used, so its operators find them again.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from shared.errors import ConfigurationError

# Queue names are part of the product's contract with its consumers, not settings.
NOTIFICATION_QUEUE = "graph-notifications"
MAIL_EVENT_QUEUE = "mail-events"
# One CloudEvent per changed OneDrive item (shared.drive_sync).
DRIVE_EVENT_QUEUE = "drive-events"
# Delta rounds asked for by the app itself: an account's first round after a connect, and
# the rest of a round that did not fit in one invocation.
MAIL_SYNC_QUEUE = "mail-sync"
ACCOUNTS_TABLE = "accounts"
SUBSCRIPTIONS_TABLE = "subscriptions"
AUTHFLOWS_TABLE = "authflows"
CHECKPOINTS_TABLE = "checkpoints"
ACCOUNT_EVENT_QUEUE = "account-events"
CONNECT_SESSIONS_TABLE = "connectsessions"
ACCOUNT_OWNERS_TABLE = "accountowners"
# Mail actions for consumers that work from queues: commands in, one result event out each.
MAIL_COMMAND_QUEUE = "mail-commands"
MAIL_COMMAND_RESULT_QUEUE = "mail-command-results"
MAIL_COMMANDS_TABLE = "mailcommands"

# Every setting the code reads, with its default (None: required).
SETTING_DEFAULTS: dict[str, str | None] = {
    "AzureWebJobsStorage": None,
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "MICROSOFT_CLIENT_ID": None,
    "MICROSOFT_CLIENT_SECRET": None,
    "MICROSOFT_TENANT_ID": "common",
    "MICROSOFT_AUTHORITY_HOST": "https://login.microsoftonline.com",
    "GRAPH_API_ENDPOINT": "https://graph.microsoft.com/v1.0",
    "KEY_VAULT_URL": None,
    "PUBLIC_BASE_URL": None,
    "CLIENT_STATE_KEY": None,
    "CLIENT_STATE_KEY_PREVIOUS": "",
    "RENEWAL_SCHEDULE": "0 */15 * * * *",
    "RENEWAL_WINDOW_MINUTES": "1440",
    "CATCHUP_AFTER_MINUTES": "360",
    "RENEWAL_CONCURRENCY": "32",
    "RENEWAL_TIME_BUDGET_SECONDS": "420",
    "RENEWAL_SWEEP_ACCOUNTS": "5000",
    "GRAPH_SCOPES": "User.Read Mail.Read",
    "MAIL_ACTIONS_ENABLED": "false",
    "POST_CONNECT_REDIRECT_URL": "",
    "EMIT_HISTORY_ON_CONNECT": "false",
    "ALLOWED_RETURN_ORIGINS": "",
    "CONNECT_SESSION_MINUTES": "30",
    "ALLOW_ANONYMOUS_CONNECT": "false",
    "ALLOWED_TENANT_IDS": "",
    "SYNC_TIME_BUDGET_SECONDS": "120",
    "MAX_ATTACHMENT_BYTES": str(25 * 1024 * 1024),
    "MAIL_FOLDERS": "inbox",
    "EVENT_BODY": "none",
    "EVENT_BODY_MAX_BYTES": "65536",
}

EVENT_BODY_KINDS = ("none", "text", "html")

# MSAL adds these itself and raises ValueError when they are passed
# (docs/graph-notes.md "Authorization code flow").
_RESERVED_SCOPES = {"openid", "profile", "offline_access"}


@dataclass(frozen=True)
class Settings:
    storage_connection: str
    client_id: str
    client_secret: str = field(repr=False)
    tenant_id: str
    authority_host: str
    graph_endpoint: str
    key_vault_url: str
    public_base_url: str
    client_state_key: bytes = field(repr=False)  # signs new subscriptions' clientState
    renewal_schedule: str
    renewal_window_minutes: int
    catchup_after_minutes: int
    scopes: tuple[str, ...]
    mail_actions_enabled: bool
    post_connect_redirect_url: str
    emit_history_on_connect: bool
    # Renewal timer: worker threads, seconds after which a run picks no new work (the
    # host's functionTimeout is 10 min), accounts visited per run by the account sweep.
    renewal_concurrency: int = 32
    renewal_time_budget_seconds: int = 420
    renewal_sweep_accounts: int = 5000
    # The key before the last rotation: clientStates it signed are still accepted.
    client_state_previous_key: bytes | None = field(default=None, repr=False)

    @property
    def client_state_keys(self) -> tuple[bytes, ...]:
        """The keys a clientState may be signed with, the current one first."""
        if self.client_state_previous_key is None:
            return (self.client_state_key,)
        return (self.client_state_key, self.client_state_previous_key)
    # Embedding: origins a connect session may return to (scheme://host[:port], lower
    # case, default port dropped), the lifetime of a connect session, whether
    # /api/connect without a session is served, the tenants whose users may connect
    # (empty: any).
    allowed_return_origins: frozenset[str] = frozenset()
    connect_session_minutes: int = 30
    allow_anonymous_connect: bool = False
    allowed_tenant_ids: frozenset[str] = frozenset()
    # Seconds one invocation walks a mailbox's delta pages before it keeps its place and
    # hands the rest of the round to the next invocation (queue ``mail-sync``).
    sync_time_budget_seconds: int = 120
    # The largest attachment GET .../attachments/{id} hands out (Outlook's own limit for a
    # message is 150 MB; a function's response stays in memory).
    max_attachment_bytes: int = 25 * 1024 * 1024
    # The well-known folders whose mail becomes events (lower case, inbox first when
    # watched), or ("*",) for every folder (shared.mail_folders).
    mail_folders: tuple[str, ...] = ("inbox",)
    # Whether mail events carry the body (none, text, html) and the most UTF-8 bytes of it
    # they carry (the encoded event is kept under the queue's limit as well: shared.events).
    event_body: str = "none"
    event_body_max_bytes: int = 65536

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_base_url}/api/auth/callback"

    @property
    def notification_url(self) -> str:
        return f"{self.public_base_url}/api/notifications"

    @property
    def lifecycle_notification_url(self) -> str:
        return f"{self.public_base_url}/api/lifecycle"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return _parse(os.environ if env is None else env)


def _get(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if value is None or value.strip() == "":
        default = SETTING_DEFAULTS[name]
        if default is None:
            raise ConfigurationError(f"setting {name} is required but not set")
        return default
    return value.strip()


def _url(env: Mapping[str, str], name: str, *, https_only: bool = False) -> str:
    value = _get(env, name).rstrip("/")
    parsed = urlparse(value)
    allowed = ("https",) if https_only else ("https", "http")
    if parsed.scheme not in allowed or not parsed.netloc:
        raise ConfigurationError(f"setting {name} must be an {' or '.join(allowed)} URL, got {value!r}")
    return value


def _int(env: Mapping[str, str], name: str, minimum: int) -> int:
    raw = _get(env, name)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"setting {name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"setting {name} must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = _get(env, name).lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"setting {name} must be true or false, got {raw!r}")


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_DEFAULT_PORTS = {"https": 443, "http": 80}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL, lower case, the default port
    dropped (RFC 6454 §4); None when ``url`` has no such origin."""
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError:
        return None
    scheme = parsed.scheme.lower()
    host = (parsed.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{shown}:{port}"


def is_loopback_host(url: str) -> bool:
    return (urlparse(url).hostname or "").lower() in _LOOPBACK_HOSTS


def _origins(env: Mapping[str, str], name: str) -> frozenset[str]:
    origins = set()
    for item in (part.strip() for part in _get(env, name).split(",")):
        if not item:
            continue
        origin = origin_of(item)
        parsed = urlparse(item)
        if origin is None or parsed.path not in ("", "/") or parsed.query or parsed.fragment or "@" in parsed.netloc:
            raise ConfigurationError(f"setting {name}: {item!r} is not an origin such as https://app.example.com")
        if origin.startswith("http://") and not is_loopback_host(origin):
            raise ConfigurationError(f"setting {name}: {item!r} must be https (http only on a loopback host)")
        origins.add(origin)
    return frozenset(origins)


def _tenant_ids(env: Mapping[str, str], name: str) -> frozenset[str]:
    ids = set()
    for item in (part.strip() for part in _get(env, name).split(",")):
        if not item:
            continue
        try:
            ids.add(str(uuid.UUID(item)))
        except ValueError:
            raise ConfigurationError(f"setting {name}: {item!r} is not a tenant id (a GUID)") from None
    return frozenset(ids)


def _storage(env: Mapping[str, str]) -> str:
    # In Azure the app reaches storage by identity: AzureWebJobsStorage__accountName.
    account = env.get("AzureWebJobsStorage__accountName", "").strip()
    if account and not env.get("AzureWebJobsStorage", "").strip():
        return f"identity:{account}"
    return _get(env, "AzureWebJobsStorage")


def _client_state_key(env: Mapping[str, str], name: str) -> bytes | None:
    key = _get(env, name)
    if not key:
        return None
    if key.startswith("@Microsoft.KeyVault("):
        # App Service leaves a reference it could not resolve in place, as text.
        raise ConfigurationError(f"setting {name} is a Key Vault reference that did not resolve")
    if len(key) < 32:
        raise ConfigurationError(f"setting {name} must be at least 32 characters long")
    return key.encode("utf-8")


def _parse(env: Mapping[str, str]) -> Settings:
    key = _client_state_key(env, "CLIENT_STATE_KEY")
    if key is None:  # required: _get raised already; this keeps the type exact
        raise ConfigurationError("setting CLIENT_STATE_KEY is required but not set")
    previous_key = _client_state_key(env, "CLIENT_STATE_KEY_PREVIOUS")
    scopes = tuple(s for s in _get(env, "GRAPH_SCOPES").replace(",", " ").split() if s)
    reserved = _RESERVED_SCOPES.intersection(s.lower() for s in scopes)
    if reserved:
        raise ConfigurationError(
            f"setting GRAPH_SCOPES must not contain {', '.join(sorted(reserved))}: MSAL adds them itself"
        )
    mail_actions = _bool(env, "MAIL_ACTIONS_ENABLED")
    if mail_actions and "Mail.ReadWrite" not in scopes:
        scopes = tuple(s for s in scopes if s != "Mail.Read") + ("Mail.ReadWrite",)
    post_connect = env.get("POST_CONNECT_REDIRECT_URL", "").strip()
    if post_connect:
        post_connect = _url(env, "POST_CONNECT_REDIRECT_URL")
    return Settings(
        storage_connection=_storage(env),
        client_id=_get(env, "MICROSOFT_CLIENT_ID"),
        client_secret=_get(env, "MICROSOFT_CLIENT_SECRET"),
        tenant_id=_get(env, "MICROSOFT_TENANT_ID"),
        authority_host=_url(env, "MICROSOFT_AUTHORITY_HOST", https_only=True),
        graph_endpoint=_url(env, "GRAPH_API_ENDPOINT", https_only=True),
        key_vault_url=_url(env, "KEY_VAULT_URL", https_only=True),
        public_base_url=_url(env, "PUBLIC_BASE_URL"),
        client_state_key=key,
        client_state_previous_key=None if previous_key == key else previous_key,
        renewal_schedule=_get(env, "RENEWAL_SCHEDULE"),
        renewal_window_minutes=_int(env, "RENEWAL_WINDOW_MINUTES", 1),
        catchup_after_minutes=_int(env, "CATCHUP_AFTER_MINUTES", 1),
        scopes=scopes,
        mail_actions_enabled=mail_actions,
        post_connect_redirect_url=post_connect,
        emit_history_on_connect=_bool(env, "EMIT_HISTORY_ON_CONNECT"),
        renewal_concurrency=_int(env, "RENEWAL_CONCURRENCY", 1),
        renewal_time_budget_seconds=_int(env, "RENEWAL_TIME_BUDGET_SECONDS", 10),
        renewal_sweep_accounts=_int(env, "RENEWAL_SWEEP_ACCOUNTS", 0),
        allowed_return_origins=_origins(env, "ALLOWED_RETURN_ORIGINS"),
        connect_session_minutes=_int(env, "CONNECT_SESSION_MINUTES", 1),
        allow_anonymous_connect=_bool(env, "ALLOW_ANONYMOUS_CONNECT"),
        allowed_tenant_ids=_tenant_ids(env, "ALLOWED_TENANT_IDS"),
        sync_time_budget_seconds=_int(env, "SYNC_TIME_BUDGET_SECONDS", 1),
        max_attachment_bytes=_int(env, "MAX_ATTACHMENT_BYTES", 1),
        mail_folders=_mail_folders(env, "MAIL_FOLDERS"),
        event_body=_choice(env, "EVENT_BODY", EVENT_BODY_KINDS),
        event_body_max_bytes=_int(env, "EVENT_BODY_MAX_BYTES", 1),
    )


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = _get(env, name).strip().lower()
    if value not in allowed:
        raise ConfigurationError(f"setting {name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _mail_folders(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """``*`` or comma-separated well-known folder names (shared.mail_folders knows them)."""
    try:
        return parse_mail_folders(_get(env, name))
    except ValueError as error:
        raise ConfigurationError(f"setting {name}: {error}") from None


# --- MAIL_FOLDERS (used by shared.mail_folders) -------------------------------------------

ALL_FOLDERS = "*"
INBOX = "inbox"
# The well-known folders that hold mail a consumer may watch
# (learn.microsoft.com/graph/api/resources/mailfolder, "Well-known folder names").
WATCHABLE_FOLDERS = (
    "inbox",
    "archive",
    "drafts",
    "sentitems",
    "deleteditems",
    "junkemail",
    "outbox",
    "conversationhistory",
    "clutter",
)


def parse_mail_folders(raw: str) -> tuple[str, ...]:
    """``("*",)`` or the well-known names, lower case, without repeats, the inbox first;
    ``ValueError`` naming what is wrong."""
    text = raw.strip()
    if text == ALL_FOLDERS:
        return (ALL_FOLDERS,)
    names = list(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    if not names:
        raise ValueError("names no folder")
    unknown = [n for n in names if n not in WATCHABLE_FOLDERS]
    if unknown:
        raise ValueError(
            f"unknown folder {', '.join(unknown)}: use well-known names ({', '.join(WATCHABLE_FOLDERS)}) or *"
        )
    if INBOX in names:
        names.remove(INBOX)
        names.insert(0, INBOX)
    return tuple(names)
