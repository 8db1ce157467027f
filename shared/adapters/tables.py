"""Azure Table Storage adapters: accounts, subscriptions (+ expiry index), pending OAuth flows.

Keys are chosen for the access paths of a large deployment (DESIGN.md "Scale"):
- ``accounts``: PartitionKey = account id, RowKey = "account". Every hot-path access is a
  point read; only the paged operator listing walks the table.
- ``subscriptions``: PartitionKey = account id, RowKey = Graph subscription id. Processing
  and lifecycle handling read one entity by (account, subscription).
- ``subscriptionexpiry``: the expiry index. PartitionKey = the expiry's UTC hour and one
  of 16 shards by a hash of the row key (``yyyymmddHH-07``), RowKey = ``{account
  id}|{subscription id}``. Tables keep entities sorted by key, so "everything that
  expires before T" is one range query, ``PartitionKey lt`` the hour after T's, that
  touches only the matching index entries, whatever the size of the table; the shards
  spread a run's writes (all one lifetime ahead) over 16 partitions. An entry carries a copy of its subscription (every field, and
  the record's ETag as ``Version``): the renewal reads the index alone, not one record
  per candidate, and a copy gone stale (a crash between two writes) is caught by the
  ETag-conditional write of the renewed record (``reread`` then drops the stale entry).
  ``save`` first turns the entry in the expiry's bucket into one without a copy, then
  writes the record, then the entry's copy, then deletes the old bucket's entry: a crash
  in between leaves an entry that sends its reader to the record, never a subscription
  the renewal cannot find. The renewal run saves with ``defer_index`` and writes the
  entries of many renewals at once (``reindex``: one entity-group transaction per bucket
  and 100 entries, new entries first). Entries without a copy, and every entry when the
  reader asks for a ``recheck``, are checked against their records: a missing copy is
  written, an entry left behind deleted, a missing one written.
- ``checkpoints``: PartitionKey = checkpoint name, RowKey = "checkpoint": where a paced
  sweep over all accounts resumes, leased under its ETag.
- ``authflows``: PartitionKey = state, RowKey = "flow"; taken by an ETag-conditional
  claim, so exactly one caller wins a state, then deleted.

Writes that can race use ETags: a stale write raises ``ConcurrencyError``, never
overwrites silently. The SDK is imported lazily: the webhook's cold path never loads it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from shared.adapters.storage_http import storage_service_client
from shared.adapters.table_batch import MAX_OPERATIONS, move_index_entries
from shared.config import ACCOUNTS_TABLE, AUTHFLOWS_TABLE, CHECKPOINTS_TABLE, SUBSCRIPTIONS_TABLE
from shared.errors import ConcurrencyError, InvalidInputError, PersistenceError
from shared.models import (
    Account,
    AccountStatus,
    ClientKind,
    PendingAuthFlow,
    Subscription,
    SubscriptionStatus,
    SweepCheckpoint,
)

if TYPE_CHECKING:
    from azure.data.tables import TableClient, TableServiceClient

EXPIRY_INDEX_TABLE = "subscriptionexpiry"
_ACCOUNT_ROW = "account"
_FLOW_ROW = "flow"
_CHECKPOINT_ROW = "checkpoint"
_FORBIDDEN_KEY_CHARS = set("/\\#?") | {chr(c) for c in range(0x20)} | {chr(0x7F)}
_MIN_TIME = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)
_T = TypeVar("_T")


def _check_key(value: str, what: str) -> str:
    # Table keys may not hold / \ # ? or control characters (Table service data model).
    if not value or len(value) > 512 or any(ch in _FORBIDDEN_KEY_CHARS for ch in value):
        raise InvalidInputError(f"{what} is not a valid identifier")
    return value


def _utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def service_client(connection: str) -> TableServiceClient:
    """A TableServiceClient for a connection string, or ``identity:<account>`` in Azure."""
    from azure.data.tables import TableServiceClient

    return storage_service_client(TableServiceClient, connection, "table")  # type: ignore[no-any-return]


class _Tables:
    """Table clients shared by the stores of one connection, created on first use."""

    _registry: dict[str, _Tables] = {}
    _registry_lock = threading.Lock()

    def __init__(self, connection: str) -> None:
        self._service = service_client(connection)
        self._clients: dict[str, TableClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_connection(cls, connection: str) -> _Tables:
        with cls._registry_lock:
            if connection not in cls._registry:
                cls._registry[connection] = cls(connection)
            return cls._registry[connection]

    def table(self, name: str) -> TableClient:
        client = self._clients.get(name)
        if client is not None:
            return client
        with self._lock:
            if name not in self._clients:
                from azure.core.exceptions import AzureError

                try:
                    self._service.create_table_if_not_exists(name)
                except AzureError as exc:
                    raise PersistenceError(f"table {name} is not reachable: {type(exc).__name__}") from exc
                self._clients[name] = self._service.get_table_client(name)
            return self._clients[name]

    def check(self) -> None:
        next(iter(self._service.list_tables(results_per_page=1).by_page()), None)


def _write(client: TableClient, entity: dict[str, Any], etag: str | None) -> str:
    """Create (no etag) or replace-if-unchanged (etag); returns the new ETag."""
    from azure.core import MatchConditions
    from azure.core.exceptions import (
        AzureError,
        ResourceExistsError,
        ResourceModifiedError,
        ResourceNotFoundError,
    )
    from azure.data.tables import UpdateMode

    try:
        if etag is None:
            meta = client.create_entity(entity)
        else:
            meta = client.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
    except ResourceExistsError as exc:
        raise ConcurrencyError(f"{client.table_name} entity already exists") from exc
    except (ResourceModifiedError, ResourceNotFoundError) as exc:
        raise ConcurrencyError(f"{client.table_name} entity changed since it was read") from exc
    except AzureError as exc:
        raise PersistenceError(f"write to table {client.table_name} failed: {type(exc).__name__}") from exc
    return str(meta["etag"])


def _read(client: TableClient, partition: str, row: str) -> Any | None:
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    try:
        return client.get_entity(partition, row)
    except ResourceNotFoundError:
        return None
    except AzureError as exc:
        raise PersistenceError(f"read from table {client.table_name} failed: {type(exc).__name__}") from exc


def _delete(client: TableClient, partition: str, row: str) -> None:
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    try:
        client.delete_entity(partition, row)
    except ResourceNotFoundError:
        pass
    except AzureError as exc:
        raise PersistenceError(f"delete from table {client.table_name} failed: {type(exc).__name__}") from exc


def _encode_token(token: Any) -> str | None:
    if not token:
        return None
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def _decode_token(token: str | None) -> Any:
    if not token:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        raise InvalidInputError("continuation token is not valid") from None


# --- accounts ---------------------------------------------------------------------------


def _account_entity(a: Account) -> dict[str, Any]:
    return {
        "PartitionKey": _check_key(a.account_id, "account id"),
        "RowKey": _ACCOUNT_ROW,
        "TenantId": a.tenant_id,
        "UserId": a.user_id,
        "UserPrincipalName": a.user_principal_name,
        "DisplayName": a.display_name,
        "Status": a.status.value,
        "Scopes": " ".join(a.scopes),
        "ClientKind": a.client_kind.value,
        "DeltaLink": a.delta_link,
        "LastSyncAt": a.last_sync_at,
        "LastNotificationAt": a.last_notification_at,
        "LastError": a.last_error,
        "ConnectedAt": a.connected_at,
        "OwnerId": a.owner_id,
    }


def _account_from(e: Any) -> Account:
    return Account(
        account_id=e["PartitionKey"],
        tenant_id=e.get("TenantId", ""),
        user_id=e.get("UserId", ""),
        user_principal_name=e.get("UserPrincipalName", ""),
        display_name=e.get("DisplayName") or "",
        status=AccountStatus(e.get("Status", AccountStatus.ACTIVE.value)),
        scopes=tuple((e.get("Scopes") or "").split()),
        client_kind=ClientKind(e.get("ClientKind", ClientKind.CONFIDENTIAL.value)),
        delta_link=e.get("DeltaLink") or None,
        last_sync_at=_utc(e.get("LastSyncAt")),
        last_notification_at=_utc(e.get("LastNotificationAt")),
        last_error=e.get("LastError") or None,
        connected_at=_utc(e.get("ConnectedAt")),
        owner_id=e.get("OwnerId") or None,
        etag=e.metadata.get("etag") if hasattr(e, "metadata") else None,
    )


class TableAccountStore:
    def __init__(self, connection: str) -> None:
        self._tables = _Tables.for_connection(connection)

    @property
    def _client(self) -> TableClient:
        return self._tables.table(ACCOUNTS_TABLE)

    def get(self, account_id: str) -> Account | None:
        entity = _read(self._client, _check_key(account_id, "account id"), _ACCOUNT_ROW)
        return None if entity is None else _account_from(entity)

    def save(self, account: Account) -> Account:
        account.etag = _write(self._client, _account_entity(account), account.etag)
        return account

    def page(self, *, size: int = 100, continuation: str | None = None) -> tuple[list[Account], str | None]:
        pager = self._client.query_entities(
            "RowKey eq @row", parameters={"row": _ACCOUNT_ROW}, results_per_page=max(1, min(size, 1000))
        ).by_page(continuation_token=_decode_token(continuation))
        try:
            accounts = [_account_from(e) for e in next(pager, [])]
        except Exception as exc:  # noqa: BLE001 - the SDK raises several error types here
            raise PersistenceError(f"listing accounts failed: {type(exc).__name__}") from exc
        return accounts, _encode_token(pager.continuation_token)  # type: ignore[attr-defined]

    def check(self) -> None:
        self._tables.check()


# --- subscriptions ----------------------------------------------------------------------


# The index's partitions: the expiry's UTC hour, split by a hash of the row key. Every
# renewal of a run lands in the hour one lifetime ahead: unsplit, that one partition would
# take all of the run's writes (a hot partition; the emulator even finds an entity by
# scanning its partition). Hour first, so that a range of hours is a range of keys.
INDEX_SHARDS = 16


def _hour(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y%m%d%H")


def index_partition(s: Subscription, when: dt.datetime) -> str:
    """The expiry index partition of subscription ``s`` were it to expire ``when``."""
    return f"{_hour(when)}-{zlib.crc32(_index_row(s).encode()) % INDEX_SHARDS:02d}"


def _entry_moves(s: Subscription) -> bool:
    """Whether the record's expiry left the hour of the index entry it has."""
    return s.indexed_expires_at is None or _hour(s.indexed_expires_at) != _hour(s.expires_at)


