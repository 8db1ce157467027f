"""The subscription store's expiry index: table ``subscriptionexpiry``.

PartitionKey = the expiry's UTC hour and one of 16 shards by a hash of the row key
(``yyyymmddHH-07``), RowKey = ``{account id}|{subscription id}``. Tables keep entities
sorted by key, so "everything that expires before T" is one range query,
``PartitionKey lt`` the hour after T's, that touches only the matching index entries,
whatever the size of the table; the shards spread a run's writes (all one lifetime ahead)
over 16 partitions. An entry carries a copy of its subscription (every field, and the
record's ETag as ``Version``): the renewal reads the index alone, not one record per
candidate, and a copy gone stale (a crash between two writes) is caught by the
ETag-conditional write of the renewed record (``reread`` then drops the stale entry).
The renewal run saves with ``defer_index`` and writes the entries of many renewals at
once (``reindex``: one entity-group transaction per bucket and 100 entries, new entries
first). Entries without a copy, and every entry when the reader asks for a ``recheck``,
are checked against their records: a missing copy is written, an entry left behind
deleted, a missing one written.

``ExpiryIndex`` is composed by ``TableSubscriptionStore`` (``shared.adapters.tables``),
which decides when entries are written; the records themselves are read through the
store (``read``).
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from shared.adapters.subscription_entity import subscription_fields, subscription_with
from shared.adapters.table_batch import MAX_OPERATIONS, move_index_entries
from shared.adapters.table_support import Tables, delete_entity
from shared.errors import PersistenceError
from shared.models import Subscription

if TYPE_CHECKING:
    from azure.data.tables import TableClient

EXPIRY_INDEX_TABLE = "subscriptionexpiry"
_T = TypeVar("_T")
# Reads a record by (account id, subscription id): the store's ``get``.
ReadRecord = Callable[[str, str], Subscription | None]


# The index's partitions: the expiry's UTC hour, split by a hash of the row key. Every
# renewal of a run lands in the hour one lifetime ahead: unsplit, that one partition would
# take all of the run's writes (a hot partition; the emulator even finds an entity by
# scanning its partition). Hour first, so that a range of hours is a range of keys.
INDEX_SHARDS = 16


def _hour(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y%m%d%H")


def index_partition(s: Subscription, when: dt.datetime) -> str:
    """The expiry index partition of subscription ``s`` were it to expire ``when``."""
    return f"{_hour(when)}-{zlib.crc32(index_row(s).encode()) % INDEX_SHARDS:02d}"


def _entry_moves(s: Subscription) -> bool:
    """Whether the record's expiry left the hour of the index entry it has."""
    return s.indexed_expires_at is None or _hour(s.indexed_expires_at) != _hour(s.expires_at)


def index_row(s: Subscription) -> str:
    return f"{s.account_id}|{s.subscription_id}"


