"""Mailbox sync: one event per change, none twice, nothing lost (shared/sync.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.errors import ConcurrencyError, ThrottledError
from shared.models import AccountStatus
from shared.sync import LEASE_STALE_AFTER, record_initial_delta, sync_mailbox
from tests.fakes import EPOCH, make_services
from tests.unit.pipeline_fakes import DeltaGraphApi, connected_account, events_of

AFTER = EPOCH + dt.timedelta(minutes=5)
BEFORE = EPOCH - dt.timedelta(days=3)


@pytest.fixture
def services():
    return make_services(real_tokens=False, graph=DeltaGraphApi(page_size=3))


@pytest.fixture
def account(services):
    return connected_account(services)


def inbox(services, account):
    return services.graph.inbox(account.account_id)


def connect(services, account, *, emit_history=False):
    auth = services.tokens.graph_auth(account)
    return record_initial_delta(
        services, services.accounts.get(account.account_id), auth, emit_history=emit_history
    )


def types(services):
    return [(e["type"].rsplit(".", 1)[1], e["subject"]) for e in events_of(services)]


def test_the_first_round_stores_a_delta_link_and_publishes_no_history(services, account):
    for n in range(7):
        inbox(services, account).deliver(f"old {n}", BEFORE)
    saved = connect(services, account)
    assert saved.delta_link is not None
    assert events_of(services) == []
    assert services.graph.calls.count(("delta_page", account.account_id)) == 3  # 7 items, pages of 3


def test_the_first_round_publishes_history_when_asked(services, account):
    ids = [inbox(services, account).deliver(f"old {n}", BEFORE) for n in range(4)]
    connect(services, account, emit_history=True)
    assert types(services) == [("created", i) for i in ids]


def test_mail_that_arrived_while_connecting_is_published(services, account):
    inbox(services, account).deliver("history", BEFORE)
    during = inbox(services, account).deliver("during the connect", EPOCH)
    connect(services, account)
    assert types(services) == [("created", during)]


def test_a_new_mail_gives_exactly_one_created_event(services, account):
    connect(services, account)
    message_id = inbox(services, account).deliver("Quarterly report", AFTER)
    result = sync_mailbox(services, account.account_id, reason="notification")
    assert result.created == 1
    [event] = events_of(services)
    assert event["type"] == "com.microsoft.graph.message.created"
    assert event["specversion"] == "1.0"
    assert event["subject"] == message_id
    assert event["data"]["subject"] == "Quarterly report"
    assert event["data"]["from"] == "alice@fabrikam.test"
    assert event["data"]["accountId"] == account.account_id
    assert services.accounts.get(account.account_id).last_sync_at is not None


def test_replayed_syncs_publish_nothing_more(services, account):
    connect(services, account)
    inbox(services, account).deliver("once", AFTER)
    for _ in range(3):
        sync_mailbox(services, account.account_id, reason="notification")
    assert len(events_of(services)) == 1


def test_a_round_retried_from_the_old_delta_link_publishes_nothing_twice(services, account):
    connect(services, account)
    before = services.accounts.get(account.account_id)
    inbox(services, account).deliver("a", AFTER)
    inbox(services, account).deliver("b", AFTER)
    sync_mailbox(services, account.account_id, reason="notification")
    # As if the deltaLink save had been lost: the next round starts from the old link.
    current = services.accounts.get(account.account_id)
    current.delta_link = before.delta_link
    services.accounts.save(current)
    inbox(services, account).deliver("c", AFTER)
    sync_mailbox(services, account.account_id, reason="notification")
    assert [e["data"]["subject"] for e in events_of(services)] == ["a", "b", "c"]


def test_update_and_delete_give_their_events(services, account):
    connect(services, account)
    message_id = inbox(services, account).deliver("draft", AFTER)
    sync_mailbox(services, account.account_id, reason="notification")
    inbox(services, account).update(message_id, isRead=True)
    sync_mailbox(services, account.account_id, reason="notification")
    inbox(services, account).delete(message_id)
    sync_mailbox(services, account.account_id, reason="notification")
    assert types(services) == [("created", message_id), ("updated", message_id), ("deleted", message_id)]
    ids = [e["id"] for e in events_of(services)]
    assert len(set(ids)) == 3


def test_a_change_to_a_message_from_before_the_connect_is_an_update(services, account):
    old = inbox(services, account).deliver("history", BEFORE)
    connect(services, account)
    inbox(services, account).update(old, isRead=True)
    sync_mailbox(services, account.account_id, reason="notification")
    assert types(services) == [("updated", old)]


def test_after_410_a_full_round_publishes_only_what_is_new_and_what_vanished(services, account):
    box = inbox(services, account)
    box.deliver("history", BEFORE)
    connect(services, account)
    kept = box.deliver("kept", AFTER)
    gone = box.deliver("gone", AFTER)
    sync_mailbox(services, account.account_id, reason="notification")
    box.expire_tokens()
    box.delete(gone)
    fresh = box.deliver("fresh", AFTER)
    result = sync_mailbox(services, account.account_id, reason="notification")
    assert result.restarted
    assert types(services)[2:] == [("created", fresh), ("deleted", gone)]
    assert kept not in [s for _, s in types(services)[2:]]
    # The next round works from the new deltaLink again.
    box.update(kept, isRead=True)
    assert sync_mailbox(services, account.account_id, reason="notification").updated == 1


def test_events_carry_stable_ids(services, account):
    connect(services, account)
    message_id = inbox(services, account).deliver("x", AFTER)
    sync_mailbox(services, account.account_id, reason="notification")
    first = events_of(services)[0]["id"]
    services.ledger.forget_account(account.account_id)  # as if the mark had never been written
    current = services.accounts.get(account.account_id)
    current.delta_link = None
    services.accounts.save(current)
    sync_mailbox(services, account.account_id, reason="resync")
    again = [e for e in events_of(services) if e["subject"] == message_id]
    assert {e["id"] for e in again} == {first}


def test_a_busy_account_is_left_to_the_running_round_which_runs_once_more(services, account):
    connect(services, account)
    ledger = services.ledger
    assert ledger.acquire_lease(account.account_id, "other-worker", services.clock.now(), LEASE_STALE_AFTER)
    inbox(services, account).deliver("while busy", AFTER)
    result = sync_mailbox(services, account.account_id, reason="notification")
    assert result.skipped == "busy"
    assert events_of(services) == []
    # The holder sees the pending mark when it lets go: one more round must run.
    assert ledger.release_lease(account.account_id, "other-worker") is False


def test_the_lease_holder_runs_another_round_for_work_that_arrived_meanwhile(services, account):
    connect(services, account)
    box = inbox(services, account)
    box.deliver("first", AFTER)
    graph = services.graph
    original = graph.delta_page
    arrived = []

    def delta_page(auth, link, *, folder="inbox"):
        page = original(auth, link, folder=folder)
        if not arrived:
            # A notification arrives mid-round: its trigger finds the account busy.
            arrived.append(box.deliver("second", AFTER))
            assert sync_mailbox(services, account.account_id, reason="notification").skipped == "busy"
        return page

    graph.delta_page = delta_page
    result = sync_mailbox(services, account.account_id, reason="notification")
    assert result.rounds == 2
    assert [e["data"]["subject"] for e in events_of(services)] == ["first", "second"]


def test_a_stale_lease_of_a_dead_worker_is_taken_over(services, account):
    connect(services, account)
    ledger = services.ledger
    ledger.acquire_lease(
        account.account_id, "dead-worker", services.clock.now() - 2 * LEASE_STALE_AFTER, LEASE_STALE_AFTER
    )
    inbox(services, account).deliver("after the crash", AFTER)
    assert sync_mailbox(services, account.account_id, reason="notification").created == 1


def test_a_conflicting_account_write_is_reloaded_and_the_delta_link_still_saved(services, account):
    connect(services, account)
    inbox(services, account).deliver("x", AFTER)
    store = services.accounts
    original = store.save
    conflicts = [ConcurrencyError("somebody else wrote first")]

    def save(entity):
        if conflicts:
            raise conflicts.pop()
        return original(entity)

    store.save = save
    before = store.get(account.account_id).delta_link
    sync_mailbox(services, account.account_id, reason="notification")
    assert store.get(account.account_id).delta_link != before


def test_throttling_propagates_for_a_queue_retry_and_is_recorded(services, account):
    connect(services, account)
    services.graph.fail["delta_page"] = [ThrottledError("429 from Graph", retry_after=3)]
    with pytest.raises(ThrottledError):
        sync_mailbox(services, account.account_id, reason="notification")
    assert "ThrottledError" in services.accounts.get(account.account_id).last_error
    # The lease was let go: the retry runs at once.
    inbox(services, account).deliver("later", AFTER)
    assert sync_mailbox(services, account.account_id, reason="notification").created == 1


def test_an_account_whose_token_is_dead_is_skipped_without_error(services, account):
    connect(services, account)
    services.tokens.dead.add(account.account_id)
    assert sync_mailbox(services, account.account_id, reason="notification").skipped == "reauth_required"


def test_unknown_and_inactive_accounts_are_skipped(services, account):
    assert sync_mailbox(services, "nobody.tenant", reason="notification").skipped == "unknown_account"
    current = services.accounts.get(account.account_id)
    current.status = AccountStatus.DISCONNECTED
    services.accounts.save(current)
    assert sync_mailbox(services, account.account_id, reason="notification").skipped == "inactive"


def test_concurrent_syncs_of_one_account_neither_lose_nor_double_an_event(services, account):
    import threading
    import time

    connect(services, account)
    services.graph.latency = 0.002
    publish = services.queues.send

    def slow_send(queue, messages):  # widens the window between reading and writing the ledger
        time.sleep(0.002)
        publish(queue, messages)

    services.queues.send = slow_send
    sent: list[str] = []
    stop = threading.Event()

    def mail_arrives() -> None:
        for n in range(40):
            sent.append(services.graph.deliver(account.account_id, f"mail {n}", AFTER))
        stop.set()

    def notified() -> None:
        while not stop.is_set():
            sync_mailbox(services, account.account_id, reason="notification")
        sync_mailbox(services, account.account_id, reason="notification")

    workers = [threading.Thread(target=notified) for _ in range(6)]
    sender = threading.Thread(target=mail_arrives)
    for worker in workers:
        worker.start()
    sender.start()
    for thread in [sender, *workers]:
        thread.join(timeout=60)
    sync_mailbox(services, account.account_id, reason="missed")
    created = [e["subject"] for e in events_of(services) if e["type"].endswith(".created")]
    assert sorted(created) == sorted(sent)


def test_a_refused_access_token_is_replaced_once_and_the_round_completes(services, account):
    from shared.errors import GraphUnauthorizedError

    connect(services, account)
    inbox(services, account).deliver("after a revocation", AFTER)
    services.graph.fail["delta_page"] = [
        GraphUnauthorizedError("InvalidAuthenticationToken", "Access token is invalid.")
    ]
    assert sync_mailbox(services, account.account_id, reason="notification").created == 1


def test_a_refused_token_whose_refresh_is_dead_ends_in_reauth_required(services, account):
    from shared.errors import GraphUnauthorizedError

    connect(services, account)
    tokens = services.tokens
    services.graph.fail["delta_page"] = [
        GraphUnauthorizedError("InvalidAuthenticationToken", "Access token is invalid.")
    ]
    tokens.forget = lambda account_id: tokens.dead.add(account_id)
    assert sync_mailbox(services, account.account_id, reason="notification").skipped == "reauth_required"
