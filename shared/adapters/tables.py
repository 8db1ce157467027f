"""Azure Table Storage adapters: accounts, subscriptions (+ expiry index), pending OAuth flows.

Keys are chosen for the access paths of a large deployment (docs/design.md "Scale"):
- ``accounts``: PartitionKey = account id, RowKey = "account". Every hot-path access is a
  point read; only the paged operator listing walks the table.
- ``subscriptions``: PartitionKey = account id, RowKey = Graph subscription id. Processing
  and lifecycle handling read one entity by (account, subscription).
- ``subscriptionexpiry``: the expiry index (``shared.adapters.expiry_index``), composed by
  the subscription store. ``save`` first turns the entry in the expiry's bucket into one
  without a copy, then writes the record, then the entry's copy, then deletes the old
  bucket's entry: a crash in between leaves an entry that sends its reader to the record,
  never a subscription the renewal cannot find.
- ``checkpoints``: PartitionKey = checkpoint name, RowKey = "checkpoint": where a paced
  sweep over all accounts resumes, leased under its ETag.
- ``authflows``: PartitionKey = state, RowKey = "flow"; taken by an ETag-conditional
  claim, so exactly one caller wins a state, then deleted.

Writes that can race use ETags: a stale write raises ``ConcurrencyError``, never
overwrites silently. The SDK is imported lazily: the webhook's cold path never loads it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from shared.adapters.expiry_index import ExpiryIndex, index_partition, index_row
from shared.adapters.subscription_entity import subscription_fields, subscription_from
from shared.adapters.table_support import (
    MIN_TIME,
    Tables,
    check_key,
    decode_continuation,
    delete_entity,
    encode_continuation,
    read_entity,
    utc,
    write_entity,
)
from shared.config import ACCOUNTS_TABLE, AUTHFLOWS_TABLE, CHECKPOINTS_TABLE, SUBSCRIPTIONS_TABLE
from shared.errors import InvalidInputError, PersistenceError
from shared.models import (
    Account,
    AccountStatus,
    ClientKind,
    PendingAuthFlow,
    Subscription,
    SweepCheckpoint,
)

if TYPE_CHECKING:
    from azure.data.tables import TableClient

_ACCOUNT_ROW = "account"
_FLOW_ROW = "flow"
_CHECKPOINT_ROW = "checkpoint"


# --- accounts ---------------------------------------------------------------------------


def _account_entity(a: Account) -> dict[str, Any]:
    return {
        "PartitionKey": check_key(a.account_id, "account id"),
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
        last_sync_at=utc(e.get("LastSyncAt")),
        last_notification_at=utc(e.get("LastNotificationAt")),
        last_error=e.get("LastError") or None,
        connected_at=utc(e.get("ConnectedAt")),
        owner_id=e.get("OwnerId") or None,
        etag=e.metadata.get("etag") if hasattr(e, "metadata") else None,
    )


class TableAccountStore:
    def __init__(self, connection: str) -> None:
        self._tables = Tables.for_connection(connection)

    @property
    def _client(self) -> TableClient:
        return self._tables.table(ACCOUNTS_TABLE)

    def get(self, account_id: str) -> Account | None:
        entity = read_entity(self._client, check_key(account_id, "account id"), _ACCOUNT_ROW)
        return None if entity is None else _account_from(entity)

    def save(self, account: Account) -> Account:
        account.etag = write_entity(self._client, _account_entity(account), account.etag)
        return account

    def page(self, *, size: int = 100, continuation: str | None = None) -> tuple[list[Account], str | None]:
        pager = self._client.query_entities(
            "RowKey eq @row", parameters={"row": _ACCOUNT_ROW}, results_per_page=max(1, min(size, 1000))
        ).by_page(continuation_token=decode_continuation(continuation))
        try:
            accounts = [_account_from(e) for e in next(pager, [])]
        except Exception as exc:  # noqa: BLE001 - the SDK raises several error types here
            raise PersistenceError(f"listing accounts failed: {type(exc).__name__}") from exc
        return accounts, encode_continuation(pager.continuation_token)  # type: ignore[attr-defined]

    def check(self) -> None:
        self._tables.check()


# --- subscriptions ----------------------------------------------------------------------


class TableSubscriptionStore:
    def __init__(self, connection: str, *, read_parallelism: int = 16) -> None:
        self._tables = Tables.for_connection(connection)
        self._index = ExpiryIndex(self._tables, read_parallelism=read_parallelism)

    @property
    def _client(self) -> TableClient:
        return self._tables.table(SUBSCRIPTIONS_TABLE)

    def get(self, account_id: str, subscription_id: str) -> Subscription | None:
        entity = read_entity(
            self._client, check_key(account_id, "account id"), check_key(subscription_id, "subscription id")
        )
        return None if entity is None else subscription_from(entity)

    def save(self, subscription: Subscription, *, defer_index: bool = False) -> Subscription:
        s = subscription
        key = {
            "PartitionKey": check_key(s.account_id, "account id"),
            "RowKey": check_key(s.subscription_id, "subscription id"),
        }
        row = index_row(s)
        bucket = index_partition(s, s.expires_at)
        old_bucket = None if s.indexed_expires_at is None else index_partition(s, s.indexed_expires_at)
        if not defer_index:
            # The entry in the expiry's bucket, without a copy, before the record changes: a
            # crash between the writes leaves an entry that sends its reader to the record,
            # never a copy that contradicts it, nor a record the renewal cannot find.
            self._index.put_entry(bucket, row, s, with_copy=False)
        s.etag = write_entity(self._client, {**key, **subscription_fields(s)}, s.etag)
        if defer_index:
            return s  # indexed_expires_at still names the old entry, for reindex
        s.indexed_expires_at = s.expires_at
        try:
            self._index.put_entry(bucket, row, s, with_copy=True)
            if old_bucket is not None and old_bucket != bucket:
                self._index.drop_entry(old_bucket, row)
        except PersistenceError:
            pass  # the record is stored; a copy-less or stale entry is repaired when read
        return s

    def reindex(self, subscriptions: Sequence[Subscription]) -> None:
        self._index.reindex(subscriptions)

    def delete(self, account_id: str, subscription_id: str) -> None:
        partition = check_key(account_id, "account id")
        row = check_key(subscription_id, "subscription id")
        entity = read_entity(self._client, partition, row)
        if entity is None:
            return
        delete_entity(self._client, partition, row)
        # The record first: a crash in between leaves an entry whose reader finds no record.
        deleted = subscription_from(entity)
        self._index.drop_entry(index_partition(deleted, deleted.expires_at), index_row(deleted))

    def reread(self, offered: Subscription) -> Subscription | None:
        current = self.get(offered.account_id, offered.subscription_id)
        if offered.indexed_expires_at is None:
            return current
        stale = index_partition(offered, offered.indexed_expires_at)
        if current is None or index_partition(current, current.expires_at) != stale:
            self._index.drop_entry(stale, index_row(offered))
        return current

    def for_account(self, account_id: str) -> list[Subscription]:
        entities = self._client.query_entities(
            "PartitionKey eq @pk", parameters={"pk": check_key(account_id, "account id")}
        )
        return [subscription_from(e) for e in entities]

    def expiring_before(self, when: dt.datetime, *, recheck: bool = False) -> Iterator[Subscription]:
        return self._index.expiring_before(when, read=self.get, recheck=recheck)

    def check(self) -> None:
        self._tables.check()


# --- checkpoints ------------------------------------------------------------------------


class TableCheckpointStore:
    def __init__(self, connection: str) -> None:
        self._tables = Tables.for_connection(connection)

    @property
    def _client(self) -> TableClient:
        return self._tables.table(CHECKPOINTS_TABLE)

    def get(self, name: str) -> SweepCheckpoint | None:
        entity = read_entity(self._client, check_key(name, "checkpoint name"), _CHECKPOINT_ROW)
        if entity is None:
            return None
        return SweepCheckpoint(
            name=name,
            continuation=entity.get("Continuation") or None,
            leased_until=utc(entity.get("LeasedUntil")),
            etag=entity.metadata.get("etag"),
        )

    def save(self, checkpoint: SweepCheckpoint) -> SweepCheckpoint:
        entity = {
            "PartitionKey": check_key(checkpoint.name, "checkpoint name"),
            "RowKey": _CHECKPOINT_ROW,
            "Continuation": checkpoint.continuation,
            "LeasedUntil": checkpoint.leased_until,
        }
        checkpoint.etag = write_entity(self._client, entity, checkpoint.etag)
        return checkpoint


# --- pending OAuth flows ----------------------------------------------------------------


class TableAuthFlowStore:
    def __init__(self, connection: str) -> None:
        self._tables = Tables.for_connection(connection)

    @property
    def _client(self) -> TableClient:
        return self._tables.table(AUTHFLOWS_TABLE)

    def put(self, flow: PendingAuthFlow) -> None:
        entity = {
            "PartitionKey": check_key(flow.state, "state"),
            "RowKey": _FLOW_ROW,
            "Flow": json.dumps(flow.flow),
            "ExpiresAt": flow.expires_at,
            "ClientKind": flow.client_kind.value,
            "BrowserBinding": flow.browser_binding,
            "SessionId": flow.session_id,
        }
        write_entity(self._client, entity, None)

    def take(self, state: str) -> PendingAuthFlow | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            check_key(state, "state")
        except InvalidInputError:
            return None
        entity = read_entity(self._client, state, _FLOW_ROW)
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
        delete_entity(self._client, state, _FLOW_ROW)
        return PendingAuthFlow(
            state=state,
            flow=json.loads(entity["Flow"]),
            expires_at=utc(entity.get("ExpiresAt")) or MIN_TIME,
            client_kind=ClientKind(entity.get("ClientKind", ClientKind.CONFIDENTIAL.value)),
            browser_binding=entity.get("BrowserBinding") or "",
            session_id=entity.get("SessionId") or None,
        )
