"""CloudEvents built by shared/events.py: the product's output contract."""

from __future__ import annotations

import datetime as dt
import json

from shared.events import encode_event, event_id, mail_event
from shared.models import Account

ACCOUNT = Account(
    account_id="oid.tid", tenant_id="tid", user_id="oid", user_principal_name="adele@contoso.test"
)
NOW = dt.datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=dt.UTC)
MESSAGE = {
    "id": "AAMkAG1",
    "changeKey": "CQAAA1",
    "subject": "Quarterly report",
    "from": {"emailAddress": {"address": "alice@fabrikam.test", "name": "Alice"}},
    "receivedDateTime": "2026-11-20T11:59:58Z",
    "isRead": False,
}


def test_a_created_event_has_every_cloudevents_attribute_and_the_mail_fields() -> None:
    event = mail_event(ACCOUNT, MESSAGE, "created", folder="inbox", now=NOW)
    assert event["specversion"] == "1.0"
    assert event["type"] == "com.microsoft.graph.message.created"
    assert event["source"] == "/accounts/oid.tid/mailFolders/inbox"
    assert event["subject"] == "AAMkAG1"
    assert event["time"] == "2026-11-20T12:00:00.123Z"
    assert event["datacontenttype"] == "application/json"
    assert event["data"] == {
        "accountId": "oid.tid",
        "tenantId": "tid",
        "userId": "oid",
        "ownerId": None,
        "messageId": "AAMkAG1",
        "folder": "inbox",
        "changeType": "created",
        "subject": "Quarterly report",
        "from": "alice@fabrikam.test",
        "receivedDateTime": "2026-11-20T11:59:58Z",
        "changeKey": "CQAAA1",
        "isRead": False,
        "internetMessageId": None,
        "webLink": None,
    }


def test_a_deleted_event_carries_the_reason_and_no_content() -> None:
    event = mail_event(
        ACCOUNT, {"id": "AAMkAG1", "@removed": {"reason": "deleted"}}, "deleted", folder="inbox", now=NOW
    )
    assert event["type"] == "com.microsoft.graph.message.deleted"
    assert event["data"]["reason"] == "deleted"
    assert "subject" not in event["data"]


def test_ids_are_stable_per_change_and_differ_between_changes() -> None:
    later = NOW + dt.timedelta(minutes=1)
    created = mail_event(ACCOUNT, MESSAGE, "created", folder="inbox", now=NOW)
    assert mail_event(ACCOUNT, MESSAGE, "created", folder="inbox", now=later)["id"] == created["id"]
    update_1 = event_id("oid.tid", "AAMkAG1", "updated", "CQAAA1")
    update_2 = event_id("oid.tid", "AAMkAG1", "updated", "CQAAA2")
    deleted = event_id("oid.tid", "AAMkAG1", "deleted", None)
    assert len({created["id"], update_1, update_2, deleted}) == 4
    assert event_id("other.tid", "AAMkAG1", "created", None) != created["id"]


def test_an_event_encodes_to_json_that_reads_back_the_same() -> None:
    event = mail_event(ACCOUNT, {**MESSAGE, "subject": "Prüfung ✓"}, "updated", folder="inbox", now=NOW)
    assert json.loads(encode_event(event)) == event
