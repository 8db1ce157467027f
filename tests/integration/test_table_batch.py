"""The hand-written entity-group transactions of the expiry index, against a real Azurite."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from shared.adapters.table_batch import (
    MAX_OPERATIONS,
    BatchRefusedError,
    Operation,
    move_index_entries,
    submit_changeset,
)
from shared.adapters.table_plain import read_plain
from shared.adapters.table_support import Tables

WHEN = dt.datetime(2026, 11, 27, 9, 30, 15, 123456, tzinfo=dt.UTC)


@pytest.fixture()
def table(azurite):  # type: ignore[no-untyped-def]
    return Tables.for_connection(azurite.connection_string).table(f"batch{uuid.uuid4().hex[:12]}")


def rows(table, partition: str) -> dict[str, dt.datetime]:  # type: ignore[no-untyped-def]
    found = table.query_entities("PartitionKey eq @p", parameters={"p": partition})
    return {e["RowKey"]: e["ExpiresAt"] for e in found}


def test_a_hundred_entries_are_written_and_then_deleted_in_one_changeset_each(table) -> None:  # type: ignore[no-untyped-def]
    names = [f"{uuid.uuid4()}.{uuid.uuid4()}|{uuid.uuid4()}" for _ in range(MAX_OPERATIONS)]

    move_index_entries(table, "2026112709", upserts=[(n, {"ExpiresAt": WHEN}) for n in names])
    written = rows(table, "2026112709")
    move_index_entries(table, "2026112709", deletes=names[:60])

    assert set(written) == set(names)
    assert all(when == WHEN for when in written.values())  # Edm.DateTime, microseconds kept
    assert set(rows(table, "2026112709")) == set(names[60:])


def test_a_changeset_is_all_or_nothing(table) -> None:  # type: ignore[no-untyped-def]
    move_index_entries(table, "2026112710", upserts=[("kept|1", {"ExpiresAt": WHEN})])

    with pytest.raises(BatchRefusedError) as refused:
        move_index_entries(table, "2026112710", deletes=["kept|1", "never-written|2"])

    assert refused.value.status == 404
    assert set(rows(table, "2026112710")) == {"kept|1"}


def test_keys_with_quotes_and_spaces_are_addressed_exactly(table) -> None:  # type: ignore[no-untyped-def]
    odd = "o'brien & co|sub 1"
    move_index_entries(table, "2026112711", upserts=[(odd, {"ExpiresAt": WHEN}), ("plain|2", {"ExpiresAt": WHEN})])
    move_index_entries(table, "2026112711", deletes=["plain|2"])

    assert set(rows(table, "2026112711")) == {odd}


def test_more_than_a_changeset_holds_is_refused_before_anything_is_sent(table) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="at most 100"):
        move_index_entries(table, "2026112712", upserts=[(f"r{n}", {"ExpiresAt": WHEN}) for n in range(101)])
    assert rows(table, "2026112712") == {}


def test_an_entry_is_replaced_as_a_whole_with_its_strings_and_date_times(table) -> None:  # type: ignore[no-untyped-def]
    first = {"ExpiresAt": WHEN, "Status": "active", "Version": 'W/"datetime\'2026-11-27T09%3A30Z\'"'}
    move_index_entries(table, "2026112713", upserts=[("a|1", first)])
    stored = table.get_entity("2026112713", "a|1")
    move_index_entries(table, "2026112713", upserts=[("a|1", {"ExpiresAt": WHEN, "Status": "remové", "Version": None})])
    replaced = table.get_entity("2026112713", "a|1")

    assert stored["Version"] == first["Version"] and stored["ExpiresAt"] == WHEN
    assert replaced["Status"] == "remové"
    assert "Version" not in replaced  # None leaves the property out, and the old value is gone


def test_only_strings_booleans_integers_and_date_times_are_written(table) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="Ratio"):
        move_index_entries(table, "2026112714", upserts=[("a|1", {"Ratio": 0.5})])


def test_integers_read_back_as_the_sdk_wrote_them(table) -> None:  # type: ignore[no-untyped-def]
    submit_changeset(table, "p", [Operation("upsert", "r", {"Small": 7, "Big": 2**40, "Flag": False})])
    entity = table.get_entity("p", "r")
    assert (entity["Small"], entity["Flag"]) == (7, False)  # Edm.Int32, as the SDK writes an int
    assert entity["Big"].value == 2**40  # Edm.Int64 (the SDK refuses to write an int that large)


def test_a_replace_under_a_stale_etag_refuses_the_changeset_and_each_etag_is_returned(table) -> None:  # type: ignore[no-untyped-def]
    [first, second] = submit_changeset(
        table, "p", [Operation("upsert", "lease", {"Holder": "a"}), Operation("upsert", "m1", {"Seen": True})]
    )
    assert first and second and first == table.get_entity("p", "lease").metadata["etag"]
    [renewed, _] = submit_changeset(
        table, "p", [Operation("replace", "lease", {"Holder": "a"}, first), Operation("upsert", "m2", {})]
    )
    assert renewed == table.get_entity("p", "lease").metadata["etag"] != first

    with pytest.raises(BatchRefusedError) as refused:
        submit_changeset(table, "p", [Operation("replace", "lease", {"Holder": "b"}, first), Operation("upsert", "m3", {})])

    assert refused.value.status == 412
    assert table.get_entity("p", "lease")["Holder"] == "a"
    assert {e["RowKey"] for e in table.query_entities("PartitionKey eq 'p'")} == {"lease", "m1", "m2"}


def test_a_plain_read_returns_the_entity_as_written_and_none_when_there_is_none(table) -> None:  # type: ignore[no-untyped-def]
    odd = "o'brien & co|sub 1"
    table.upsert_entity({"PartitionKey": odd, "RowKey": "r", "Name": "x", "Removed": True, "Count": 3})

    entity = read_plain(table, odd, "r")

    assert entity is not None
    assert (entity["PartitionKey"], entity["Name"], entity["Removed"], entity["Count"]) == (odd, "x", True, 3)
    assert read_plain(table, odd, "missing") is None
    assert read_plain(table, "nobody", "r") is None
