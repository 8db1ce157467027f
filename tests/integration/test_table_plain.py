"""Single-entity reads, writes and deletes by hand, against a real Azurite, side by side
with the SDK they stand in for: a store sees the same entity either way."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from azure.core import MatchConditions
from azure.data.tables import EdmType, EntityProperty, UpdateMode

from shared.adapters.table_plain import delete_plain, read_typed, write_plain
from shared.adapters.table_support import Tables
from shared.errors import ConcurrencyError

WHEN = dt.datetime(2026, 12, 1, 15, 6, 33, 123456, tzinfo=dt.UTC)


@pytest.fixture()
def table(azurite):  # type: ignore[no-untyped-def]
    return Tables.for_connection(azurite.connection_string).table(f"plain{uuid.uuid4().hex[:12]}")


def entity(**properties):  # type: ignore[no-untyped-def]
    return {"PartitionKey": "acct 'o'|drive", "RowKey": "account", **properties}


def test_a_typed_read_gives_what_the_sdk_gives(table) -> None:  # type: ignore[no-untyped-def]
    table.create_entity(entity(Name="Zoë", Flag=True, Small=7, Big=EntityProperty(2**40, EdmType.INT64), At=WHEN, Empty=""))

    mine = read_typed(table, "acct 'o'|drive", "account")
    sdk = table.get_entity("acct 'o'|drive", "account")

    assert mine is not None
    assert mine["At"] == WHEN and mine["At"].tzinfo is not None
    assert mine["Big"] == 2**40 and mine["Small"] == 7 and mine["Flag"] is True
    assert {k: v for k, v in mine.items() if k != "Big"} == {k: v for k, v in sdk.items() if k != "Big"}
    assert sdk["Big"].value == mine["Big"]  # the SDK wraps an Int64
    assert mine.metadata["etag"] == sdk.metadata["etag"]
    assert read_typed(table, "acct 'o'|drive", "missing") is None


def test_what_is_written_by_hand_reads_back_through_the_sdk(table) -> None:  # type: ignore[no-untyped-def]
    etag = write_plain(table, entity(Name="a", At=WHEN, Count=3, Gone=None), None)

    stored = table.get_entity("acct 'o'|drive", "account")

    assert stored.metadata["etag"] == etag
    assert (stored["Name"], stored["At"], stored["Count"]) == ("a", WHEN, 3)
    assert "Gone" not in stored  # None leaves the property out, as the SDK does


def test_an_insert_over_an_existing_entity_is_a_conflict(table) -> None:  # type: ignore[no-untyped-def]
    write_plain(table, entity(Name="first"), None)

    with pytest.raises(ConcurrencyError, match="already exists"):
        write_plain(table, entity(Name="second"), None)

    assert table.get_entity("acct 'o'|drive", "account")["Name"] == "first"


def test_a_replace_needs_the_etag_it_read_and_replaces_the_whole_entity(table) -> None:  # type: ignore[no-untyped-def]
    first = write_plain(table, entity(Name="a", Extra="x"), None)
    second = write_plain(table, entity(Name="b"), first)

    with pytest.raises(ConcurrencyError, match="changed"):
        write_plain(table, entity(Name="stale"), first)

    stored = table.get_entity("acct 'o'|drive", "account")
    assert second != first and stored.metadata["etag"] == second
    assert stored["Name"] == "b" and "Extra" not in stored


def test_a_replace_of_a_vanished_entity_is_a_conflict(table) -> None:  # type: ignore[no-untyped-def]
    etag = write_plain(table, entity(Name="a"), None)
    table.delete_entity("acct 'o'|drive", "account")

    with pytest.raises(ConcurrencyError):
        write_plain(table, entity(Name="b"), etag)


def test_a_delete_under_a_stale_etag_is_refused_and_a_gone_entity_is_fine(table) -> None:  # type: ignore[no-untyped-def]
    first = write_plain(table, entity(Name="a"), None)
    table.update_entity(
        entity(Name="b"), mode=UpdateMode.REPLACE, etag=first, match_condition=MatchConditions.IfNotModified
    )

    assert delete_plain(table, "acct 'o'|drive", "account", first) is False
    assert table.get_entity("acct 'o'|drive", "account")["Name"] == "b"
    assert delete_plain(table, "acct 'o'|drive", "account") is True
    assert delete_plain(table, "acct 'o'|drive", "account") is True  # already gone
    assert read_typed(table, "acct 'o'|drive", "account") is None
