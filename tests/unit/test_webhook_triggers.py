"""Notification batches become per-account triggers, and triggers read back (shared/webhook.py)."""

from __future__ import annotations

import base64
import json

import pytest

from shared import webhook
from shared.errors import InvalidInputError, PayloadTooLargeError
from shared.webhook import parse_trigger, parse_triggers, read_notification_batch
from tests.unit.pipeline_fakes import CLIENT_STATE_KEY, lifecycle, notification

ADELE = "adele-oid.tenant-1"
S1 = "11111111-2222-4333-8444-555555555555"
S2 = "66666666-7777-4888-9999-aaaaaaaaaaaa"


def body(*items: object) -> bytes:
    return json.dumps({"value": list(items)}).encode()


def test_a_trigger_round_trips_through_the_queue_body() -> None:
    batch = read_notification_batch(
        body(notification(ADELE, S1), notification(ADELE, S2), lifecycle(ADELE, "missed", S1)),
        CLIENT_STATE_KEY,
        received_at_ms=1_700_000_000_000,
    )
    [message] = batch.messages
    [trigger] = parse_triggers(message).triggers
    assert trigger.account_id == ADELE
    assert trigger.subscription_ids == (S1, S2)
    assert trigger.changes == 2
    assert [(s.subscription_id, s.event) for s in trigger.lifecycle] == [(S1, "missed")]
    assert all(c.nonce for c in trigger.changed) and trigger.lifecycle[0].nonce
    assert trigger.received_at_ms == 1_700_000_000_000


def test_a_thousand_notifications_of_one_account_make_one_small_message() -> None:
    batch = read_notification_batch(body(*[notification(ADELE, S1)] * 1000), CLIENT_STATE_KEY)
    assert batch.accepted == 1000
    [message] = batch.messages
    assert len(message) < 300  # a Storage queue message holds 64 KiB


def test_a_clientstate_issued_under_another_key_is_dropped() -> None:
    batch = read_notification_batch(body(notification(ADELE)), b"another-key-of-at-least-32-characters!")
    assert (batch.accepted, batch.dropped, batch.messages) == (0, 1, [])


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", InvalidInputError),
        (b"{", InvalidInputError),
        (b"[]", InvalidInputError),
        (b'{"value": 1}', InvalidInputError),
        (b"\xff\xfe", InvalidInputError),
        (b"[" * 50_000, InvalidInputError),
        (b" " * (1024 * 1024 + 1), PayloadTooLargeError),
    ],
)
def test_bodies_that_are_not_a_notification_collection_are_refused_with_a_reason(
    raw: bytes, error: type
) -> None:
    with pytest.raises(error) as raised:
        read_notification_batch(raw, CLIENT_STATE_KEY)
    assert str(raised.value)


@pytest.mark.parametrize(
    "raw",
    [
        b"nope",
        b"[]",
        b'{"v": 3, "accountId": "a"}',
        b'{"v": 1}',
        b'{"v": 1, "accountId": "a", "lifecycle": [{"event": "x"}]}',
        b'{"v": 1, "accountId": "a", "subscriptionIds": [1]}',
        b'{"v": 2, "accountId": "a", "changed": [{"subscriptionId": 7}]}',
        b'{"v": 2, "accountId": "a", "changed": {"subscriptionId": "x"}}',
        b'{"v": 2, "accountId": "a", "changes": true}',
    ],
)
def test_a_malformed_trigger_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_trigger(raw)


def test_a_trigger_queued_before_nonces_were_kept_is_still_read() -> None:
    trigger = parse_trigger(
        json.dumps({"v": 1, "accountId": ADELE, "subscriptionIds": [S1], "changes": 3,
                    "lifecycle": [{"subscriptionId": S2, "event": "missed"}]})
    )
    assert [(c.subscription_id, c.nonce) for c in trigger.changed] == [(S1, None)]
    assert [(s.subscription_id, s.nonce) for s in trigger.lifecycle] == [(S2, None)]


@pytest.mark.parametrize(
    "bad_id",
    ["../../accounts", "a#b", "a?b", "tab\there", "nul\x00", "del\x7f", "back\\slash", "sub-1", "\ud800",
     "11111111-2222-4333-8444-55555555555", "11111111-2222-4333-8444-5555555555555", S1 + "\n"],
)
def test_a_subscription_id_that_is_not_a_guid_is_a_counted_drop_and_spares_the_rest(bad_id: str) -> None:
    good = notification(ADELE, S1)
    bad = notification(ADELE, bad_id)
    bad_lifecycle = lifecycle(ADELE, "subscriptionRemoved", bad_id)
    batch = read_notification_batch(body(bad, good, bad_lifecycle), CLIENT_STATE_KEY)
    assert (batch.accepted, batch.dropped) == (1, 2)
    [trigger] = [t for m in batch.messages for t in parse_triggers(m).triggers]
    assert trigger.subscription_ids == (S1,) and trigger.lifecycle == ()