def _chunks_by(
    items: Iterable[_T], key: Callable[[_T], str], size: int = MAX_OPERATIONS
) -> Iterator[tuple[str, list[_T]]]:
    """Items grouped by ``key``, in chunks of at most ``size`` (an entity-group transaction
    holds one partition's entities, 100 at most)."""
    groups: dict[str, list[_T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    for name, group in sorted(groups.items()):
        for start in range(0, len(group), size):
            yield name, group[start : start + size]


# An index entry with a copy holds every field of its record and the record's ETag, under
# this name; one without holds ``ExpiresAt`` alone, and whoever reads it reads the record.
_COPY_VERSION = "Version"


def _entry_fields(s: Subscription, *, with_copy: bool) -> dict[str, Any]:
    if not with_copy or s.etag is None:
        return {"ExpiresAt": s.expires_at}
    return {**subscription_fields(s), _COPY_VERSION: s.etag}


def _copy_in(entry: Any) -> Subscription | None:
    """The subscription as the entry's copy has it (its ETag that of the record copied)."""
    version = entry.get(_COPY_VERSION)
    if not version:
        return None
    account_id, _, subscription_id = str(entry["RowKey"]).rpartition("|")
    return subscription_with(account_id, subscription_id, entry, str(version))


class ExpiryIndex:
    def __init__(self, tables: Tables, *, read_parallelism: int = 16) -> None:
        self._tables = tables
        self._read_parallelism = read_parallelism

    @property
    def _client(self) -> TableClient:
        return self._tables.table(EXPIRY_INDEX_TABLE)

    def reindex(self, subscriptions: Sequence[Subscription]) -> None:
        latest = {index_row(s): s for s in subscriptions}  # a transaction refuses duplicates
        # New entries (with their copies) first, a transaction per bucket: an old entry is
        # deleted only once the new one exists, so that a subscription never drops out of
        # the index.
        written: list[tuple[str, Subscription]] = []  # (old bucket, subscription)
        unwritten = 0
        for bucket, chunk in _chunks_by(latest.values(), lambda s: index_partition(s, s.expires_at)):
            try:
                move_index_entries(
                    self._client,
                    bucket,
                    upserts=[(index_row(s), _entry_fields(s, with_copy=True)) for s in chunk],
                )
            except PersistenceError:
                unwritten += len(chunk)  # their old entries stay: read, they are repaired
                continue
            for s in chunk:
                if s.indexed_expires_at is not None and _entry_moves(s):
                    written.append((index_partition(s, s.indexed_expires_at), s))
                s.indexed_expires_at = s.expires_at
        for old_bucket, moved in _chunks_by(written, lambda move: move[0]):
            rows = [index_row(s) for _, s in moved]
            try:
                move_index_entries(self._client, old_bucket, deletes=rows)
            except PersistenceError:
                # A changeset fails as a whole when one entry is gone already (a read
                # cleaned it): one by one then, where a missing entry is no error.
                for row in rows:
                    self.drop_entry(old_bucket, row)
        if unwritten:
            raise PersistenceError(f"{unwritten} expiry index entries not moved yet")

    def put_entry(self, bucket: str, row: str, s: Subscription, *, with_copy: bool) -> None:
        from azure.core.exceptions import AzureError
        from azure.data.tables import UpdateMode

        entry = {"PartitionKey": bucket, "RowKey": row, **_entry_fields(s, with_copy=with_copy)}
        try:
            self._client.upsert_entity(entry, mode=UpdateMode.REPLACE)
        except AzureError as exc:
            raise PersistenceError(f"write to the expiry index failed: {type(exc).__name__}") from exc

    def drop_entry(self, bucket: str, row: str) -> None:
        """Best effort: an entry that stays is dropped when read again."""
        try:
            delete_entity(self._client, bucket, row)
        except PersistenceError:
            pass

    def expiring_before(
        self, when: dt.datetime, *, read: ReadRecord, recheck: bool = False
    ) -> Iterator[Subscription]:
        hits = self._client.query_entities(
            "PartitionKey lt @end", parameters={"end": _hour(when + dt.timedelta(hours=1))}, results_per_page=500
        )
        # Records offered through a repaired entry: the scan may meet their new entry later
        # (or not: pages fetched already do not show it), and must not offer them twice.
        repaired: set[str] = set()
        with ThreadPoolExecutor(max_workers=self._read_parallelism) as pool:
            to_read: list[Any] = []
            for hit in hits:
                copy = None if recheck else _copy_in(hit)
                if copy is None:
                    to_read.append(hit)
                    if len(to_read) >= 200:
                        yield from self._resolve(pool, to_read, when, repaired, read)
                        to_read = []
                elif copy.expires_at < when and index_row(copy) not in repaired:
                    yield copy
            if to_read:
                yield from self._resolve(pool, to_read, when, repaired, read)

    def _resolve(
        self, pool: ThreadPoolExecutor, hits: list[Any], when: dt.datetime, repaired: set[str], read: ReadRecord
    ) -> Iterator[Subscription]:
        """Entries checked against their records (no copy, or a recheck): stale entries are
        repaired on the way, best effort (a failed repair is tried again on the next read)."""

        def current(hit: Any) -> tuple[Subscription | None, bool]:
            bucket, row = hit["PartitionKey"], hit["RowKey"]
            account_id, _, subscription_id = str(row).rpartition("|")
            sub = read(account_id, subscription_id)
            if sub is None:
                self.drop_entry(bucket, row)  # left behind by a deleted subscription
                return None, False
            actual = index_partition(sub, sub.expires_at)
            if actual < bucket:
                # An old entry whose delete failed: the right one exists, behind this one,
                # and offered the record there already.
                self.drop_entry(bucket, row)
                return None, False
            try:
                if actual == bucket:
                    if hit.get(_COPY_VERSION) != sub.etag:
                        self.put_entry(bucket, row, sub, with_copy=True)  # its copy brought up to date
                    return sub, False
                # A move that did not finish (a crash between a deferred save and its
                # reindex): the record's expiry lies ahead, its entry may be missing, so it
                # is written, and the record offered now.
                self.put_entry(actual, row, sub, with_copy=True)
            except PersistenceError:
                return sub, True  # the entry is repaired on the next read
            self.drop_entry(bucket, row)
            return sub, True

        for sub, was_repaired in pool.map(current, hits):
            if sub is None or sub.expires_at >= when:
                continue
            row = index_row(sub)
            if row in repaired:
                continue  # offered when its stale entry was repaired
            if was_repaired:
                repaired.add(row)
            yield sub
