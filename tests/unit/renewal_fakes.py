"""What the renewal tests need beyond ``tests/fakes.py``: a recording resync, a Graph
that takes its time and counts concurrent requests, and a way to connect an account with
a live subscription in one line."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from typing import Any

from shared.bootstrap import Services
from shared.client_state import issue_client_state, key_id, new_nonce
from shared.models import Account, Subscription
from shared.ports import GraphAuth, JsonObject
from shared.resources import MAIL, Resource, resource_of
from shared.subscriptions import MAILBOX_RESOURCE
from shared.tokens import token_cache_secret_name
from tests.fakes import EPOCH, FakeGraphApi, FakeUser


class RecordingResync:
    """Stands for ``shared.resource_sync.sync_resource``: records (account id, reason) of a
    mail sync, (account id, reason, kind) of another resource's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, services: Services, account_id: str, resource: Resource = MAIL, *, reason: str) -> None:
        with self._lock:
            self.calls.append((account_id, reason) if resource is MAIL else (account_id, reason, resource.kind.value))


class SlowGraphApi(FakeGraphApi):
    """Each PATCH takes ``latency`` seconds; the most concurrent PATCHes, overall and per
    mailbox, are recorded, and so is every renewed subscription id."""

    def __init__(self, clock: Any = None, latency: float = 0.02) -> None:
        super().__init__(clock)
        self.latency = latency
        self._gauge_lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()
        self.peak_overall = 0
        self.peak_per_mailbox = 0
        self.renewed_ids: list[str] = []

    def renew_subscription(
        self, auth: GraphAuth, subscription_id: str, expires_at: dt.datetime
    ) -> JsonObject:
        with self._gauge_lock:
            self._in_flight[auth.account_id] += 1
            self.peak_overall = max(self.peak_overall, sum(self._in_flight.values()))
            self.peak_per_mailbox = max(self.peak_per_mailbox, self._in_flight[auth.account_id])
        try:
            time.sleep(self.latency)
            answer = super().renew_subscription(auth, subscription_id, expires_at)
            with self._gauge_lock:
                self.renewed_ids.append(subscription_id)
            return answer
        finally:
            with self._gauge_lock:
                self._in_flight[auth.account_id] -= 1


def connect_account(
    services: Services,
    number: int,
    *,
    expires_in: dt.timedelta = dt.timedelta(hours=2),
    heard_ago: dt.timedelta = dt.timedelta(minutes=30),
    resource: str = MAILBOX_RESOURCE,
) -> tuple[Account, Subscription]:
    """An active account (connected a week ago, last notification ``heard_ago``) with a
    subscription known to Graph and to the store, expiring in ``expires_in``."""
    account = connect_bare_account(services, number, heard_ago=heard_ago)
    return account, add_subscription(services, account, expires_in=expires_in, resource=resource)


def connect_bare_account(
    services: Services, number: int, *, heard_ago: dt.timedelta = dt.timedelta(minutes=30)
) -> Account:
    """An active account with no subscription (its connect flow failed half-way)."""
    now = services.clock.now()
    user = FakeUser(f"00000000-0000-4000-8000-{number:012d}", "11111111-1111-4111-8111-111111111111", "")
    return services.accounts.save(
        Account(
            account_id=user.account_id,
            tenant_id=user.tenant_id,
            user_id=user.object_id,
            user_principal_name=f"user{number}@contoso.test",
            connected_at=now - dt.timedelta(days=7),
            last_notification_at=now - heard_ago,
            last_sync_at=now - heard_ago,
        )
    )


def add_subscription(
    services: Services,
    account: Account,
    *,
    expires_in: dt.timedelta,
    resource: str = MAILBOX_RESOURCE,
    key: bytes | None = None,
    nonce: str | None = "",
) -> Subscription:
    """A live subscription as the connector makes it: its clientState issued by ``key``
    (the current one unless given) with a nonce (none when ``nonce`` is None)."""
    graph = services.graph
    assert isinstance(graph, FakeGraphApi)
    now = services.clock.now()
    kind = resource_of(resource) or MAIL
    change_type = kind.change_types
    key = key or services.settings.client_state_key
    nonce = new_nonce() if nonce == "" else nonce
    created = graph.create_subscription(
        GraphAuth(account.account_id, f"token-{account.account_id}"),
        resource=resource,
        change_type=change_type,
        notification_url="https://connector.example.test/api/notifications",
        lifecycle_notification_url="https://connector.example.test/api/lifecycle",
        expires_at=now + dt.timedelta(days=1),
        client_state=issue_client_state(key, account.account_id, nonce),
    )
    graph.subscriptions[created["id"]].expires_at = now + expires_in
    return services.subscriptions.save(
        Subscription(
            subscription_id=created["id"],
            account_id=account.account_id,
            resource=resource,
            change_type=change_type,
            expires_at=now + expires_in,
            last_renewed_at=now - dt.timedelta(days=6),
            client_state_nonce=nonce,
            client_state_key_id=key_id(key),
            immutable_ids=kind is MAIL,
        )
    )


def give_token_cache(services: Services, account: Account) -> None:
    """Sign the account in with the fake identity: its token cache goes to the secrets."""
    identity = services.identity
    object_id, _, tenant_id = account.account_id.partition(".")
    grant = identity._issue(FakeUser(object_id, tenant_id, account.user_principal_name), account.client_kind)
    services.secrets.set(token_cache_secret_name(account.account_id), grant.cache_state)


__all__ = ["EPOCH"]