def _index_row(s: Subscription) -> str:
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


def _subscription_fields(s: Subscription) -> dict[str, Any]:
    return {
        "Resource": s.resource,
        "ChangeType": s.change_type,
        "ExpiresAt": s.expires_at,
        "Status": s.status.value,
        "LastRenewedAt": s.last_renewed_at,
        "LastReauthorizedAt": s.last_reauthorized_at,
    }


def _subscription_with(account_id: str, subscription_id: str, e: Any, etag: str | None) -> Subscription:
    expires_at = _utc(e.get("ExpiresAt")) or _MIN_TIME
    return Subscription(
        subscription_id=subscription_id,
        account_id=account_id,
        resource=e.get("Resource", ""),
        change_type=e.get("ChangeType", ""),
        expires_at=expires_at,
        status=SubscriptionStatus(e.get("Status", SubscriptionStatus.ACTIVE.value)),
        last_renewed_at=_utc(e.get("LastRenewedAt")),
        last_reauthorized_at=_utc(e.get("LastReauthorizedAt")),
        etag=etag,
        indexed_expires_at=expires_at,
    )


def _subscription_from(e: Any) -> Subscription:
    return _subscription_with(e["PartitionKey"], e["RowKey"], e, e.metadata.get("etag"))


# An index entry with a copy holds every field of its record and the record's ETag, under
# this name; one without holds ``ExpiresAt`` alone, and whoever reads it reads the record.
_COPY_VERSION = "Version"


