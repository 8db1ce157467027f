"""The sync under races and at scale: a stale lease holder, a disconnect during a round,
rounds too long for one invocation, pending work after the last round (shared/sync.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.connect import disconnect_account
from shared.models import AccountStatus
from shared.sync import LEASE_STALE_AFTER, MAX_ROUNDS_PER_LEASE, record_initial_delta, sync_mailbox
from shared.tokens import token_cache_secret_name
from tests.fakes import EPOCH, make_services, make_settings
from tests.unit.pipeline_fakes import DeltaGraphApi, connected_account, events_of, run_queued_rounds

AFTER = EPOCH + dt.timedelta(minutes=5)
BEFORE = EPOCH - dt.timedelta(days=3)


@pytest.fixture
def services():
    return make_services(real_tokens=False, graph=DeltaGraphApi(page_size=3))


@pytest.fixture
def account(services):
    account = connected_account(services)
    record_initial_delta(services, account, services.tokens.graph_auth(account), emit_history=False)
    return services.accounts.get(account.account_id)


def kinds(services, message_id=None):
    return [
        e["type"].rsplit(".", 1)[1] for e in events_of(services) if message_id is None or e["subject"] == message_id
    ]


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- a stale holder --------------------------------------------------------------------------


def test_a_holder_whose_lease_went_stale_during_a_graph_call_publishes_nothing(services, account):
    box = services.graph.inbox(account.account_id)
    message_id = box.deliver("soon deleted", AFTER)
    graph = services.graph
    original = graph.delta_page
    slow_once = []

    def delta_page(auth, link, *, folder="inbox"):
        page = original(auth, link, folder=folder)
        if not slow_once:
            slow_once.append(True)
            # This call takes two minutes (retries, 429 waits): the lease goes stale, another
            # worker takes the account over, publishes the mail, then its deletion.
            services.clock.advance(seconds=2 * LEASE_STALE_AFTER.total_seconds())
            assert sync_mailbox(services, account.account_id, reason="notification").created == 1
            box.delete(message_id)
            assert sync_mailbox(services, account.account_id, reason="notification").deleted == 1
        return page  # still holds the message as it was two minutes ago

    graph.delta_page = delta_page
    result = sync_mailbox(services, account.account_id, reason="notification")
    assert result.skipped == "lease_lost"
    assert kinds(services, message_id) == ["created", "deleted"]
    assert services.ledger.marks(account.account_id, [message_id])[message_id].removed


def test_a_holder_that_lost_its_lease_does_not_save_its_old_delta_link(services, account):
    services.graph.inbox(account.account_id).deliver("x", AFTER)
    graph = services.graph
    original = graph.delta_page
    newer = []

    def delta_page(auth, link, *, folder="inbox"):
        page = original(auth, link, folder=folder)
        if not newer:
            newer.append(True)
            services.clock.advance(seconds=2 * LEASE_STALE_AFTER.total_seconds())
            services.graph.inbox(account.account_id).deliver("y", AFTER)
            sync_mailbox(services, account.account_id, reason="notification")
            newer.append(services.accounts.get(account.account_id).delta_link)
        return page

    graph.delta_page = delta_page
    sync_mailbox(services, account.account_id, reason="notification")
    assert services.accounts.get(account.account_id).delta_link == newer[1]


# -- disconnect during a round ---------------------------------------------------------------


@pytest.fixture
def real_tokens_services(monkeypatch):
    from shared.clock import FixedClock

    clock = FixedClock(EPOCH)
    services = make_services(clock=clock, graph=DeltaGraphApi(clock, page_size=3))
    waits: list[float] = []

    def wait(seconds: float) -> None:  # the disconnect's wait, in the tests' time
        waits.append(seconds)
        clock.advance(seconds=seconds)

    monkeypatch.setattr("shared.connect._sleep", wait, raising=False)
    monkeypatch.setattr("shared.subscriptions.VALIDATION_RETRY_DELAY_SECONDS", 0)
    services.waits = waits  # type: ignore[attr-defined]
    return services


def other_instance(services):
    """A second instance of the app: the same storage, vault, Graph and identity platform,
    its own process (its own access tokens)."""
    from shared.bootstrap import Services

    shared_parts = ("clock", "accounts", "subscriptions", "checkpoints", "authflows", "secrets", "queues",
                    "graph", "identity", "ledger")
    return Services(services.settings, **{name: getattr(services, name) for name in shared_parts})


def _signed_in(services):
    from tests.unit.test_connect import sign_in

    return sign_in(services).account


def test_after_a_disconnect_nothing_of_the_running_round_lands(real_tokens_services):
    services = real_tokens_services
    account = _signed_in(services)
    account_id = account.account_id
    run_queued_rounds(services)
    box = services.graph.inbox(account_id)
    for n in range(5):
        box.deliver(f"mail {n}", services.clock.now() + dt.timedelta(minutes=1))
    services.clock.advance(hours=2)  # the access token needs a refresh: its cache is written back
    graph = services.graph
    original = graph.delta_page
    published_before: list[int] = []

    def delta_page(auth, link, *, folder="inbox"):
        page = original(auth, link, folder=folder)
        if not published_before:
            published_before.append(len(events_of(services)))
            disconnect_account(other_instance(services), account_id)  # meanwhile
        return page

    graph.delta_page = delta_page
    result = sync_mailbox(services, account_id, reason="notification")
    assert result.skipped == "lease_lost"
    assert len(events_of(services)) == published_before[0]  # no event after the disconnect
    stored = services.accounts.get(account_id)
    assert stored.status is AccountStatus.DISCONNECTED and stored.delta_link is None
    assert services.secrets.get(token_cache_secret_name(account_id)) is None
    assert services.ledger.marks(account_id, list(box.messages)) == {}
    assert services.ledger.progress(account_id) is None
    assert services.waits  # the disconnect waited out the round's publishing window


def test_a_token_refresh_that_ends_after_a_disconnect_does_not_bring_the_token_cache_back(
    real_tokens_services,
):
    services = real_tokens_services
    account = _signed_in(services)
    account_id = account.account_id
    services.clock.advance(hours=2)
    identity = services.identity
    original = identity.acquire_silent

    def acquire_silent(*args, **kwargs):
        grant = original(*args, **kwargs)
        disconnect_account(other_instance(services), account_id)  # during the refresh
        return grant

    identity.acquire_silent = acquire_silent
    result = sync_mailbox(services, account_id, reason="notification")
    assert result.skipped == "reauth_required"
    name = token_cache_secret_name(account_id)
    assert services.secrets.get(name) is None and name in services.secrets.deleted
    assert services.accounts.get(account_id).status is AccountStatus.DISCONNECTED


def test_a_reconnect_after_a_disconnect_does_not_publish_the_mail_received_meanwhile(
    real_tokens_services,
):
    services = real_tokens_services
    account = _signed_in(services)
    account_id = account.account_id
    run_queued_rounds(services)
    box = services.graph.inbox(account_id)
    graph = services.graph
    original = graph.delta_page
    raced = []

    def delta_page(auth, link, *, folder="inbox"):
        page = original(auth, link, folder=folder)
        if not raced:
            raced.append(True)
            disconnect_account(other_instance(services), account_id)
        return page

    graph.delta_page = delta_page
    box.deliver("before the disconnect", services.clock.now() + dt.timedelta(seconds=1))
    sync_mailbox(services, account_id, reason="notification")
    graph.delta_page = original
    services.clock.advance(hours=3)
    while_away = box.deliver("while disconnected", services.clock.now())
    services.clock.advance(hours=1)
    again = _signed_in(services)
    assert again.connected_at == services.clock.now()
    run_queued_rounds(services)
    after = box.deliver("after the reconnect", services.clock.now() + dt.timedelta(seconds=5))
    sync_mailbox(services, account_id, reason="notification")
    created = [e["subject"] for e in events_of(services) if e["type"].endswith(".created")]
    assert while_away not in created
    assert created.count(after) == 1


# -- large mailboxes -------------------------------------------------------------------------


def test_a_first_round_too_long_for_one_invocation_keeps_its_place_and_finishes_later(account):
    monotonic = Monotonic()
    services = make_services(
        make_settings(SYNC_TIME_BUDGET_SECONDS="10"), real_tokens=False, graph=DeltaGraphApi(page_size=3)
    )
    fresh = connected_account(services)
    box = services.graph.inbox(fresh.account_id)
    for n in range(30):
        box.deliver(f"old {n}", BEFORE)
    graph = services.graph
    original = graph.delta_page

    def delta_page(auth, link, *, folder="inbox"):
        monotonic.now += 4.0  # each page takes 4 s: two or three pages per invocation
        return original(auth, link, folder=folder)

    graph.delta_page = delta_page
    first = sync_mailbox(services, fresh.account_id, reason="connect", monotonic=monotonic)
    assert first.handed_over and first.pages == 3
    assert services.accounts.get(fresh.account_id).delta_link is None
    assert services.ledger.progress(fresh.account_id) is not None
    # Mail arrives while the round is being walked, its notification finds the lease free.
    arrived = box.deliver("arrived meanwhile", EPOCH + dt.timedelta(seconds=30))
    invocations = 1
    queued = services.queues.sent["mail-sync"]
    pages = first.pages
    while queued:
        from shared.sync import parse_sync_job

        account_id, reason = parse_sync_job(queued.pop(0))
        result = sync_mailbox(services, account_id, reason=reason, monotonic=monotonic)
        pages += result.pages
        invocations += 1
        assert invocations < 20
    assert services.accounts.get(fresh.account_id).delta_link is not None
    assert services.ledger.progress(fresh.account_id) is None
    assert invocations >= 4
    assert pages < 11 + 3 * invocations  # resumed where it stopped, not from the start
    assert [e["subject"] for e in events_of(services)] == [arrived]
    # History (received before the connect) needs no ledger row: none was read for it.
    assert services.ledger.reads <= 2 * invocations


def test_a_first_round_without_history_reads_no_ledger_row(services):
    fresh = connected_account(services, name="big")
    box = services.graph.inbox(fresh.account_id)
    for n in range(60):
        box.deliver(f"old {n}", BEFORE)
    record_initial_delta(services, fresh, services.tokens.graph_auth(fresh), emit_history=False)
    assert services.accounts.get(fresh.account_id).delta_link is not None
    assert services.ledger.reads == 0


def test_a_full_round_after_410_resumes_across_invocations_and_publishes_the_vanished_once(services, account):
    box = services.graph.inbox(account.account_id)
    kept = [box.deliver(f"kept {n}", AFTER) for n in range(8)]
    doomed = [box.deliver(f"doomed {n}", AFTER) for n in range(4)]
    sync_mailbox(services, account.account_id, reason="notification")
    for message_id in doomed:
        box.delete(message_id)
    box.expire_tokens()
    services.settings = make_settings(SYNC_TIME_BUDGET_SECONDS="5")
    monotonic = Monotonic()
    graph = services.graph
    original = graph.delta_page

    def delta_page(auth, link, *, folder="inbox"):
        monotonic.now += 3.0
        return original(auth, link, folder=folder)

    graph.delta_page = delta_page
    newcomer = box.deliver("new after the 410", AFTER)
    first = sync_mailbox(services, account.account_id, reason="notification", monotonic=monotonic)
    assert first.restarted and first.handed_over
    queued = services.queues.sent["mail-sync"]
    while queued:
        from shared.sync import parse_sync_job

        account_id, reason = parse_sync_job(queued.pop(0))
        sync_mailbox(services, account_id, reason=reason, monotonic=monotonic)
    for message_id in doomed:
        assert kinds(services, message_id) == ["created", "deleted"]
    for message_id in kept:
        assert kinds(services, message_id) == ["created"]
    assert kinds(services, newcomer) == ["created"]


# -- pending work after the last round -------------------------------------------------------


def test_pending_work_after_the_last_round_of_a_lease_goes_to_the_queue(services, account):
    graph = services.graph
    original = graph.delta_page
    calls = []

    def delta_page(auth, link, *, folder="inbox"):
        calls.append(link)
        # Every round meets a new trigger: the lease is marked pending each time.
        assert not services.ledger.acquire_lease(
            account.account_id, f"trigger-{len(calls)}", services.clock.now(), LEASE_STALE_AFTER
        )
        return original(auth, link, folder=folder)

    graph.delta_page = delta_page
    result = sync_mailbox(services, account.account_id, reason="notification")
    assert result.rounds == MAX_ROUNDS_PER_LEASE
    assert result.handed_over
    graph.delta_page = original
    late = services.graph.deliver(account.account_id, "came with the last trigger", AFTER)
    run_queued_rounds(services)
    assert kinds(services, late) == ["created"]


def test_a_round_handed_to_the_queue_and_picked_up_at_once_by_another_instance_runs(services, account):
    from shared.sync import parse_sync_job

    monotonic = Monotonic()
    services.settings = make_settings(SYNC_TIME_BUDGET_SECONDS="1")
    box = services.graph.inbox(account.account_id)
    ids = [box.deliver(f"mail {n}", AFTER) for n in range(9)]
    graph = services.graph
    original = graph.delta_page

    def delta_page(auth, link, *, folder="inbox"):
        monotonic.now += 2.0  # out of time after every page
        return original(auth, link, folder=folder)

    graph.delta_page = delta_page
    send = services.queues.send

    def eager_send(queue, messages):
        send(queue, messages)
        if queue == "mail-sync":  # another instance takes the job the moment it is queued
            for message in messages:
                account_id, reason = parse_sync_job(message)
                services.queues.sent["mail-sync"].remove(message)
                sync_mailbox(services, account_id, reason=reason, monotonic=monotonic)

    services.queues.send = eager_send
    sync_mailbox(services, account.account_id, reason="notification", monotonic=monotonic)
    assert sorted(e["subject"] for e in events_of(services)) == sorted(ids)
    assert services.ledger.progress(account.account_id) is None
