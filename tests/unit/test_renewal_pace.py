"""The renewal run's promises: quiet mailboxes caught up within CATCHUP_AFTER_MINUTES at
100,000 accounts, and a summary that counts what happened (shared/renewal.py)."""

from __future__ import annotations

import bisect
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import Any

import requests

from shared.adapters.graph import RequestsGraphApi
from shared.models import Account, AccountStatus, Subscription, SubscriptionStatus
from shared.renewal import RenewalPolicy, renew_subscriptions
from shared.subscriptions import MAILBOX_CHANGE_TYPES, MAILBOX_RESOURCE
from tests.fakes import EPOCH, FakeCheckpointStore, make_services
from tests.unit.renewal_fakes import connect_account, give_token_cache

CATCHUP = dt.timedelta(hours=6)


class ManyAccounts:
    """100,000 accounts in id order, paged by position (the fake store sorts on every page)."""

    def __init__(self, accounts: list[Account]) -> None:
        self.items = sorted(accounts, key=lambda a: a.account_id)
        self.ids = [a.account_id for a in self.items]

    def get(self, account_id: str) -> Account | None:
        at = bisect.bisect_left(self.ids, account_id)
        return self.items[at] if at < len(self.ids) and self.ids[at] == account_id else None

    def save(self, account: Account) -> Account:
        return account

    def page(self, *, size: int = 100, continuation: str | None = None) -> tuple[list[Account], str | None]:
        start = int(continuation or 0)
        end = start + size
        return self.items[start:end], (str(end) if end < len(self.items) else None)


class LiveSubscriptions:
    """Every account has its live subscription; none is due for renewal."""

    def __init__(self) -> None:
        self.live = Subscription("s", "a", MAILBOX_RESOURCE, MAILBOX_CHANGE_TYPES, EPOCH + dt.timedelta(days=6))

    def for_account(self, account_id: str) -> list[Subscription]:
        return [self.live]

    def expiring_before(self, when: dt.datetime, *, recheck: bool = False) -> Iterator[Subscription]:
        return iter(())

    def reindex(self, subscriptions: Sequence[Subscription]) -> None:
        pass


def test_at_100000_accounts_no_quiet_mailbox_goes_longer_than_the_catch_up_period() -> None:
    # Idle mailboxes (no notification ever, only the sweep's catch-ups), last heard of at
    # times spread over the past six hours; the timer runs every 15 minutes for 17 hours.
    accounts = [
        Account(
            account_id=f"{n:08d}-oid.tenant",
            tenant_id="tenant",
            user_id=f"{n:08d}-oid",
            user_principal_name=f"u{n}@contoso.test",
            connected_at=EPOCH - dt.timedelta(days=7),
            last_sync_at=EPOCH - dt.timedelta(minutes=n % 360),
        )
        for n in range(100_000)
    ]
    store = ManyAccounts(accounts)
    services = make_services(real_tokens=False, accounts=store, subscriptions=LiveSubscriptions())
    clock = services.clock

    def catch_up(services: Any, account_id: str, resource: Any, *, reason: str) -> None:
        found = store.get(account_id)
        assert found is not None
        found.last_sync_at = clock.now()

    policy = RenewalPolicy(
        window=dt.timedelta(hours=24), catchup_after=CATCHUP, concurrency=2, time_budget_seconds=3600, sweep_accounts=5000
    )
    checkpoints = FakeCheckpointStore()
    worst = dt.timedelta(0)
    for run_number in range(68):
        renew_subscriptions(services, policy=policy, checkpoints=checkpoints, resync=catch_up)
        clock.advance(minutes=15)
        # From the end of the second cycle on: the first one (5 h) measures the sweep's pace,
        # the second catches up whatever the first, not knowing it yet, left too long.
        if run_number >= 40:
            now = clock.now()
            worst = max(worst, now - min(a.last_sync_at for a in accounts if a.last_sync_at))
    assert worst <= CATCHUP, f"an idle mailbox went {worst} without a sync"


def test_a_mailbox_the_run_found_dead_is_counted_as_reauth_required_not_caught_up() -> None:
    services = make_services()
    account, _ = connect_account(services, 1, expires_in=dt.timedelta(days=5), heard_ago=dt.timedelta(hours=8))
    give_token_cache(services, account)
    services.identity.revoke(account.account_id)  # the refresh token died

    policy = RenewalPolicy(window=dt.timedelta(hours=1), catchup_after=CATCHUP, concurrency=2, sweep_accounts=10)
    report = renew_subscriptions(services, policy=policy, checkpoints=FakeCheckpointStore())

    assert services.accounts.get(account.account_id).status is AccountStatus.REAUTH_REQUIRED
    assert report.reauth_required == 1
    assert report.caught_up == 0


def test_429s_the_graph_client_absorbed_show_in_the_summary() -> None:
    services = make_services(real_tokens=False)
    account, subscription = connect_account(services, 1, expires_in=dt.timedelta(hours=1))
    answers = [429, 429, 429, 200]

    class Graph(requests.adapters.BaseAdapter):
        def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
            response = requests.Response()
            response.status_code = answers.pop(0)
            response.headers["Retry-After"] = "1"
            response.headers["Content-Type"] = "application/json"
            expiry = (EPOCH + dt.timedelta(days=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
            response._content = json.dumps({"id": subscription.subscription_id, "expirationDateTime": expiry}).encode()
            return response

        def close(self) -> None:
            pass

    session = requests.Session()
    session.mount("https://", Graph())
    services.graph = RequestsGraphApi("https://graph.test/v1.0", session=session, sleep=lambda s: None)
    policy = RenewalPolicy(window=dt.timedelta(hours=2), catchup_after=CATCHUP, concurrency=2, sweep_accounts=0)

    report = renew_subscriptions(services, policy=policy, checkpoints=FakeCheckpointStore())

    assert report.renewed == 1
    assert report.throttled == 3
    assert "throttled=3" in report.summary()
    assert subscription.status is SubscriptionStatus.ACTIVE
