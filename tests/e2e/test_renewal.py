"""The renewal timer on the whole local stack: devhost fires it, the Graph simulator answers.

Every test connects its own simulator users through the real connect flow, then makes
their subscriptions due by writing the table as a run would find them hours later (an
expiry soon, the last renewal a day ago), fires ``renew_subscriptions`` through the
devhost's admin API and watches the table and the simulator.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devstack.stack import LocalStack
from shared.adapters.tables import TableAccountStore, TableSubscriptionStore
from shared.bootstrap import Services
from shared.config import Settings
from shared.models import AccountStatus, Subscription
from shared.renewal import RenewalPolicy, renew_subscriptions
from shared.subscriptions import MAILBOX_SUBSCRIPTION_LIFETIME, parse_graph_datetime
from tests.support.stack import connect_user, new_user, read_queue, send_mail, wait_for

pytestmark = pytest.mark.e2e

NOT_RENEWED = "not renewed"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def connect(stack: LocalStack, prefix: str = "renewal") -> tuple[dict[str, Any], str]:
    user = new_user(stack, prefix)
    page = connect_user(stack, user["userPrincipalName"])
    assert page.status_code == 200, page.text[:500]
    return user, f"{user['id']}.{user['tenantId']}"


def first_round_done(stack: LocalStack, account_id: str) -> None:
    accounts = TableAccountStore(stack.storage_connection)

    def done() -> bool:
        account = accounts.get(account_id)
        return account is not None and account.delta_link is not None

    wait_for(done, timeout=60, what="the connect's first delta round")


def subscription_of(stack: LocalStack, account_id: str) -> Subscription:
    subs = TableSubscriptionStore(stack.storage_connection).for_account(account_id)
    assert len(subs) == 1, subs
    return subs[0]


def make_due(
    stack: LocalStack, account_id: str, *, expires_in: dt.timedelta = dt.timedelta(hours=2)
) -> Subscription:
    """The subscription as a run finds it close to its expiry: renewed a day ago, due soon."""
    store = TableSubscriptionStore(stack.storage_connection)
    sub = subscription_of(stack, account_id)
    sub.expires_at = (now() + expires_in).replace(microsecond=0)
    sub.last_renewed_at = now() - dt.timedelta(days=1)
    sub.last_reauthorized_at = None
    return store.save(sub)


def fire_renewal(stack: LocalStack) -> None:
    response = requests.post(
        f"{stack.devhost_url}/admin/functions/renew_subscriptions",
        headers={"x-functions-key": stack.function_key},
        json={},
        timeout=10,
    )
    assert response.status_code == 202, response.text


def renewed(stack: LocalStack, account_id: str, subscription_id: str) -> Subscription | None:
    sub = TableSubscriptionStore(stack.storage_connection).get(account_id, subscription_id)
    if sub is not None and sub.expires_at > now() + dt.timedelta(days=6):
        return sub
    return None


def devhost_log(stack: LocalStack) -> str:
    assert stack.log_dir is not None
    return (stack.log_dir / "devhost.log").read_text(errors="replace")


@pytest.fixture
def sim_faults(stack: LocalStack) -> Iterator[None]:
    yield
    stack.sim("DELETE", "/_sim/faults")


def test_an_expiring_subscription_is_renewed_in_graph_and_its_new_expiry_stored(stack: LocalStack) -> None:
    _, account_id = connect(stack)
    due = make_due(stack, account_id)

    fire_renewal(stack)

    stored = wait_for(lambda: renewed(stack, account_id, due.subscription_id), timeout=60, what="the renewal")
    in_graph = stack.sim("GET", f"/_sim/subscriptions/{due.subscription_id}")
    graph_expiry = parse_graph_datetime(in_graph["expirationDateTime"], now())
    assert abs((graph_expiry - stored.expires_at).total_seconds()) < 1
    assert stored.expires_at - now() > MAILBOX_SUBSCRIPTION_LIFETIME - dt.timedelta(minutes=5)
    assert stored.last_renewed_at is not None and now() - stored.last_renewed_at < dt.timedelta(minutes=2)


def test_a_subscription_deleted_in_graph_is_recreated(stack: LocalStack) -> None:
    user, account_id = connect(stack)
    gone = make_due(stack, account_id)
    stack.sim("DELETE", f"/_sim/subscriptions/{gone.subscription_id}")  # silently, no lifecycle event

    fire_renewal(stack)

    def replacement() -> Subscription | None:
        subs = TableSubscriptionStore(stack.storage_connection).for_account(account_id)
        fresh = [s for s in subs if s.subscription_id != gone.subscription_id]
        return fresh[0] if len(subs) == 1 and fresh else None

    new = wait_for(replacement, timeout=60, what="the recreated subscription")
    live = stack.sim("GET", "/_sim/subscriptions")["value"]
    mine = [s for s in live if s["userId"] == user["id"]]
    assert [s["id"] for s in mine] == [new.subscription_id]
    assert new.expires_at > now() + dt.timedelta(days=6)


def test_a_due_subscription_made_before_nonces_were_kept_is_reissued_and_mail_still_flows(
    stack: LocalStack,
) -> None:
    # As a record of an older release is found: no nonce, no key id. A PATCH would keep its
    # clientState for another week; the renewal replaces the subscription instead.
    user, account_id = connect(stack, "reissue")
    first_round_done(stack, account_id)
    store = TableSubscriptionStore(stack.storage_connection)
    old = make_due(stack, account_id)
    old.client_state_nonce, old.client_state_key_id = None, None
    old = store.save(old)

    fire_renewal(stack)

    def replacement() -> Subscription | None:
        [current] = store.for_account(account_id)
        return current if current.subscription_id != old.subscription_id else None

    new = wait_for(replacement, timeout=60, what="the re-issued subscription")
    assert new.client_state_nonce and new.client_state_key_id
    assert new.expires_at > now() + dt.timedelta(days=6)
    live = [s for s in stack.sim("GET", "/_sim/subscriptions")["value"] if s["userId"] == user["id"]]
    assert [s["id"] for s in live] == [new.subscription_id]  # the old one deleted in Graph

    # The new subscription's notifications are accepted: a mail becomes its event.
    sent = send_mail(stack, user["id"], "after the re-issue")
    seen: list[Any] = []

    def created() -> list[Any]:
        seen.extend(e for e in read_queue(stack, "mail-events") if isinstance(e, dict))
        return [e for e in seen if e.get("subject") == sent["immutableId"] and e["type"].endswith(".created")]

    assert len(wait_for(created, timeout=30, what="the mail's created event")) == 1


def test_a_user_whose_sign_in_was_revoked_is_marked_reauth_required(stack: LocalStack) -> None:
    # Access tokens issued with 5 minutes to live are never cached by the connector (it keeps
    # a 5-minute margin), so the renewal must redeem the refresh token: that is what a
    # revocation kills, as Entra ID does after a password reset.
    # They stay that short until the account is marked: a token refreshed meanwhile (the
    # connect's delta round, a run the devhost's timer fires) would otherwise live an hour.
    stack.sim("PUT", "/_sim/settings", json={"accessTokenLifetimeSeconds": 300})
    accounts = TableAccountStore(stack.storage_connection)

    def marked() -> Any:
        account = accounts.get(account_id)
        return account if account is not None and account.status == AccountStatus.REAUTH_REQUIRED else None

    try:
        user, account_id = connect(stack)
        first_round_done(stack, account_id)
        due = make_due(stack, account_id)
        stack.sim("POST", f"/_sim/users/{user['id']}/revoke")

        fire_renewal(stack)

        wait_for(marked, timeout=60, what="the account to become reauth_required")
    finally:
        stack.sim("PUT", "/_sim/settings", json={"accessTokenLifetimeSeconds": 3600})
    stored = subscription_of(stack, account_id)
    assert stored.subscription_id == due.subscription_id
    assert stored.expires_at == due.expires_at  # not renewed, not leased


def test_throttling_slows_the_run_but_every_subscription_is_renewed(
    stack: LocalStack, sim_faults: None
) -> None:
    accounts = [connect(stack, "throttled")[1] for _ in range(4)]
    due = {a: make_due(stack, a).subscription_id for a in accounts}
    stack.sim("PUT", "/_sim/faults", json={"throttleRate": 0.5, "seed": 20261120})
    started = now()

    fire_renewal(stack)

    def all_renewed() -> bool:
        return all(renewed(stack, a, s) for a, s in due.items())

    wait_for(all_renewed, timeout=120, what="every renewal")
    assert now() - started >= dt.timedelta(seconds=1)  # at least one Retry-After of 1 s was honoured
    log = devhost_log(stack)
    for account_id in accounts:
        assert not any(NOT_RENEWED in line and account_id in line for line in log.splitlines())


class CountingGraph:
    """Counts PATCHes per subscription around a real Graph adapter."""

    def __init__(self, inner: Any, counter: Counter[str], lock: threading.Lock) -> None:
        self._inner, self._counter, self._lock = inner, counter, lock

    def renew_subscription(self, auth: Any, subscription_id: str, expires_at: dt.datetime) -> Any:
        with self._lock:
            self._counter[subscription_id] += 1
        return self._inner.renew_subscription(auth, subscription_id, expires_at)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_two_instances_running_together_renew_each_subscription_once(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two instances of the app (own token caches, own Graph clients) over the same storage
    and the same Graph, started at the same moment, with Graph slowed so that they overlap."""
    accounts = [connect(stack, "overlap")[1] for _ in range(6)]
    due = {make_due(stack, a).subscription_id for a in accounts}
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(stack.ca_file))
    settings = Settings.from_env(stack.settings)
    counter: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(2)
    reports: list[Any] = []

    def instance() -> None:
        services = Services(settings)
        services.__dict__["graph"] = CountingGraph(services.graph, counter, lock)
        policy = RenewalPolicy.from_services(services)
        start.wait()
        reports.append(renew_subscriptions(services, policy=policy))

    stack.sim("PUT", "/_sim/settings", json={"graphLatencyMs": 200})
    try:
        threads = [threading.Thread(target=instance) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        stack.sim("PUT", "/_sim/settings", json={"graphLatencyMs": 0})

    assert len(reports) == 2
    assert {s: counter[s] for s in due} == {s: 1 for s in due}
    assert all(n == 1 for n in counter.values()), counter
    assert all(renewed(stack, a, subscription_of(stack, a).subscription_id) for a in accounts)
