"""Notification batches become per-account triggers, and triggers read back (shared/webhook.py)."""

from __future__ import annotations

import json

import pytest

from shared.errors import InvalidInputError, PayloadTooLargeError
from shared.webhook import parse_trigger, read_notification_batch
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
    trigger = parse_trigger(message)
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
    [trigger] = [parse_trigger(m) for m in batch.messages]
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
