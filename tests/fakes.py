"""In-memory fakes of the ports (shared/ports.py) and of the identity platform.

They keep the Protocols' documented behaviour, so a test that passes against them means
the same against the real adapters:
- stores hand out copies (changing a record changes nothing until ``save``);
- ``save`` with an ETag writes only over that exact version, without one only when
  nothing is stored yet; either way a lost race is ``ConcurrencyError``;
- ``AuthFlowStore.take`` gives a flow to exactly one caller;
- the subscription store keeps an expiry index of copies as the Table adapter does
  (tests/integration/test_subscription_store_contract.py runs the same assertions on both);
- the Graph fake answers 409 to a duplicate subscription, 404 for an unknown one, keeps to
  the 10,080-minute limit (42,300 for a drive) and raises the 45-minute minimum
  (docs/graph-notes.md "Subscriptions").

``make_services(**overrides)`` builds ``Services`` entirely from fakes.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

from shared.bootstrap import Services
from shared.clock import FixedClock
from shared.config import Settings
from shared.errors import (
    AuthFlowError,
    ConcurrencyError,
    DeltaTokenExpiredError,
    GraphError,
    GraphUnauthorizedError,
    IdentityError,
    InvalidInputError,
    NotFoundError,
    ReauthRequiredError,
)
from shared.models import (
    Account,
    ClientKind,
    ConnectSession,
    PendingAuthFlow,
    Subscription,
    SweepCheckpoint,
    account_id_for,
)
from shared.ports import DeltaPage, GraphAuth, JsonObject
from shared.tokens import TokenGrant

EPOCH = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)

TEST_ENV: dict[str, str] = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "MICROSOFT_CLIENT_ID": "00000000-0000-4000-8000-00000000c0de",
    "MICROSOFT_CLIENT_SECRET": "test-client-secret",
    "MICROSOFT_AUTHORITY_HOST": "https://login.example.test",
    "GRAPH_API_ENDPOINT": "https://graph.example.test/v1.0",
    "KEY_VAULT_URL": "https://vault.example.test",
    "PUBLIC_BASE_URL": "https://connector.example.test",
    "CLIENT_STATE_KEY": "test-client-state-key-0123456789abcdef",
}


def make_settings(**env: str) -> Settings:
    return Settings.from_env({**TEST_ENV, **env})


_etags = itertools.count(1)


def _new_etag() -> str:
    return f'W/"{next(_etags)}"'


def _check_etag(current: Any | None, etag: str | None, what: str) -> None:
    if etag is None:
        if current is not None:
            raise ConcurrencyError(f"{what} exists already")
    elif current is None or current.etag != etag:
        raise ConcurrencyError(f"{what} changed since it was read")


class FakeAccountStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, Account] = {}

    def get(self, account_id: str) -> Account | None:
        with self._lock:
            found = self.items.get(account_id)
            return copy.deepcopy(found) if found is not None else None

    def save(self, account: Account) -> Account:
        with self._lock:
            _check_etag(self.items.get(account.account_id), account.etag, f"account {account.account_id}")
            stored = copy.deepcopy(account)
            stored.etag = _new_etag()
            self.items[account.account_id] = stored
            return copy.deepcopy(stored)

    def page(self, *, size: int = 100, continuation: str | None = None) -> tuple[list[Account], str | None]:
        with self._lock:
            ids = sorted(i for i in self.items if continuation is None or i >= continuation)
            chosen = [copy.deepcopy(self.items[i]) for i in ids[:size]]
            return chosen, (ids[size] if len(ids) > size else None)


class FakeSubscriptionStore:
    """Records plus an expiry index of copies, as the Table adapter keeps them: a save
    writes the record and its copy, one saved with ``defer_index`` leaves the old copy in
    place until ``reindex``; ``expiring_before`` offers the copies (stale ones included),
    with ``recheck`` the records; ``reread`` drops a copy that no longer names its record.
    Ids a table key cannot hold are ``InvalidInputError``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[tuple[str, str], Subscription] = {}
        self.index: dict[tuple[str, str], Subscription] = {}  # the copies expiring_before offers
        self.reindexed: list[str] = []
        self.rechecks: list[bool] = []  # the ``recheck`` of every expiring_before call

    def get(self, account_id: str, subscription_id: str) -> Subscription | None:
        key = _table_keys(account_id, subscription_id)
        with self._lock:
            found = self.items.get(key)
            return copy.deepcopy(found) if found is not None else None

    def save(self, subscription: Subscription, *, defer_index: bool = False) -> Subscription:
        key = _table_keys(subscription.account_id, subscription.subscription_id)
        with self._lock:
            _check_etag(
                self.items.get(key), subscription.etag, f"subscription {subscription.subscription_id}"
            )
            stored = copy.deepcopy(subscription)
            stored.etag = _new_etag()
            if not defer_index:
                stored.indexed_expires_at = stored.expires_at
                self.index[key] = copy.deepcopy(stored)
            self.items[key] = stored
            return copy.deepcopy(stored)

    def reindex(self, subscriptions: Sequence[Subscription]) -> None:
        """Copies of what was handed over; remembers it, so that a test sees every deferred
        save reach it."""
        with self._lock:
            self.reindexed.extend(s.subscription_id for s in subscriptions)
            for s in subscriptions:
                key = (s.account_id, s.subscription_id)
                s.indexed_expires_at = s.expires_at
                self.index[key] = copy.deepcopy(s)
                stored = self.items.get(key)
                if stored is not None:
                    stored.indexed_expires_at = stored.expires_at

    def delete(self, account_id: str, subscription_id: str) -> None:
        key = _table_keys(account_id, subscription_id)
        with self._lock:
            self.items.pop(key, None)
            self.index.pop(key, None)

    def for_account(self, account_id: str) -> list[Subscription]:
        _table_keys(account_id)
        with self._lock:
            return [copy.deepcopy(s) for (a, _), s in sorted(self.items.items()) if a == account_id]

    def reread(self, offered: Subscription) -> Subscription | None:
        key = (offered.account_id, offered.subscription_id)
        with self._lock:
            current = self.items.get(key)
            entry = self.index.get(key)
            if entry is not None and (current is None or _hour(entry.expires_at) != _hour(current.expires_at)):
                del self.index[key]  # the entry no longer names the record (its hour moved on)
            return copy.deepcopy(current) if current is not None else None

    def expiring_before(self, when: dt.datetime, *, recheck: bool = False) -> Iterator[Subscription]:
        with self._lock:
            self.rechecks.append(recheck)
            if recheck:  # every copy checked against its record, and brought up to date
                for key in list(self.index):
                    record = self.items.get(key)
                    if record is None:
                        del self.index[key]
                    else:
                        record.indexed_expires_at = record.expires_at
                        self.index[key] = copy.deepcopy(record)
            chosen = [copy.deepcopy(s) for s in self.index.values() if s.expires_at < when]
        return iter(sorted(chosen, key=lambda s: s.expires_at))


