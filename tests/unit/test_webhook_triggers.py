"""Notification batches become per-account triggers, and triggers read back (shared/webhook.py)."""

from __future__ import annotations

import json

import pytest

from shared.errors import InvalidInputError, PayloadTooLargeError
from shared.webhook import parse_trigger, read_notification_batch
from tests.unit.pipeline_fakes import CLIENT_STATE_KEY, lifecycle, notification

ADELE = "adele-oid.tenant-1"


def body(*items: object) -> bytes:
    return json.dumps({"value": list(items)}).encode()


def test_a_trigger_round_trips_through_the_queue_body() -> None:
    batch = read_notification_batch(
        body(notification(ADELE, "s1"), notification(ADELE, "s2"), lifecycle(ADELE, "missed", "s1")),
        CLIENT_STATE_KEY,
        received_at_ms=1_700_000_000_000,
    )
    [message] = batch.messages
    trigger = parse_trigger(message)
    assert trigger.account_id == ADELE
    assert trigger.subscription_ids == ("s1", "s2")
    assert trigger.changes == 2
    assert [(s.subscription_id, s.event) for s in trigger.lifecycle] == [("s1", "missed")]
    assert trigger.received_at_ms == 1_700_000_000_000


def test_a_thousand_notifications_of_one_account_make_one_small_message() -> None:
    batch = read_notification_batch(body(*[notification(ADELE, "s1")] * 1000), CLIENT_STATE_KEY)
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
        b'{"v": 2, "accountId": "a"}',
        b'{"v": 1}',
        b'{"v": 1, "accountId": "a", "lifecycle": [{"event": "x"}]}',
        b'{"v": 1, "accountId": "a", "subscriptionIds": [1]}',
    ],
)
def test_a_malformed_trigger_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_trigger(raw)
