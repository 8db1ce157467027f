"""CloudEvents built by shared/events.py: the product's output contract."""

from __future__ import annotations

import base64
import datetime as dt
import json

from shared.events import MAX_EVENT_BYTES, MAX_QUEUE_MESSAGE_CHARS, encode_event, event_id, mail_event
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
    "bodyPreview": "Numbers attached",
    "toRecipients": [{"emailAddress": {"address": "adele@contoso.test", "name": "Adele"}}],
    "ccRecipients": [{"emailAddress": {"address": "bob@contoso.test"}}, {"emailAddress": {"name": "no address"}}],
    "hasAttachments": True,
    "importance": "high",
    "categories": ["Finance"],
    "flag": {"flagStatus": "flagged"},
    "conversationId": "conv-1",
    "parentFolderId": "AQMk-inbox",
    "body": {"contentType": "html", "content": "<p>Numbers</p>"},
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
        "bodyPreview": "Numbers attached",
        "toRecipients": ["adele@contoso.test"],
        "ccRecipients": ["bob@contoso.test"],
        "hasAttachments": True,
        "importance": "high",
        "categories": ["Finance"],
        "flag": {"flagStatus": "flagged"},
        "conversationId": "conv-1",
        "parentFolderId": "AQMk-inbox",
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


def test_the_body_is_in_the_event_only_when_asked() -> None:
    event = mail_event(ACCOUNT, MESSAGE, "created", folder="inbox", now=NOW, body="html")
    assert event["data"]["body"] == {"contentType": "html", "content": "<p>Numbers</p>"}
    assert event["data"]["bodyTruncated"] is False


def test_a_long_body_is_cut_on_a_character_boundary_and_says_so() -> None:
    message = {**MESSAGE, "body": {"contentType": "text", "content": "é" * 100}}  # 200 bytes of UTF-8
    event = mail_event(ACCOUNT, message, "created", folder="inbox", now=NOW, body="text", body_max_bytes=51)
    assert event["data"]["body"]["content"] == "é" * 25  # 50 bytes: the 26th character would need 52
    assert event["data"]["bodyTruncated"] is True


def test_an_encoded_event_always_fits_one_queue_message() -> None:
    # Quotes and control characters take several bytes each once JSON-escaped.
    content = ('"\\\x01' + "漢" * 3) * 20_000
    message = {**MESSAGE, "body": {"contentType": "text", "content": content}}
    event = mail_event(ACCOUNT, message, "created", folder="inbox", now=NOW, body="text", body_max_bytes=10**7)
    encoded = encode_event(event)
    assert len(base64.b64encode(encoded.encode("utf-8"))) <= MAX_QUEUE_MESSAGE_CHARS
    decoded = json.loads(encoded)
    assert decoded["data"]["bodyTruncated"] is True
    assert content.startswith(decoded["data"]["body"]["content"])
    assert len(decoded["data"]["body"]["content"]) > 1000  # cut to fit, not dropped


def test_huge_recipient_lists_are_shortened_to_fit() -> None:
    many = [{"emailAddress": {"address": f"user{n}@contoso.test"}} for n in range(5000)]
    event = mail_event(ACCOUNT, {**MESSAGE, "toRecipients": many}, "created", folder="inbox", now=NOW)
    decoded = json.loads(encode_event(event))
    assert len(encode_event(event).encode()) <= MAX_EVENT_BYTES
    assert decoded["data"]["recipientsTruncated"] is True
    assert decoded["data"]["toRecipients"][0] == "user0@contoso.test"


def test_a_move_is_an_update_naming_both_folders_with_its_own_id() -> None:
    before = mail_event(ACCOUNT, MESSAGE, "updated", folder="inbox", now=NOW)
    moved = mail_event(
        ACCOUNT, MESSAGE, "updated", folder="archive", now=NOW, previous_folder="inbox", version="CQAAA1|archive"
    )
    assert moved["data"]["folder"] == "archive"
    assert moved["data"]["previousFolder"] == "inbox"
    assert moved["source"] == "/accounts/oid.tid/mailFolders/archive"
    assert moved["subject"] == before["subject"]
    assert moved["id"] != before["id"]


def test_a_deleted_event_can_say_the_mail_was_moved_out() -> None:
    item = {"id": "AAMkAG1", "@removed": {"reason": "deleted"}}
    event = mail_event(ACCOUNT, item, "deleted", folder="inbox", now=NOW, reason="moved")
    assert event["data"]["reason"] == "moved"
