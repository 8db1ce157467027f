"""Drive subscriptions through the whole local stack over weeks of time: the devhost and
the Graph simulator run on one clock under libfaketime (tests/support/faketime.py), which
the tests move forward, so the renewal finds subscriptions as it would days later, and the
simulator expires and refuses them by Graph's rules at that time.

Every test connects its own user (mail and files granted) through the real connect flow,
moves the clock, fires ``renew_subscriptions`` through the devhost's admin API and watches
the table and the simulator. The clock only moves forward within the module: leases and
records written "later" must stay in the past.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableClient

from devstack.stack import LocalStack
from shared.adapters.tables import TableAccountStore, TableSubscriptionStore
from shared.models import Subscription
from shared.resources import DRIVE, MAIL, resource_of
from shared.subscriptions import parse_graph_datetime
from tests.conftest import STACK_SETTINGS
from tests.support.faketime import Clock, faketime_env
from tests.support.stack import connect_user, new_user, read_queue, run_timer, wait_for

pytestmark = pytest.mark.e2e

SCOPES = "User.Read Mail.Read Files.ReadWrite.All"
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Clock]]:
    data_dir: Path = tmp_path_factory.mktemp("drive-renewal")
    on_clock = faketime_env(data_dir / "faketime")
    settings = {
        **STACK_SETTINGS,
        "GRAPH_SCOPES": SCOPES,
        "MAIL_ACTIONS_ENABLED": "false",
        "RENEWAL_WINDOW_MINUTES": "1440",  # the default: a day ahead of the expiry
        "CATCHUP_AFTER_MINUTES": "360",
        # A timer that never fires while the clock moves through the weeks ahead (the next
        # 29 February is more than a year away); the tests fire it.
        "RENEWAL_SCHEDULE": "0 0 0 29 2 *",
    }
    with LocalStack.on_free_ports(
        data_dir, extra_settings=settings, child_env={"devhost": on_clock, "graphsim": on_clock}
    ) as running:
        yield running, Clock(data_dir / "faketime", running, simulator=True)


@pytest.fixture
def stack(timed: tuple[LocalStack, Clock]) -> LocalStack:
    return timed[0]


@pytest.fixture
def clock(timed: tuple[LocalStack, Clock]) -> Clock:
    return timed[1]


def connect(stack: LocalStack) -> tuple[dict[str, Any], str]:
    user = new_user(stack, "drive")
    page = connect_user(stack, user["userPrincipalName"])
    assert page.status_code == 200, page.text[:500]
    account_id = f"{user['id']}.{user['tenantId']}"
    accounts = TableAccountStore(stack.storage_connection)

    def first_round_done() -> bool:
        account = accounts.get(account_id)
        return account is not None and account.delta_link is not None

    wait_for(first_round_done, timeout=60, what="the mail's first round")
    return user, account_id


def recorded(stack: LocalStack, account_id: str) -> dict[str, Subscription]:
    subs = TableSubscriptionStore(stack.storage_connection).for_account(account_id)
    by_kind: dict[str, Subscription] = {}
    for sub in subs:
        resource = resource_of(sub.resource)
        assert resource is not None and resource.kind.value not in by_kind, subs
        by_kind[resource.kind.value] = sub
    return by_kind


def in_simulator(stack: LocalStack, user: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in stack.sim("GET", "/_sim/subscriptions")["value"] if s["userId"] == user["id"]]


def fire_renewal(stack: LocalStack) -> None:
    run_timer(stack, "renew_subscriptions")


def lifetime_left(sub: Subscription, clock: Clock) -> dt.timedelta:
    return sub.expires_at - clock.now()


def close_to(left: dt.timedelta, expected: dt.timedelta) -> bool:
    return abs(left - expected) < dt.timedelta(minutes=5)


def test_a_drive_subscription_is_renewed_a_day_before_its_29_days_are_up(stack: LocalStack, clock: Clock) -> None:
    user, account_id = connect(stack)
    made = recorded(stack, account_id)
    drive = made["drive"]
    assert (drive.resource, drive.change_type) == ("/me/drive/root", "updated")
    assert close_to(lifetime_left(drive, clock), DRIVE.lifetime)  # 42,300 minutes less the margin
    assert close_to(lifetime_left(made["mail"], clock), MAIL.lifetime)

    clock.advance(dt.timedelta(days=28, hours=12))  # the drive expires in 20 hours: inside the window
    fire_renewal(stack)

    def renewed() -> Subscription | None:
        current = recorded(stack, account_id).get("drive")
        return current if current is not None and lifetime_left(current, clock) > 29 * DAY else None

    stored = wait_for(renewed, timeout=90, what="the drive subscription's renewal")
    assert stored.subscription_id == drive.subscription_id  # renewed in place, not recreated
    assert close_to(lifetime_left(stored, clock), DRIVE.lifetime)
    assert stored.last_renewed_at is not None and abs(stored.last_renewed_at - clock.now()) < dt.timedelta(minutes=2)
    [graph_drive] = [s for s in in_simulator(stack, user) if s["resource"] == "/me/drive/root"]
    graph_expiry = parse_graph_datetime(graph_drive["expirationDateTime"], clock.now())
    assert abs((graph_expiry - stored.expires_at).total_seconds()) < 1
    # The mail subscription's 7 days ran out three weeks ago: Graph had dropped it, so the
    # same run made a new one, for mail, with mail's lifetime.
    mail = wait_for(
        lambda: (m := recorded(stack, account_id).get("mail")) and m.subscription_id != made["mail"].subscription_id and m,
        timeout=90,
        what="the mail subscription's recreation",
    )
    assert close_to(lifetime_left(mail, clock), MAIL.lifetime)


def test_a_drive_subscription_the_simulator_forgot_is_made_again_for_the_drive(stack: LocalStack, clock: Clock) -> None:
    user, account_id = connect(stack)
    gone = recorded(stack, account_id)["drive"]
    stack.sim("DELETE", f"/_sim/subscriptions/{gone.subscription_id}")  # silently, as Graph may

    clock.advance(dt.timedelta(days=28, hours=12))
    fire_renewal(stack)

    def replacement() -> Subscription | None:
        current = recorded(stack, account_id).get("drive")
        return current if current is not None and current.subscription_id != gone.subscription_id else None

    new = wait_for(replacement, timeout=90, what="the drive subscription made again")
    [graph_drive] = [s for s in in_simulator(stack, user) if s["resource"] == "/me/drive/root"]
    assert graph_drive["id"] == new.subscription_id and graph_drive["changeType"] == "updated"
    assert graph_drive["lifecycleNotificationUrl"] == f"{stack.devhost_url}/api/lifecycle"
    assert (new.resource, new.change_type, new.immutable_ids) == ("/me/drive/root", "updated", False)
    assert close_to(lifetime_left(new, clock), DRIVE.lifetime)
    assert new.client_state_nonce and new.client_state_nonce != gone.client_state_nonce


def drive_events_of(stack: LocalStack, account_id: str, seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen.extend(e for e in read_queue(stack, "drive-events") if isinstance(e, dict))
    return [e for e in seen if e.get("data", {}).get("accountId") == account_id]


def drive_first_round_done(stack: LocalStack, account_id: str) -> bool:
    """The drive's deltaLink is saved: a row ``d...`` in the drive's ledger partition."""
    table = TableClient.from_connection_string(stack.storage_connection, "mailledger")
    rows = table.query_entities("PartitionKey eq @pk", parameters={"pk": DRIVE.sync_key(account_id)})
    return any(row["RowKey"].startswith("d") and row.get("Link") for row in rows)


@pytest.fixture
def dropping(stack: LocalStack) -> Iterator[None]:
    """Graph drops every notification (a drive's are retried for 15 minutes only, then lost)."""
    stack.sim("PUT", "/_sim/faults", json={"dropRate": 1.0})
    yield
    stack.sim("DELETE", "/_sim/faults")


def test_a_drive_change_whose_notification_was_lost_comes_with_the_sweeps_catch_up(
    stack: LocalStack, clock: Clock, dropping: None
) -> None:
    user, account_id = connect(stack)
    wait_for(lambda: drive_first_round_done(stack, account_id), timeout=60, what="the drive's first round")
    seen: list[dict[str, Any]] = []
    body = {"path": "Reports/lost.txt", "content": "written while notifications were lost"}
    item = stack.sim("POST", f"/_sim/users/{user['id']}/drive/items", json=body)
    wait_for(
        lambda: any(d["outcome"] == "dropped" for d in stack.sim("GET", "/_sim/deliveries")["value"]
                    if d.get("subscriptionIds") == [recorded(stack, account_id)["drive"].subscription_id]),
        timeout=30,
        what="the drive notification to be dropped",
    )
    assert [e for e in drive_events_of(stack, account_id, seen) if e["subject"] == item["id"]] == []

    clock.advance(dt.timedelta(hours=7))  # past CATCHUP_AFTER_MINUTES without a drive sync
    fire_renewal(stack)

    [event] = wait_for(
        lambda: [e for e in drive_events_of(stack, account_id, seen) if e["subject"] == item["id"]] or None,
        timeout=90,
        what="the lost change's event after the catch-up",
    )
    assert event["type"] == "com.microsoft.graph.driveItem.created"
    # Recorded once the catch-up has returned: the drive's next one is due 6 hours on.
    caught_up = wait_for(lambda: recorded(stack, account_id)["drive"].caught_up_at, timeout=30, what="the catch-up")
    assert abs(caught_up - clock.now()) < dt.timedelta(minutes=2)