_FORBIDDEN_KEY_CHARS = set("/\\#?") | {chr(c) for c in range(0x20)} | {chr(0x7F)}


def _hour(when: dt.datetime) -> dt.datetime:
    # The Table adapter's index entries are bucketed by the expiry's UTC hour.
    return when.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _table_keys(*ids: str) -> tuple[str, ...]:
    """Table keys may not hold / \\ # ? or control characters; the store refuses such ids."""
    for value in ids:
        if not value or len(value) > 512 or any(ch in _FORBIDDEN_KEY_CHARS for ch in value):
            raise InvalidInputError("not a valid identifier")
    return ids


class FakeCheckpointStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, SweepCheckpoint] = {}

    def get(self, name: str) -> SweepCheckpoint | None:
        with self._lock:
            found = self.items.get(name)
            return copy.deepcopy(found) if found is not None else None

    def save(self, checkpoint: SweepCheckpoint) -> SweepCheckpoint:
        with self._lock:
            _check_etag(self.items.get(checkpoint.name), checkpoint.etag, f"checkpoint {checkpoint.name}")
            stored = copy.deepcopy(checkpoint)
            stored.etag = _new_etag()
            self.items[checkpoint.name] = stored
            return copy.deepcopy(stored)


class FakeAuthFlowStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, PendingAuthFlow] = {}

    def put(self, flow: PendingAuthFlow) -> None:
        with self._lock:
            if flow.state in self.items:
                raise ConcurrencyError("auth flow state exists already")
            self.items[flow.state] = copy.deepcopy(flow)

    def take(self, state: str) -> PendingAuthFlow | None:
        with self._lock:
            return self.items.pop(state, None)


class FakeConnectSessionStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, ConnectSession] = {}

    def get(self, session_id: str) -> ConnectSession | None:
        with self._lock:
            found = self.items.get(session_id)
            return copy.deepcopy(found) if found is not None else None

    def save(self, session: ConnectSession) -> ConnectSession:
        with self._lock:
            _check_etag(self.items.get(session.session_id), session.etag, "connect session")
            stored = copy.deepcopy(session)
            stored.etag = _new_etag()
            self.items[session.session_id] = stored
            session.etag = stored.etag
            return copy.deepcopy(stored)


class FakeAccountOwnerIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: set[tuple[str, str]] = set()

    def add(self, owner_id: str, account_id: str) -> None:
        with self._lock:
            self.entries.add((owner_id, account_id))

    def remove(self, owner_id: str, account_id: str) -> None:
        with self._lock:
            self.entries.discard((owner_id, account_id))

    def page(
        self, owner_id: str, *, size: int = 100, continuation: str | None = None
    ) -> tuple[list[str], str | None]:
        with self._lock:
            ids = sorted(a for o, a in self.entries if o == owner_id and (continuation is None or a >= continuation))
        return ids[:size], (ids[size] if len(ids) > size else None)


class FakePurger:
    """Purges the fake flow and session stores as the table purger does."""

    def __init__(self, authflows: FakeAuthFlowStore, sessions: FakeConnectSessionStore) -> None:
        self.authflows = authflows
        self.sessions = sessions

    def purge_expired(self, now: dt.datetime) -> dict[str, int]:
        from shared.adapters.sessions import SESSION_RETENTION

        with self.authflows._lock:
            flows = [k for k, f in self.authflows.items.items() if f.expires_at < now]
            for key in flows:
                del self.authflows.items[key]
        with self.sessions._lock:
            gone = [k for k, s in self.sessions.items.items() if s.expires_at + SESSION_RETENTION < now]
            for key in gone:
                del self.sessions.items[key]
        return {"authflows": len(flows), "connectsessions": len(gone)}


