"""Two instances of the app over one Azurite and one Graph simulator, as Azure Functions
runs them when it scales out: two devhost processes, each with its own worker pools,
polling the same queues.

The first instance is the one ``LocalStack`` starts; the second is a devhost of its own
on another port with the same settings (its PUBLIC_BASE_URL is the first's: one public
address in front of both, as Graph and browsers see one app).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

import pytest
import requests

from devstack.stack import PROJECT_ROOT, LocalStack, free_port
from tests.conftest import STACK_SETTINGS
from tests.support.stack import (
    browser,
    function_key_headers,
    new_user,
    read_form,
    read_queue,
    send_mail,
    wait_for,
)

pytestmark = pytest.mark.e2e

# Short, so that a large mailbox's first round visibly spans several invocations.
SYNC_BUDGET_SECONDS = 1


@dataclass
class Pair:
    stack: LocalStack
    second_url: str
    second_log: Path
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def urls(self) -> tuple[str, str]:
        return self.stack.devhost_url, self.second_url

    def logs(self) -> str:
        assert self.stack.log_dir is not None
        first = (self.stack.log_dir / "devhost.log").read_text(errors="replace")
        return first + self.second_log.read_text(errors="replace")

    def read_events(self) -> list[dict[str, Any]]:
        self.events.extend(e for e in read_queue(self.stack, "mail-events") if isinstance(e, dict))
        return self.events

    def created(self, account_id: str) -> Counter[str]:
        return Counter(
            e["subject"]
            for e in self.read_events()
            if e["data"].get("accountId") == account_id and e["type"].endswith(".created")
        )

    def account(self, account_id: str, via: int = 0) -> dict[str, Any]:
        response = requests.get(
            f"{self.urls[via]}/api/accounts/{account_id}", headers=function_key_headers(self.stack), timeout=30
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


def _start_second_devhost(stack: LocalStack, log_path: Path) -> tuple[subprocess.Popen[bytes], IO[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "REQUESTS_CA_BUNDLE": str(stack.ca_file),
        **{name: str(value) for name, value in stack.ports.items()},
        **stack.settings,
        "DEVHOST_HOST": "127.0.0.1",
        "DEVHOST_PORT": str(port),
        "DEVHOST_FUNCTION_KEY": stack.function_key,
    }
    if stack.cert_dir is not None:
        env["DEVSTACK_CERT_DIR"] = str(stack.cert_dir)
    log = open(log_path, "ab")  # noqa: SIM115 - closed by the fixture
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.devhost"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
        try:
            return requests.get(f"{url}/api/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(healthy, timeout=60, interval=0.3, what="the second devhost")
    return process, log, url


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    data_dir = tmp_path_factory.mktemp("two-instances")
    settings = {**STACK_SETTINGS, "SYNC_TIME_BUDGET_SECONDS": str(SYNC_BUDGET_SECONDS)}
    with LocalStack.on_free_ports(data_dir, extra_settings=settings) as stack:
        assert stack.log_dir is not None
        log_path = stack.log_dir / "devhost-2.log"
        process, log, url = _start_second_devhost(stack, log_path)
        try:
            yield Pair(stack, url, log_path)
        finally:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
            log.close()


def connect(pair: Pair, user: dict[str, Any], via: int = 0) -> tuple[requests.Response, float]:
    """The real browser flow, started on instance ``via``; returns the callback's answer
    and how long the callback took."""
    session = browser(pair.stack)
    response = session.get(f"{pair.urls[via]}/api/connect", params={"login_hint": user["userPrincipalName"]}, timeout=30)
    callback_seconds = 0.0
    for _ in range(5):
        form = read_form(response.text) if "text/html" in response.headers.get("Content-Type", "") else None
        if form is None or not form.action or form.method != "POST" or "code" not in form.fields:
            break
        started = time.monotonic()
        response = session.post(urljoin(response.url, form.action), data=form.fields, timeout=60)
        callback_seconds = time.monotonic() - started
    return response, callback_seconds


def account_id_of(user: dict[str, Any]) -> str:
    return f"{user['id']}.{user['tenantId']}"


def subscriptions_of(pair: Pair, user: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in pair.stack.sim("GET", "/_sim/subscriptions")["value"] if s["userId"] == user["id"]]


# -- a large mailbox ---------------------------------------------------------------------


def test_a_20000_message_inbox_connects_fast_and_its_first_round_spans_invocations(pair: Pair) -> None:
    stack = pair.stack
    user = new_user(stack, "large")
    stack.sim("POST", f"/_sim/users/{user['id']}/messages", json={"count": 20_000, "subject": "history"})
    time.sleep(1.1)  # the history was received in an earlier second than the connect

    response, callback_seconds = connect(pair, user, via=1)

    assert response.status_code == 200, response.text[:500]
    assert callback_seconds < 2.0
    account_id = account_id_of(user)
    # Mail that arrives while the first round walks the inbox is published once.
    arrived = [send_mail(stack, user["id"], f"arrived {n}")["immutableId"] for n in range(3)]
    wait_for(lambda: f"sync of account {account_id} (connect)" in pair.logs(), timeout=60, what="the first invocation")
    arrived += [send_mail(stack, user["id"], f"arrived later {n}")["immutableId"] for n in range(2)]
    wait_for(lambda: pair.account(account_id)["lastSyncAt"], timeout=180, interval=0.5, what="the first round's end")

    wait_for(lambda: all(pair.created(account_id)[m] for m in arrived), timeout=60, what="the arrived mail")
    time.sleep(3)
    created = pair.created(account_id)
    assert all(created[m] == 1 for m in arrived)
    assert set(created) == set(arrived)  # no history
    rounds = [line for line in pair.logs().splitlines() if f"sync of account {account_id} (" in line]
    # The round kept its place and went on in a later invocation (on either instance).
    assert any("the rest queued" in line for line in rounds), rounds
    # The queued continuation resumes it, unless a notification's round found the kept place
    # first (the continuation then finds the lease busy).
    assert any("resumed" in line and "(connect)" not in line for line in rounds), rounds


# -- two instances, faults, renewal, disconnect ------------------------------------------


@pytest.fixture(scope="module")
def mailboxes(pair: Pair) -> list[dict[str, Any]]:
    users = [new_user(pair.stack, f"twin{n}") for n in range(10)]
    for n, user in enumerate(users):
        response, _ = connect(pair, user, via=n % 2)
        assert response.status_code == 200, response.text[:500]
    for user in users:
        wait_for(lambda u=user: pair.account(account_id_of(u))["lastSyncAt"], timeout=60, what="first rounds")
        wait_for(lambda u=user: subscriptions_of(pair, u), what="the inbox subscription")
    # One public address in front of both instances spreads Graph's POSTs over them: half the
    # mailboxes' notifications go to the second (each instance then runs queue work of its own
    # webhooks as well as the other's, whichever polls first).
    for user in users[1::2]:
        for subscription in subscriptions_of(pair, user):
            pair.stack.sim("PATCH", f"/_sim/subscriptions/{subscription['id']}",
                           json={"notificationUrl": urljoin(pair.second_url, "/api/notifications")})
    return users


def test_every_mail_gets_exactly_one_created_event_under_faults_on_two_instances(
    pair: Pair, mailboxes: list[dict[str, Any]]
) -> None:
    stack = pair.stack
    stack.sim("PUT", "/_sim/faults", json={"dropRate": 0.3, "duplicateRate": 0.3, "reorder": True})
    sent: dict[str, list[str]] = {account_id_of(u): [] for u in mailboxes}
    try:
        for n in range(100):
            user = mailboxes[n % len(mailboxes)]
            sent[account_id_of(user)].append(send_mail(stack, user["id"], f"mail {n}")["immutableId"])
        time.sleep(2)  # the notifications (dropped, doubled, reordered) are delivered
    finally:
        stack.sim("DELETE", "/_sim/faults")
    for user in mailboxes:
        for subscription in subscriptions_of(pair, user):
            stack.sim("POST", f"/_sim/subscriptions/{subscription['id']}/lifecycle", json={"event": "missed"})

    def all_created() -> bool:
        return all(all(pair.created(a)[m] for m in ids) for a, ids in sent.items())

    try:
        wait_for(all_created, timeout=90, interval=0.5, what="a created event for every mail")
    except AssertionError:
        missing = {a: [m for m in ids if not pair.created(a)[m]] for a, ids in sent.items()}
        lines = [line[:400] for line in pair.logs().splitlines() if any(a in line for a, m in missing.items() if m)]
        errors = [line[:300] for line in pair.logs().splitlines() if "ERROR" in line or "Traceback" in line]
        raise AssertionError({"missing": {a: len(m) for a, m in missing.items()}, "lines": lines[-40:], "errors": errors[-20:]}) from None
    time.sleep(3)
    for account_id, ids in sent.items():
        created = pair.created(account_id)
        assert {m: created[m] for m in ids} == {m: 1 for m in ids}
        assert set(created) == set(ids)
    # Both instances took part: each ran queue work.
    assert pair.stack.log_dir is not None
    for log in (pair.stack.log_dir / "devhost.log", pair.second_log):
        text = log.read_text(errors="replace")
        assert "Executed 'Functions.process_graph_notifications'" in text or "Executed 'Functions.run_mail_sync'" in text


def test_two_renewal_runs_started_at_once_renew_each_subscription_once(
    pair: Pair, mailboxes: list[dict[str, Any]]
) -> None:
    import datetime as dt

    from shared.adapters.tables import TableSubscriptionStore

    store = TableSubscriptionStore(pair.stack.storage_connection)
    now = dt.datetime.now(dt.UTC)
    for user in mailboxes:
        for sub in store.for_account(account_id_of(user)):
            sub.expires_at = (now + dt.timedelta(hours=2)).replace(microsecond=0)
            sub.last_renewed_at = now - dt.timedelta(days=1)
            sub.last_reauthorized_at = None
            store.save(sub)
    runs_before = pair.logs().count("renewal run: ")

    def fire(url: str) -> None:
        response = requests.post(
            f"{url}/admin/functions/renew_subscriptions", headers=function_key_headers(pair.stack), json={}, timeout=10
        )
        assert response.status_code == 202, response.text

    threads = [threading.Thread(target=fire, args=(url,)) for url in pair.urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: pair.logs().count("renewal run: ") >= runs_before + 2, timeout=60, what="both renewal runs")

    lines = re.findall(r"renewal run: renewed=(\d+)[^\n]*another_run=(True|False)", pair.logs())[runs_before:]
    assert len(lines) == 2
    assert sum(int(renewed) for renewed, _ in lines) == len(mailboxes)
    for user in mailboxes:
        [sub] = store.for_account(account_id_of(user))
        assert sub.expires_at > now + dt.timedelta(days=6)


def test_a_disconnect_on_one_instance_during_a_sync_on_the_other_leaves_nothing_behind(pair: Pair) -> None:
    from shared.adapters.keyvault import KeyVaultSecretStore
    from shared.adapters.ledger import TableMailLedger
    from shared.adapters.tables import TableAccountStore, TableSubscriptionStore
    from shared.tokens import token_cache_secret_name

    stack = pair.stack
    user = new_user(stack, "leaving")
    response, _ = connect(pair, user)
    assert response.status_code == 200
    account_id = account_id_of(user)
    wait_for(lambda: pair.account(account_id)["lastSyncAt"], timeout=60, what="the first round")
    # Much new mail and a slow Graph: the next round takes seconds, and publishes as it goes.
    stack.sim("POST", f"/_sim/users/{user['id']}/messages", json={"count": 1500, "subject": "new"})
    before = stack.sim("GET", "/_sim/settings")
    stack.sim("PUT", "/_sim/settings", json={"graphLatencyMs": 150})
    resync: dict[str, Any] = {}

    def run_resync() -> None:
        resync["response"] = requests.post(
            f"{pair.urls[0]}/api/accounts/{account_id}/resync", headers=function_key_headers(stack), timeout=120
        )

    try:
        sync = threading.Thread(target=run_resync)
        sync.start()
        wait_for(lambda: pair.created(account_id), timeout=30, what="the round publishing")
        gone = requests.delete(
            f"{pair.urls[1]}/api/accounts/{account_id}", headers=function_key_headers(stack), timeout=60
        )
        assert gone.status_code == 200, gone.text
        published_at_disconnect = sum(pair.created(account_id).values())
        sync.join(timeout=120)
    finally:
        stack.sim("PUT", "/_sim/settings", json={"graphLatencyMs": before["graphLatencyMs"]})
    time.sleep(SYNC_BUDGET_SECONDS + 2)  # anything the round handed to the queue has run

    assert sum(pair.created(account_id).values()) == published_at_disconnect  # no event after it
    assert published_at_disconnect < 1500  # the round was cut short
    stored = TableAccountStore(stack.storage_connection).get(account_id)
    assert stored is not None and stored.status.value == "disconnected"
    assert stored.delta_link is None and stored.connected_at is None
    assert TableSubscriptionStore(stack.storage_connection).for_account(account_id) == []
    assert subscriptions_of(pair, user) == []
    ledger = TableMailLedger(stack.storage_connection)
    assert list(ledger.live_message_ids(account_id)) == []
    assert ledger.progress(account_id) is None
    vault = KeyVaultSecretStore(stack.keyvault_url, ca_bundle=str(stack.ca_file))
    assert vault.get(token_cache_secret_name(account_id)) is None