def test_a_queued_trigger_naming_a_bad_subscription_id_keeps_its_valid_entries() -> None:
    # Queued before the webhook checked ids: the bad entries go, the good ones stay.
    trigger = parse_trigger(
        json.dumps({"v": 2, "accountId": ADELE, "changes": 2,
                    "changed": [{"subscriptionId": "a/b", "nonce": "n"}, {"subscriptionId": S1, "nonce": "n"}],
                    "lifecycle": [{"subscriptionId": "x#y", "event": "missed", "nonce": "n"}]})
    )
    assert trigger.subscription_ids == (S1,)
    assert trigger.lifecycle == ()
    assert trigger.rejected == 2


def test_the_triggers_of_one_post_travel_in_one_message_with_its_stamp() -> None:
    accounts = [f"user{n}-oid.tenant-1" for n in range(3)]
    batch = read_notification_batch(
        body(*[notification(a, S1) for a in accounts], notification(accounts[0], S2)),
        CLIENT_STATE_KEY,
        received_at_ms=1_700_000_000_000,
    )
    [message] = batch.messages
    read = parse_triggers(message)
    assert read.malformed == []
    assert [t.account_id for t in read.triggers] == accounts
    assert read.triggers[0].subscription_ids == (S1, S2)
    assert {t.received_at_ms for t in read.triggers} == {1_700_000_000_000}
    assert {t.origin for t in read.triggers} == {webhook.ORIGIN}


def test_many_accounts_are_split_over_messages_a_queue_takes() -> None:
    accounts = [f"user{n}-oid.tenant-1" for n in range(1000)]
    batch = read_notification_batch(body(*[notification(a, S1) for a in accounts]), CLIENT_STATE_KEY)
    read = [parse_triggers(m).triggers for m in batch.messages]
    assert [t.account_id for triggers in read for t in triggers] == accounts  # each once, none lost
    assert max(len(triggers) for triggers in read) <= webhook.MAX_TRIGGERS_PER_MESSAGE
    assert len(batch.messages) == -(-1000 // webhook.MAX_TRIGGERS_PER_MESSAGE)
    # A Storage queue message holds 64 KiB of (here base64) text.
    assert max(len(base64.b64encode(m.encode())) for m in batch.messages) < 64 * 1024


def test_large_triggers_are_split_by_size() -> None:
    # Lifecycle events are kept one by one: 40 accounts with 20 each are too big for one message.
    accounts = [f"user{n}-oid.tenant-1" for n in range(40)]
    items = [lifecycle(a, "missed", S1) for a in accounts for _ in range(20)]
    batch = read_notification_batch(body(*items), CLIENT_STATE_KEY)
    assert len(batch.messages) > 2
    assert all(len(m) <= webhook.MAX_MESSAGE_BYTES for m in batch.messages)
    read = [t for m in batch.messages for t in parse_triggers(m).triggers]
    assert [len(t.lifecycle) for t in read] == [20] * 40


def test_a_message_of_one_trigger_written_before_batching_is_still_read() -> None:
    read = parse_triggers(json.dumps({"v": 2, "accountId": ADELE, "changed": [{"subscriptionId": S1, "nonce": "n"}],
                                      "changes": 1, "lifecycle": [], "receivedAt": 5, "origin": "o"}))
    [trigger] = read.triggers
    assert (trigger.account_id, trigger.subscription_ids, trigger.received_at_ms) == (ADELE, (S1,), 5)


def test_a_malformed_trigger_of_a_message_is_set_apart_from_the_others() -> None:
    read = parse_triggers(json.dumps({"v": 3, "receivedAt": 5, "origin": "o", "triggers": [
        {"accountId": ADELE, "changed": [{"subscriptionId": S1, "nonce": "n"}], "changes": 1, "lifecycle": []},
        {"accountId": "", "changed": []},
        "not a trigger",
    ]}))
    assert [t.account_id for t in read.triggers] == [ADELE]
    assert len(read.malformed) == 2
    with pytest.raises(InvalidInputError):
        parse_trigger(read.malformed[0])  # as it will be found in the poison queue: a version 2 message


@pytest.mark.parametrize("raw", [b'{"v": 3}', b'{"v": 3, "triggers": {}}'])
def test_a_message_without_a_triggers_list_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_triggers(raw)


def test_failed_triggers_sent_again_read_back_as_they_were_with_their_attempts() -> None:
    batch = read_notification_batch(
        body(notification(ADELE, S1), notification(ADELE, S2), lifecycle(ADELE, "missed", S1),
             notification("bruno-oid.tenant-1", S1)),
        CLIENT_STATE_KEY,
        received_at_ms=1_700_000_000_000,
    )
    [failed, _] = parse_triggers(batch.messages[0]).triggers

    [again] = webhook.retry_messages([failed], 3)
    read = parse_triggers(again)

    assert read.attempts == 3 and read.triggers == [failed]  # stamp, origin, nonces and lifecycle kept
    assert parse_triggers(batch.messages[0]).attempts == 0
    assert parse_trigger(webhook.single_trigger_json(failed)) == failed  # as the poison queue keeps it


@pytest.mark.parametrize("attempts", ["2", -1, True, 1.5])
def test_a_message_with_a_bad_attempt_count_is_refused(attempts: object) -> None:
    with pytest.raises(InvalidInputError, match="attempts"):
        parse_triggers(json.dumps({"v": 3, "attempts": attempts, "triggers": []}))