class FakeSecretStore:
    """Key Vault with soft delete: ``deleted`` holds the names deleted and not recovered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, str] = {}
        self.versions: dict[str, int] = {}
        self.deleted: set[str] = set()
        self.writes = 0

    def get(self, name: str) -> str | None:
        with self._lock:
            return self.items.get(name)

    def set(self, name: str, value: str, *, recover: bool = True) -> None:
        _check_secret_name(name)
        with self._lock:
            if name in self.deleted and not recover:
                raise NotFoundError(f"secret {name} is deleted")
            self.deleted.discard(name)  # the port recovers a soft-deleted name first
            self.items[name] = value
            self.versions[name] = self.versions.get(name, 0) + 1
            self.writes += 1

    def delete(self, name: str) -> None:
        with self._lock:
            if self.items.pop(name, None) is not None:
                self.deleted.add(name)


def _check_secret_name(name: str) -> None:
    if not 1 <= len(name) <= 127 or not all(c.isascii() and (c.isalnum() or c == "-") for c in name):
        raise ValueError(f"not a Key Vault secret name: {name!r}")


class FakeQueueSender:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: dict[str, list[str]] = {}
        self.delays: dict[str, list[int]] = {}  # per queue, each message's delay_seconds

    def send(self, queue: str, messages: Sequence[str], *, delay_seconds: int = 0) -> None:
        with self._lock:
            self.sent.setdefault(queue, []).extend(messages)
            self.delays.setdefault(queue, []).extend([delay_seconds] * len(messages))


@dataclass
class FakeGraphSubscription:
    id: str
    account_id: str
    resource: str
    change_type: str
    notification_url: str
    lifecycle_notification_url: str
    expires_at: dt.datetime
    client_state: str

    def as_json(self) -> JsonObject:
        return {
            "id": self.id,
            "resource": self.resource,
            "changeType": self.change_type,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_notification_url,
            "expirationDateTime": self.expires_at.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
            "clientState": self.client_state,
        }


def enter_call(
    lock: threading.Lock, calls: list[tuple[str, str]], fail: dict[str, list[Exception]], method: str, account_id: str
) -> None:
    """What a fake does on each call: record (method, account id), then raise the next
    failure planned for that method (first in, first out), if any."""
    with lock:
        calls.append((method, account_id))
        pending = fail.get(method)
        failure = pending.pop(0) if pending else None
    if failure is not None:
        raise failure


class FakeGraphApi:
    """Graph for one app; a mailbox is identified by ``GraphAuth.account_id``.

    ``fail[method]`` holds exceptions raised (first in, first out) by the next calls of that
    method; ``calls`` records (method, account id) in order; ``mailboxes[account_id]`` holds
    the inbox items the delta query returns (``{"id": ...}`` or ``{"id": ..., "@removed": ...}``).
    """

    MAX_LIFETIME = dt.timedelta(minutes=10_080)
    MAX_DRIVE_LIFETIME = dt.timedelta(minutes=42_300)  # drive items (resource /me/drive/root)
    MIN_LIFETIME = dt.timedelta(minutes=45)

    def __init__(self, clock: Any = None) -> None:
        self._lock = threading.Lock()
        self.clock = clock or FixedClock(EPOCH)
        self.subscriptions: dict[str, FakeGraphSubscription] = {}
        self.users: dict[str, JsonObject] = {}
        self.mailboxes: dict[str, list[JsonObject]] = {}
        self.fail: dict[str, list[Exception]] = {}
        self.calls: list[tuple[str, str]] = []
        self.valid_tokens: dict[str, str] | None = None  # when set: account id -> the one accepted token
        self.located: dict[tuple[str, str], str] = {}  # (account id, message id) -> folder id, for batch reads

    def _enter(self, method: str, auth: GraphAuth) -> None:
        enter_call(self._lock, self.calls, self.fail, method, auth.account_id)
        if self.valid_tokens is not None and self.valid_tokens.get(auth.account_id) != auth.access_token:
            raise GraphUnauthorizedError("InvalidAuthenticationToken", "Access token is empty or invalid.")

    def get_me(self, auth: GraphAuth) -> JsonObject:
        self._enter("get_me", auth)
        user_id = auth.account_id.partition(".")[0]
        return copy.deepcopy(
            self.users.get(
                auth.account_id,
                {"id": user_id, "userPrincipalName": f"{user_id}@contoso.test", "displayName": "Test User"},
            )
        )

    def create_subscription(
        self,
        auth: GraphAuth,
        *,
        resource: str,
        change_type: str,
        notification_url: str,
        lifecycle_notification_url: str,
        expires_at: dt.datetime,
        client_state: str,
    ) -> JsonObject:
        self._enter("create_subscription", auth)
        expires_at = self._checked_expiry(expires_at, resource)
        with self._lock:
            for existing in self.subscriptions.values():
                if (existing.account_id, existing.resource, existing.change_type) == (
                    auth.account_id,
                    resource,
                    change_type,
                ):
                    raise GraphError(409, "Conflict", "A subscription with the same resource exists already.")
            created = FakeGraphSubscription(
                id=str(uuid.uuid4()),
                account_id=auth.account_id,
                resource=resource,
                change_type=change_type,
                notification_url=notification_url,
                lifecycle_notification_url=lifecycle_notification_url,
                expires_at=expires_at,
                client_state=client_state,
            )
            self.subscriptions[created.id] = created
            return created.as_json()

    def renew_subscription(
        self, auth: GraphAuth, subscription_id: str, expires_at: dt.datetime
    ) -> JsonObject:
        self._enter("renew_subscription", auth)
        with self._lock:
            found = self._owned(auth, subscription_id)
            found.expires_at = self._checked_expiry(expires_at, found.resource)
            return found.as_json()

    def reauthorize_subscription(self, auth: GraphAuth, subscription_id: str) -> None:
        self._enter("reauthorize_subscription", auth)
        with self._lock:
            self._owned(auth, subscription_id)

    def delete_subscription(self, auth: GraphAuth, subscription_id: str) -> None:
        self._enter("delete_subscription", auth)
        with self._lock:
            found = self.subscriptions.get(subscription_id)
            if found is not None and found.account_id == auth.account_id:
                del self.subscriptions[subscription_id]

    def delta_page(self, auth: GraphAuth, link: str | None, *, folder: str = "inbox") -> DeltaPage:
        self._enter("delta_page", auth)
        with self._lock:
            items = self.mailboxes.get(auth.account_id, [])
            start = 0
            if link is not None:
                parsed = urlparse(link)
                if parsed.scheme != "delta" or parsed.netloc != auth.account_id.replace(".", "-"):
                    raise DeltaTokenExpiredError(410, "syncStateNotFound", "The delta token is not valid.")
                start = int(parse_qs(parsed.query).get("position", ["0"])[0])
            host = auth.account_id.replace(".", "-")
            return DeltaPage(
                items=copy.deepcopy(items[start:]),
                delta_link=f"delta://{host}/{folder}?position={len(items)}",
            )

    def batch(self, auth: GraphAuth, requests: Sequence[Any]) -> list[Any]:
        """Reads only: a well-known folder's id (``folder-{name}``) and where a message is
        (``located[(account id, message id)]``: its folder id; 404 when it has none)."""
        from shared.ports import BatchResponse

        self._enter("batch", auth)
        answers = []
        for request in requests:
            parts = urlparse(request.url).path.strip("/").split("/")
            if parts[:2] == ["me", "mailFolders"] and len(parts) == 3:
                answers.append(BatchResponse(request.id, 200, {"id": f"folder-{parts[2]}"}))
                continue
            folder_id = self.located.get((auth.account_id, parts[-1])) if parts[:2] == ["me", "messages"] else None
            if folder_id is None:
                answers.append(BatchResponse(request.id, 404, {"error": {"code": "ErrorItemNotFound", "message": "gone"}}))
            else:
                answers.append(BatchResponse(request.id, 200, {"id": parts[-1], "parentFolderId": folder_id}))
        return answers

    def for_account(self, account_id: str) -> list[FakeGraphSubscription]:
        with self._lock:
            return [s for s in self.subscriptions.values() if s.account_id == account_id]

    def _owned(self, auth: GraphAuth, subscription_id: str) -> FakeGraphSubscription:
        found = self.subscriptions.get(subscription_id)
        if found is None or found.account_id != auth.account_id:
            raise NotFoundError(f"Graph 404 ResourceNotFound: subscription {subscription_id} not found")
        return found

    def _checked_expiry(self, expires_at: dt.datetime, resource: str) -> dt.datetime:
        now = self.clock.now()
        longest = self.MAX_DRIVE_LIFETIME if resource.startswith("/me/drive") else self.MAX_LIFETIME
        if expires_at - now > longest:
            raise GraphError(400, "ExtensionError", "expirationDateTime is too far in the future")
        return max(expires_at, now + self.MIN_LIFETIME)


class FakeFolderDeltaLinks:
    """``FolderDeltaLinks`` in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: dict[tuple[str, str], tuple[str, dt.datetime | None]] = {}

    def links(self, account_id: str, connected_at: dt.datetime | None) -> dict[str, str]:
        with self._lock:
            return {f: link for (a, f), (link, at) in self.rows.items() if a == account_id and at == connected_at}

    def save(self, account_id: str, folder: str, link: str, connected_at: dt.datetime | None) -> None:
        with self._lock:
            self.rows[(account_id, folder)] = (link, connected_at)

    def forget_account(self, account_id: str) -> None:
        with self._lock:
            for key in [k for k in self.rows if k[0] == account_id]:
                del self.rows[key]


