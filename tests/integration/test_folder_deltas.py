"""Watched folders in Table Storage against a real Azurite: each folder's deltaLink, the
folder of a ledger mark and of a round's saved place."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from shared.adapters.folder_deltas import TableFolderDeltaLinks
from shared.adapters.ledger import TableMailLedger
from shared.ledger import LedgerMark, SyncProgress

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
CONNECTED = dt.datetime(2026, 11, 1, 8, 30, 15, 250000, tzinfo=dt.UTC)


@pytest.fixture
def account_id() -> str:
    return f"{uuid.uuid4()}.{uuid.uuid4()}"


def test_each_folder_keeps_its_own_link_for_its_connection(azurite, account_id: str) -> None:  # type: ignore[no-untyped-def]
    links = TableFolderDeltaLinks(azurite.connection_string)
    folder_id = "AAMkAGI2/child+folder=="  # a folder id may hold characters a RowKey refuses
    links.save(account_id, "archive", "https://graph.test/delta?token=a1", CONNECTED)
    links.save(account_id, folder_id, "https://graph.test/delta?token=f1", CONNECTED)
    links.save(account_id, "archive", "https://graph.test/delta?token=a2", CONNECTED)
    assert links.links(account_id, CONNECTED) == {
        "archive": "https://graph.test/delta?token=a2",
        folder_id: "https://graph.test/delta?token=f1",
    }
    # A reconnect starts afresh: links of the earlier connection are not used.
    assert links.links(account_id, CONNECTED + dt.timedelta(days=1)) == {}
    assert links.links(f"{uuid.uuid4()}.other", CONNECTED) == {}


def test_folder_links_live_beside_the_ledger_without_being_marks(azurite, account_id: str) -> None:  # type: ignore[no-untyped-def]
    ledger = TableMailLedger(azurite.connection_string)
    links = TableFolderDeltaLinks(azurite.connection_string)
    ledger.record(account_id, [LedgerMark("m1", "ck1", folder="archive")])
    links.save(account_id, "archive", "https://graph.test/delta?token=a1", CONNECTED)
    assert list(ledger.live_message_ids(account_id)) == ["m1"]
    assert ledger.marks(account_id, ["m1"])["m1"].folder == "archive"
    ledger.forget_account(account_id)  # what a reconnect after a disconnect does
    assert links.links(account_id, CONNECTED) == {}


def test_a_rounds_saved_place_names_its_folder(azurite, account_id: str) -> None:  # type: ignore[no-untyped-def]
    ledger = TableMailLedger(azurite.connection_string)
    assert ledger.acquire_lease(account_id, "holder-1", NOW, dt.timedelta(seconds=60))
    place = SyncProgress("https://graph.test/next?skip=1", "incremental", "round-1", "archive")
    ledger.commit(account_id, "holder-1", NOW, [LedgerMark("m2", "ck2", folder="archive")], place)
    assert ledger.progress(account_id) == place
    inbox_place = SyncProgress("https://graph.test/next?skip=2", "first", "round-2")
    ledger.commit(account_id, "holder-1", NOW, [], inbox_place)
    assert ledger.progress(account_id) == inbox_place  # no folder: the inbox, as before