def _entry_fields(s: Subscription, *, with_copy: bool) -> dict[str, Any]:
    if not with_copy or s.etag is None:
        return {"ExpiresAt": s.expires_at}
    return {**_subscription_fields(s), _COPY_VERSION: s.etag}


def _copy_in(entry: Any) -> Subscription | None:
    """The subscription as the entry's copy has it (its ETag that of the record copied)."""
    version = entry.get(_COPY_VERSION)
    if not version:
        return None
    account_id, _, subscription_id = str(entry["RowKey"]).rpartition("|")
    return _subscription_with(account_id, subscription_id, entry, str(version))


class TableSubscriptionStore:
    def __init__(self, connection: str, *, read_parallelism: int = 16) -> None:
        self._tables = _Tables.for_connection(connection)
        self._read_parallelism = read_parallelism

    @property
    def _client(self) -> TableClient:
        return self._tables.table(SUBSCRIPTIONS_TABLE)

    @property
    def _index(self) -> TableClient:
        return self._tables.table(EXPIRY_INDEX_TABLE)

    def get(self, account_id: str, subscription_id: str) -> Subscription | None:
        entity = _read(
            self._client, _check_key(account_id, "account id"), _check_key(subscription_id, "subscription id")
        )
        return None if entity is None else _subscription_from(entity)

    def save(self, subscription: Subscription, *, defer_index: bool = False) -> Subscription:
        s = subscription
        key = {
            "PartitionKey": _check_key(s.account_id, "account id"),
            "RowKey": _check_key(s.subscription_id, "subscription id"),
        }
        row = _index_row(s)
        bucket = index_partition(s, s.expires_at)
        old_bucket = None if s.indexed_expires_at is None else index_partition(s, s.indexed_expires_at)
        if not defer_index:
            # The entry in the expiry's bucket, without a copy, before the record changes: a
            # crash between the writes leaves an entry that sends its reader to the record,
            # never a copy that contradicts it, nor a record the renewal cannot find.
            self._put_entry(bucket, row, s, with_copy=False)
        s.etag = _write(self._client, {**key, **_subscription_fields(s)}, s.etag)
        if defer_index:
            return s  # indexed_expires_at still names the old entry, for reindex
        s.indexed_expires_at = s.expires_at
        try:
            self._put_entry(bucket, row, s, with_copy=True)
            if old_bucket is not None and old_bucket != bucket:
                _delete(self._index, old_bucket, row)
        except PersistenceError:
            pass  # the record is stored; a copy-less or stale entry is repaired when read
        return s

    def reindex(self, subscriptions: Sequence[Subscription]) -> None:
        latest = {_index_row(s): s for s in subscriptions}  # a transaction refuses duplicates
        # New entries (with their copies) first, a transaction per bucket: an old entry is
        # deleted only once the new one exists, so that a subscription never drops out of
        # the index.
        written: list[tuple[str, Subscription]] = []  # (old bucket, subscription)
        unwritten = 0
        for bucket, chunk in _chunks_by(latest.values(), lambda s: index_partition(s, s.expires_at)):
            try:
                move_index_entries(
                    self._index,
                    bucket,
                    upserts=[(_index_row(s), _entry_fields(s, with_copy=True)) for s in chunk],
                )
            except PersistenceError:
                unwritten += len(chunk)  # their old entries stay: read, they are repaired
                continue
            for s in chunk:
                if s.indexed_expires_at is not None and _entry_moves(s):
                    written.append((index_partition(s, s.indexed_expires_at), s))
                s.indexed_expires_at = s.expires_at
        for old_bucket, moved in _chunks_by(written, lambda move: move[0]):
            rows = [_index_row(s) for _, s in moved]
            try:
                move_index_entries(self._index, old_bucket, deletes=rows)
            except PersistenceError:
                # A changeset fails as a whole when one entry is gone already (a read
                # cleaned it): one by one then, where a missing entry is no error.
                for row in rows:
                    self._drop_entry(old_bucket, row)
        if unwritten:
            raise PersistenceError(f"{unwritten} expiry index entries not moved yet")

    def _put_entry(self, bucket: str, row: str, s: Subscription, *, with_copy: bool) -> None:
        from azure.core.exceptions import AzureError
        from azure.data.tables import UpdateMode

        entry = {"PartitionKey": bucket, "RowKey": row, **_entry_fields(s, with_copy=with_copy)}
        try:
            self._index.upsert_entity(entry, mode=UpdateMode.REPLACE)
        except AzureError as exc:
            raise PersistenceError(f"write to the expiry index failed: {type(exc).__name__}") from exc

    def _drop_entry(self, bucket: str, row: str) -> None:
        """Best effort: an entry that stays is dropped when read again."""
        try:
            _delete(self._index, bucket, row)
        except PersistenceError:
            pass

    def delete(self, account_id: str, subscription_id: str) -> None:
        partition = _check_key(account_id, "account id")
        row = _check_key(subscription_id, "subscription id")
        entity = _read(self._client, partition, row)
        if entity is None:
            return
        _delete(self._client, partition, row)
        # The record first: a crash in between leaves an entry whose reader finds no record.
        deleted = _subscription_from(entity)
        self._drop_entry(index_partition(deleted, deleted.expires_at), _index_row(deleted))

    def reread(self, offered: Subscription) -> Subscription | None:
        current = self.get(offered.account_id, offered.subscription_id)
        if offered.indexed_expires_at is None:
            return current
        stale = index_partition(offered, offered.indexed_expires_at)
        if current is None or index_partition(current, current.expires_at) != stale:
            self._drop_entry(stale, _index_row(offered))
        return current

    def for_account(self, account_id: str) -> list[Subscription]:
        entities = self._client.query_entities(
            "PartitionKey eq @pk", parameters={"pk": _check_key(account_id, "account id")}
        )
        return [_subscription_from(e) for e in entities]

    def expiring_before(self, when: dt.datetime, *, recheck: bool = False) -> Iterator[Subscription]:
        hits = self._index.query_entities(
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
                        yield from self._resolve(pool, to_read, when, repaired)
                        to_read = []
                elif copy.expires_at < when and _index_row(copy) not in repaired:
                    yield copy
            if to_read:
                yield from self._resolve(pool, to_read, when, repaired)

    def _resolve(
        self, pool: ThreadPoolExecutor, hits: list[Any], when: dt.datetime, repaired: set[str]
    ) -> Iterator[Subscription]:
        """Entries checked against their records (no copy, or a recheck): stale entries are
        repaired on the way, best effort (a failed repair is tried again on the next read)."""

        def current(hit: Any) -> tuple[Subscription | None, bool]:
            bucket, row = hit["PartitionKey"], hit["RowKey"]
            account_id, _, subscription_id = str(row).rpartition("|")
            sub = self.get(account_id, subscription_id)
            if sub is None:
                self._drop_entry(bucket, row)  # left behind by a deleted subscription
                return None, False
            actual = index_partition(sub, sub.expires_at)
            if actual < bucket:
                # An old entry whose delete failed: the right one exists, behind this one,
                # and offered the record there already.
                self._drop_entry(bucket, row)
                return None, False
            try:
                if actual == bucket:
                    if hit.get(_COPY_VERSION) != sub.etag:
                        self._put_entry(bucket, row, sub, with_copy=True)  # its copy brought up to date
                    return sub, False
                # A move that did not finish (a crash between a deferred save and its
                # reindex): the record's expiry lies ahead, its entry may be missing, so it
                # is written, and the record offered now.
                self._put_entry(actual, row, sub, with_copy=True)
            except PersistenceError:
                return sub, True  # the entry is repaired on the next read
            self._drop_entry(bucket, row)
            return sub, True

        for sub, was_repaired in pool.map(current, hits):
            if sub is None or sub.expires_at >= when:
                continue
            row = _index_row(sub)
            if row in repaired:
                continue  # offered when its stale entry was repaired
            if was_repaired:
                repaired.add(row)
            yield sub

    def check(self) -> None:
        self._tables.check()


# --- checkpoints ------------------------------------------------------------------------


class TableCheckpointStore:
    def __init__(self, connection: str) -> None:
        self._tables = _Tables.for_connection(connection)

    @property
    def _client(self) -> TableClient:
        return self._tables.table(CHECKPOINTS_TABLE)

    def get(self, name: str) -> SweepCheckpoint | None:
        entity = _read(self._client, _check_key(name, "checkpoint name"), _CHECKPOINT_ROW)
        if entity is None:
            return None
        return SweepCheckpoint(
            name=name,
            continuation=entity.get("Continuation") or None,
            leased_until=_utc(entity.get("LeasedUntil")),
            etag=entity.metadata.get("etag"),
        )

    def save(self, checkpoint: SweepCheckpoint) -> SweepCheckpoint:
        entity = {
            "PartitionKey": _check_key(checkpoint.name, "checkpoint name"),
            "RowKey": _CHECKPOINT_ROW,
            "Continuation": checkpoint.continuation,
            "LeasedUntil": checkpoint.leased_until,
        }
        checkpoint.etag = _write(self._client, entity, checkpoint.etag)
        return checkpoint


# --- pending OAuth flows ----------------------------------------------------------------


class TableAuthFlowStore:
    def __init__(self, connection: str) -> None:
        self._tables = _Tables.for_connection(connection)

    @property
    def _client(self) -> TableClient:
        return self._tables.table(AUTHFLOWS_TABLE)

    def put(self, flow: PendingAuthFlow) -> None:
        entity = {
            "PartitionKey": _check_key(flow.state, "state"),
            "RowKey": _FLOW_ROW,
            "Flow": json.dumps(flow.flow),
            "ExpiresAt": flow.expires_at,
            "ClientKind": flow.client_kind.value,
            "BrowserBinding": flow.browser_binding,
            "SessionId": flow.session_id,
        }
        _write(self._client, entity, None)

    def take(self, state: str) -> PendingAuthFlow | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            _check_key(state, "state")
        except InvalidInputError:
            return None
        entity = _read(self._client, state, _FLOW_ROW)
        if entity is None or entity.get("Taken"):
            return None
        try:
            # Claim it with an ETag-conditional write: of two callbacks racing with one
            # state, exactly one wins. (A conditional delete would not do: the SDK's
            # delete_entity reports success for an entity that is already gone.)
            self._client.update_entity(
                {"PartitionKey": state, "RowKey": _FLOW_ROW, "Taken": True},
                mode=UpdateMode.MERGE, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceNotFoundError, ResourceModifiedError):
            return None
        except AzureError as exc:
            raise PersistenceError(f"taking an auth flow failed: {type(exc).__name__}") from exc
        _delete(self._client, state, _FLOW_ROW)
        return PendingAuthFlow(
            state=state,
            flow=json.loads(entity["Flow"]),
            expires_at=_utc(entity.get("ExpiresAt")) or _MIN_TIME,
            client_kind=ClientKind(entity.get("ClientKind", ClientKind.CONFIDENTIAL.value)),
            browser_binding=entity.get("BrowserBinding") or "",
            session_id=entity.get("SessionId") or None,
        )