class FakeMailLedger:
    """``shared.ledger.MailLedger`` in memory: marks per account and message, one sync lease
    per account with its "pending" flag and generation, takeover of a stale lease, a round's
    progress, and commits that write nothing once the lease is no longer the holder's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, dict[str, Any]] = {}
        self.leases: dict[str, dict[str, Any]] = {}
        self.progresses: dict[str, Any] = {}
        self.reads = 0  # marks looked up
        self.commits = 0

    def marks(self, account_id: str, message_ids: Sequence[str]) -> dict[str, Any]:
        with self._lock:
            self.reads += len(message_ids)
            stored = self.items.get(account_id, {})
            return {m: stored[m] for m in message_ids if m in stored}

    def record(self, account_id: str, marks: Sequence[Any]) -> None:
        with self._lock:
            stored = self.items.setdefault(account_id, {})
            for mark in marks:
                stored[mark.message_id] = mark

    def live_message_ids(self, account_id: str, *, unseen_in: str | None = None) -> Iterator[str]:
        with self._lock:
            live = [
                m
                for m, mark in self.items.get(account_id, {}).items()
                if not mark.removed and (unseen_in is None or getattr(mark, "seen_in", None) != unseen_in)
            ]
        return iter(live)

    def commit(
        self, account_id: str, holder: str, now: dt.datetime, marks: Sequence[Any], progress: Any
    ) -> None:
        from shared.ledger import LeaseLostError

        with self._lock:
            lease = self.leases.get(account_id)
            if lease is None or lease["holder"] != holder:
                raise LeaseLostError(f"sync lease of account {account_id} was taken over")
            lease["renewed_at"] = now
            stored = self.items.setdefault(account_id, {})
            for mark in marks:
                stored[mark.message_id] = mark
            if progress is None:
                self.progresses.pop(account_id, None)
            else:
                self.progresses[account_id] = progress
            self.commits += 1

    def progress(self, account_id: str) -> Any:
        with self._lock:
            return self.progresses.get(account_id)

    def forget_account(self, account_id: str) -> None:
        with self._lock:
            self.items.pop(account_id, None)
            self.leases.pop(account_id, None)
            self.progresses.pop(account_id, None)

    def acquire_lease(
        self, account_id: str, holder: str, now: dt.datetime, stale_after: dt.timedelta
    ) -> bool:
        with self._lock:
            lease = self.leases.get(account_id)
            # Stale only once more than ``stale_after`` has passed, as in the table adapter.
            if lease is not None and lease["holder"] != holder and now - lease["renewed_at"] <= stale_after:
                lease["pending"] = True
                return False
            generation = lease["generation"] + 1 if lease is not None else 1
            self.leases[account_id] = {"holder": holder, "renewed_at": now, "pending": False, "generation": generation}
            return True

    def seize_lease(self, account_id: str, holder: str, now: dt.datetime) -> dt.datetime | None:
        with self._lock:
            lease = self.leases.get(account_id)
            generation = lease["generation"] + 1 if lease is not None else 1
            self.leases[account_id] = {"holder": holder, "renewed_at": now, "pending": False, "generation": generation}
            return lease["renewed_at"] if lease is not None else None

    def renew_lease(self, account_id: str, holder: str, now: dt.datetime) -> bool:
        with self._lock:
            lease = self.leases.get(account_id)
            if lease is None or lease["holder"] != holder:
                return False
            lease["renewed_at"] = now
            return True

    def release_lease(self, account_id: str, holder: str, *, abandon: bool = False) -> bool:
        with self._lock:
            lease = self.leases.get(account_id)
            if lease is None or lease["holder"] != holder:
                return True
            if lease["pending"] and not abandon:
                lease["pending"] = False
                return False
            del self.leases[account_id]
            return True


class FakeTokenProvider:
    """Hands out ``token-{account id}``; accounts in ``dead`` raise ``ReauthRequiredError``.
    Tokens handed to ``remember`` are what ``cached_auth`` answers with, until forgotten."""

    def __init__(self) -> None:
        self.dead: set[str] = set()
        self.issued: list[str] = []
        self.cached: dict[str, str] = {}

    def graph_auth(self, account: Account) -> GraphAuth:
        if account.account_id in self.dead:
            raise ReauthRequiredError(account.account_id)
        self.issued.append(account.account_id)
        return GraphAuth(account.account_id, f"token-{account.account_id}")

    def cached_auth(self, account_id: str) -> GraphAuth | None:
        token = self.cached.get(account_id)
        return None if token is None else GraphAuth(account_id, token)

    def forget(self, account_id: str) -> None:
        self.cached.pop(account_id, None)

    def remember(self, account_id: str, access_token: str, expires_in: int) -> None:
        self.cached[account_id] = access_token


@dataclass
class FakeUser:
    object_id: str
    tenant_id: str
    username: str
    display_name: str = "Test User"

    @property
    def account_id(self) -> str:
        return account_id_for(self.object_id, self.tenant_id)


@dataclass
class _FakeCache:
    """What the fake identity keeps in a "serialised token cache": who, which refresh token."""

    account_id: str
    refresh_token: str
    kind: str


class FakeIdentity:
    """The identity platform: auth-code and device-code flows, silent refresh with refresh
    token rotation, ``revoke(account_id)`` kills every refresh token of an account.

    ``next_user`` signs in on the next redemption; ``redeem_error`` makes it answer that
    OAuth error instead. The cache state it hands out is a small JSON text.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.next_user = FakeUser(
            str(uuid.UUID(int=1)), str(uuid.UUID(int=2)), "adele@contoso.test", "Adele Vance"
        )
        self.redeem_error: str | None = None
        self.live_refresh_tokens: dict[str, str] = {}  # refresh token -> account id
        self.started: list[dict[str, Any]] = []
        self.silent_calls = 0
        self.access_token_lifetime = 3600

    # flows
    def start_auth_code_flow(
        self, scopes: Sequence[str], redirect_uri: str, login_hint: str | None = None
    ) -> dict[str, Any]:
        state = uuid.uuid4().hex
        flow = {
            "state": state,
            "redirect_uri": redirect_uri,
            "scope": list(scopes),
            "code_verifier": uuid.uuid4().hex,
            "nonce": uuid.uuid4().hex,
            "auth_uri": f"https://login.example.test/common/oauth2/v2.0/authorize?state={state}",
            "login_hint": login_hint,
        }
        self.started.append(flow)
        return flow

    def redeem_auth_code(self, flow: Mapping[str, Any], auth_response: Mapping[str, str]) -> TokenGrant:
        if auth_response.get("state") != flow.get("state"):
            raise AuthFlowError(
                "the sign-in response does not belong to this sign-in", error="state_mismatch"
            )
        if self.redeem_error is not None:
            raise AuthFlowError("Microsoft did not complete the sign-in", error=self.redeem_error)
        if auth_response.get("code") != f"code-for-{flow.get('state')}":
            raise AuthFlowError("Microsoft did not complete the sign-in", error="invalid_grant")
        return self._issue(self.next_user, ClientKind.CONFIDENTIAL)

    def start_device_flow(self, scopes: Sequence[str]) -> dict[str, Any]:
        return {
            "user_code": "ABCD-EFGH",
            "message": "Open https://microsoft.com/devicelogin and enter ABCD-EFGH",
        }

    def redeem_device_flow(self, flow: Mapping[str, Any]) -> TokenGrant:
        if self.redeem_error is not None:
            raise AuthFlowError("Microsoft did not complete the sign-in", error=self.redeem_error)
        return self._issue(self.next_user, ClientKind.PUBLIC)

    def acquire_silent(
        self, cache_state: str, home_account_id: str, scopes: Sequence[str], client_kind: ClientKind
    ) -> TokenGrant:
        import json

        with self._lock:
            self.silent_calls += 1
        cache = _FakeCache(**json.loads(cache_state))
        if cache.account_id != home_account_id:
            raise ReauthRequiredError(home_account_id, "no_cached_account")
        if cache.kind != client_kind.value:
            raise IdentityError("invalid_client", "a public client's refresh token needs the public client")
        with self._lock:
            owner = self.live_refresh_tokens.pop(cache.refresh_token, None)
        if owner != home_account_id:
            raise ReauthRequiredError(home_account_id, "invalid_grant")
        object_id, _, tenant_id = home_account_id.partition(".")
        return self._issue(FakeUser(object_id, tenant_id, ""), client_kind)

    def revoke(self, account_id: str) -> None:
        with self._lock:
            for token in [t for t, a in self.live_refresh_tokens.items() if a == account_id]:
                del self.live_refresh_tokens[token]

    def _issue(self, user: FakeUser, kind: ClientKind) -> TokenGrant:
        import json

        refresh_token = f"rt-{uuid.uuid4().hex}"
        with self._lock:
            self.live_refresh_tokens[refresh_token] = user.account_id
        state = json.dumps(
            {"account_id": user.account_id, "refresh_token": refresh_token, "kind": kind.value}
        )
        return TokenGrant(
            home_account_id=user.account_id,
            tenant_id=user.tenant_id,
            object_id=user.object_id,
            username=user.username,
            access_token=f"at-{uuid.uuid4().hex}",
            expires_in=self.access_token_lifetime,
            client_kind=kind,
            display_name=user.display_name,
            cache_state=state,
        )


