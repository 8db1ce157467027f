"""The command queue's core (shared/mail_commands.py): once only, results, batching."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest

from shared.errors import PersistenceError
from shared.mail_command_format import COMMAND_EVENT_TYPE_PREFIX, parse_command
from shared.mail_commands import (
    COMMAND_RECORD_RETENTION,
    MailboxBatcher,
    handle_command,
    mailbox_batcher,
    prune_command_log,
)
from shared.ports import CommandState
from tests.unit.test_mail_actions import ACCOUNT, services_with


def command(message_id: str, action: str = "move", **extra: Any) -> bytes:
    body = {"id": extra.pop("id", f"cmd-{message_id}-{action}"), "accountId": ACCOUNT, "messageId": message_id,
            "action": action, **extra}
    if action == "move":
        body.setdefault("destination", "archive")
    return json.dumps(body).encode()


def results(services: Any) -> list[dict[str, Any]]:
    return [json.loads(m) for m in services.queues.sent.get("mail-command-results", [])]


def no_linger(services: Any) -> None:
    mailbox_batcher(services)._linger = 0


def test_the_result_type_prefix_is_the_products_own() -> None:
    assert COMMAND_EVENT_TYPE_PREFIX == "com.m365connector.command."


def test_a_command_runs_and_publishes_one_succeeded_cloudevent() -> None:
    services = services_with()
    no_linger(services)
    sent = services.graph.add_message(ACCOUNT, "file me")
    outcome = handle_command(services, command(sent["id"], id="c-1"))
    assert outcome.published == "succeeded"
    assert services.graph.box(ACCOUNT).messages[sent["id"]]["parentFolderId"].startswith("AQMk-archive")
    [event] = results(services)
    assert event["specversion"] == "1.0" and event["type"] == "com.m365connector.command.succeeded"
    assert event["subject"] == "c-1"
    assert event["data"] == {"commandId": "c-1", "accountId": ACCOUNT, "messageId": sent["id"], "action": "move"}


def test_a_redelivered_or_replayed_command_does_nothing_again() -> None:
    services = services_with()
    no_linger(services)
    sent = services.graph.add_message(ACCOUNT, "read me")
    body = command(sent["id"], "markRead", id="c-once")
    handle_command(services, body)
    inner = len(services.graph.inner_log)
    services.graph.box(ACCOUNT).messages[sent["id"]]["isRead"] = False  # the user marked it unread again
    assert handle_command(services, body, redelivered=True).note == "duplicate"
    assert handle_command(services, body).note == "duplicate"
    assert len(services.graph.inner_log) == inner
    assert services.graph.box(ACCOUNT).messages[sent["id"]]["isRead"] is False
    assert len(results(services)) == 1


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not json at all", "not a JSON object"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"id": "c-x", "accountId": ACCOUNT, "messageId": "m"}).encode(), "action"),
        (json.dumps({"id": "c-y", "accountId": ACCOUNT, "messageId": "m", "action": "explode"}).encode(), "action"),
        (json.dumps({"id": "c-z", "accountId": ACCOUNT, "messageId": "m", "action": "move"}).encode(), "destination"),
        (json.dumps({"id": "c-w", "accountId": ACCOUNT, "action": "delete"}).encode(), "messageId"),
        (json.dumps({"id": "c-v", "accountId": ACCOUNT, "messageId": "m", "action": "categorize"}).encode(),
         "categories"),
    ],
)
def test_a_malformed_command_gets_a_failed_result_with_the_reason(body: bytes, reason: str) -> None:
    services = services_with()
    outcome = handle_command(services, body)
    assert outcome.published == "failed"
    [event] = results(services)
    assert event["type"] == "com.m365connector.command.failed"
    assert event["data"]["error"]["code"] == "invalid_command" and reason in event["data"]["error"]["message"]
    assert services.graph.mail_calls() == 0


def test_a_malformed_command_with_an_id_is_refused_once() -> None:
    services = services_with()
    body = json.dumps({"id": "c-bad", "accountId": ACCOUNT, "messageId": "m", "action": "explode"}).encode()
    handle_command(services, body)
    handle_command(services, body, redelivered=True)
    assert len(results(services)) == 1


def test_an_unknown_account_gets_a_failed_result_not_a_retry() -> None:
    services = services_with()
    body = json.dumps({"id": "c-u", "accountId": "nobody.tenant", "messageId": "m", "action": "delete"}).encode()
    outcome = handle_command(services, body)
    assert outcome.published == "failed"
    assert results(services)[0]["data"]["error"]["code"] == "not_found"


def test_a_base64_command_is_read_like_a_plain_one() -> None:
    services = services_with()
    no_linger(services)
    sent = services.graph.add_message(ACCOUNT, "x")
    handle_command(services, base64.b64encode(command(sent["id"], "delete")))
    assert results(services)[0]["type"].endswith(".succeeded")
    assert services.graph.box(ACCOUNT).messages[sent["id"]]["parentFolderId"].startswith("AQMk-deleteditems")


def test_every_action_does_what_it_says() -> None:
    services = services_with()
    no_linger(services)
    box = services.graph.box(ACCOUNT)
    ids = [services.graph.add_message(ACCOUNT, f"m{n}")["id"] for n in range(6)]
    handle_command(services, command(ids[0], "markRead"))
    handle_command(services, command(ids[1], "categorize", categories=["Blue"]))
    handle_command(services, command(ids[2], "flag", flag="flagged"))
    handle_command(services, command(ids[3], "permanentDelete"))
    handle_command(services, command(ids[4], "move", destination="junkemail"))
    box.messages[ids[5]]["isRead"] = True
    handle_command(services, command(ids[5], "markUnread"))
    assert box.messages[ids[0]]["isRead"] is True
    assert box.messages[ids[1]]["categories"] == ["Blue"]
    assert box.messages[ids[2]]["flag"] == {"flagStatus": "flagged"}
    assert ids[3] not in box.messages
    assert box.messages[ids[4]]["parentFolderId"].startswith("AQMk-junkemail")
    assert box.messages[ids[5]]["isRead"] is False
    assert all(e["type"].endswith(".succeeded") for e in results(services))


def test_a_missing_message_and_a_read_only_grant_fail_with_their_codes() -> None:
    services = services_with()
    no_linger(services)
    handle_command(services, command("AAkALg-gone", "delete"))
    assert results(services)[-1]["data"]["error"]["code"] == "not_found"
    read_only = services_with(scopes=("Mail.Read",))
    sent = read_only.graph.add_message(ACCOUNT, "x")
    handle_command(read_only, command(sent["id"], "delete"))
    assert results(read_only)[-1]["data"]["error"]["code"] == "missing_scope"
    assert read_only.graph.mail_calls() == 0


def test_commands_that_arrive_together_go_in_batches_of_at_most_20() -> None:
    services = services_with()
    ids = [services.graph.add_message(ACCOUNT, f"bulk {n}")["id"] for n in range(45)]
    start = threading.Barrier(45)

    def run(message_id: str) -> None:
        start.wait()
        handle_command(services, command(message_id, "move", destination="archive"))

    threads = [threading.Thread(target=run, args=(m,)) for m in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(e["type"].endswith(".succeeded") for e in results(services)) and len(results(services)) == 45
    moves = [b for b in services.graph.batches if b and b[0].url.endswith("/move")]
    assert all(len(b) <= 20 for b in moves)
    assert len(moves) <= 5  # 45 requests, not 45 calls
    box = services.graph.box(ACCOUNT)
    assert all(box.messages[m]["parentFolderId"].startswith("AQMk-archive") for m in ids)
    # a batch's records are claimed, finished and marked in one write each, not one per command
    assert services.command_log.writes <= 3 * len(moves)


def test_two_commands_on_one_message_never_share_a_batch_and_keep_their_order() -> None:
    services = services_with()
    sent = services.graph.add_message(ACCOUNT, "x")
    batcher = MailboxBatcher(services, linger=0.05)
    first = parse_command(command(sent["id"], "markRead", id="a"))
    second = parse_command(command(sent["id"], "move", id="b", destination="archive"))
    threads = [threading.Thread(target=batcher.submit, args=(c,)) for c in (first, second)]
    threads[0].start()
    threads[1].start()
    for t in threads:
        t.join(5)
    writes = [b for b in services.graph.batches if b and not b[0].url.startswith("/me/mailFolders")]
    assert [len(b) for b in writes] == [1, 1]
    assert [b[0].method for b in writes] == ["PATCH", "POST"]


def test_throttling_past_the_retries_fails_the_command_and_frees_its_id() -> None:
    services = services_with()
    no_linger(services)
    sent = services.graph.add_message(ACCOUNT, "x")
    services.graph.throttle_inner = 1
    services.graph.throttle_retry_after = 7
    body = command(sent["id"], "markRead", id="c-throttled")
    handle_command(services, body)
    [event] = results(services)
    assert event["data"]["error"]["code"] == "throttled" and event["data"]["error"]["retryAfter"] == 7
    assert services.command_log.get(ACCOUNT, "c-throttled") is None
    handle_command(services, body)  # sent again with the same id: it runs now
    assert results(services)[-1]["type"].endswith(".succeeded")
    assert services.graph.box(ACCOUNT).messages[sent["id"]]["isRead"] is True


def test_a_claim_left_by_a_dead_delivery_is_reported_interrupted_and_not_run_again() -> None:
    services = services_with()
    sent = services.graph.add_message(ACCOUNT, "x")
    services.command_log.claim(ACCOUNT, ["c-dead"], services.clock.now())  # the delivery died after this
    outcome = handle_command(services, command(sent["id"], "delete", id="c-dead"), redelivered=True)
    assert outcome.note == "interrupted"
    assert results(services)[0]["data"]["error"]["code"] == "interrupted"
    assert services.graph.box(ACCOUNT).messages[sent["id"]]["parentFolderId"].startswith("AQMk-inbox")


def test_a_fresh_claim_on_a_first_delivery_is_a_duplicate_in_flight() -> None:
    services = services_with()
    services.command_log.claim(ACCOUNT, ["c-busy"], services.clock.now())
    outcome = handle_command(services, command("m", "delete", id="c-busy"))
    assert outcome.note == "in_progress" and results(services) == []
    services.clock.advance(minutes=16)  # the claimer is long gone
    assert handle_command(services, command("m", "delete", id="c-busy")).note == "interrupted"


def test_a_result_kept_but_not_sent_is_sent_on_redelivery_without_running_again() -> None:
    services = services_with()
    no_linger(services)
    sent = services.graph.add_message(ACCOUNT, "x")
    body = command(sent["id"], "markRead", id="c-crash")
    real_send = services.queues.send
    calls = {"n": 0}

    def broken_once(queue: str, messages: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise PersistenceError("queue down")
        real_send(queue, messages)

    services.queues.send = broken_once
    with pytest.raises(PersistenceError):
        handle_command(services, body)
    assert services.command_log.get(ACCOUNT, "c-crash").state == CommandState.FINISHED
    inner = len(services.graph.inner_log)
    outcome = handle_command(services, body, redelivered=True)
    assert outcome.note == "republished" and outcome.published == "succeeded"
    assert len(services.graph.inner_log) == inner
    assert services.command_log.get(ACCOUNT, "c-crash").state == CommandState.PUBLISHED


def test_a_storage_failure_before_graph_gives_the_claims_back_for_the_next_delivery() -> None:
    services = services_with()
    no_linger(services)
    sent = services.graph.add_message(ACCOUNT, "x")
    body = command(sent["id"], "markRead", id="c-storage")
    real_get = services.accounts.get
    services.accounts.get = lambda account_id: (_ for _ in ()).throw(PersistenceError("table down"))
    with pytest.raises(PersistenceError):
        handle_command(services, body)
    assert services.command_log.get(ACCOUNT, "c-storage") is None and services.graph.inner_log == []
    services.accounts.get = real_get
    assert handle_command(services, body, redelivered=True).published == "succeeded"
    assert services.graph.box(ACCOUNT).messages[sent["id"]]["isRead"] is True


def test_the_daily_prune_forgets_commands_past_their_retention_only() -> None:
    services = services_with()
    no_linger(services)
    old = services.graph.add_message(ACCOUNT, "old")
    recent = services.graph.add_message(ACCOUNT, "recent")
    old_body = command(old["id"], "markRead", id="c-old")
    handle_command(services, old_body)
    services.clock.advance(days=COMMAND_RECORD_RETENTION.days, hours=-1)
    recent_body = command(recent["id"], "markRead", id="c-recent")
    handle_command(services, recent_body)
    assert prune_command_log(services) == 0  # nothing is past its retention yet

    services.clock.advance(hours=2)
    assert prune_command_log(services) == 1
    # Within its retention a command stays once-only; the pruned one is a new command again.
    assert handle_command(services, recent_body).note == "duplicate"
    assert handle_command(services, old_body).published == "succeeded"