def make_services(
    settings: Settings | None = None, *, real_tokens: bool = True, **overrides: Any
) -> Services:
    """``Services`` built from fakes (the mail ledger too). With ``real_tokens`` (the default) the real
    ``CachedTokenProvider`` runs over the fake identity and secrets; otherwise
    ``FakeTokenProvider``. ``overrides`` replace single fakes."""
    clock = overrides.pop("clock", None) or FixedClock(EPOCH)
    authflows = overrides.pop("authflows", None) or FakeAuthFlowStore()
    sessions = overrides.pop("connect_sessions", None) or FakeConnectSessionStore()
    parts: dict[str, Any] = {
        "clock": clock,
        "accounts": FakeAccountStore(),
        "subscriptions": FakeSubscriptionStore(),
        "checkpoints": FakeCheckpointStore(),
        "authflows": authflows,
        "connect_sessions": sessions,
        "account_owners": FakeAccountOwnerIndex(),
        "purger": FakePurger(authflows, sessions),
        "secrets": FakeSecretStore(),
        "queues": FakeQueueSender(),
        "graph": FakeGraphApi(clock),
        "identity": FakeIdentity(),
        "ledger": FakeMailLedger(),
        "folder_deltas": FakeFolderDeltaLinks(),
    }
    if not real_tokens:
        parts["tokens"] = FakeTokenProvider()
    parts.update(overrides)
    return Services(settings or make_settings(), **parts)
