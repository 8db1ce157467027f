"""Table Storage adapters against a real Azurite: keys, ETags, the expiry index, auth flows."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.expiry_index import EXPIRY_INDEX_TABLE, index_partition
from shared.adapters.tables import (
    TableAccountStore,
    TableAuthFlowStore,
    TableCheckpointStore,
    TableSubscriptionStore,
)
from shared.errors import ConcurrencyError, InvalidInputError
from shared.models import (
    Account,
    AccountStatus,
    PendingAuthFlow,
    Subscription,
    SubscriptionStatus,
    SweepCheckpoint,
)

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def _account(**overrides: object) -> Account:
    oid, tid = str(uuid.uuid4()), str(uuid.uuid4())
    values: dict[str, object] = {
        "account_id": f"{oid}.{tid}", "tenant_id": tid, "user_id": oid,
        "user_principal_name": "adele@contoso.test", "scopes": ("User.Read", "Mail.Read"),
        "connected_at": NOW,
    }
    values.update(overrides)
    return Account(**values)  # type: ignore[arg-type]


def _subscription(account_id: str, expires_at: dt.datetime) -> Subscription:
    return Subscription(
        subscription_id=str(uuid.uuid4()), account_id=account_id,
        resource="/me/mailFolders('inbox')/messages", change_type="created,updated,deleted",
        expires_at=expires_at,
    )


@pytest.fixture()
def accounts(azurite) -> TableAccountStore:  # type: ignore[no-untyped-def]
    return TableAccountStore(azurite.connection_string)


@pytest.fixture()
def subscriptions(azurite) -> TableSubscriptionStore:  # type: ignore[no-untyped-def]
    return TableSubscriptionStore(azurite.connection_string)


def test_an_account_round_trips_with_every_field(accounts: TableAccountStore) -> None:
    account = _account(delta_link="https://graph/delta?$deltatoken=abc", last_error="boom")
    accounts.save(account)
    loaded = accounts.get(account.account_id)
    assert loaded == account
    assert loaded is not None and loaded.etag


def test_a_stale_etag_write_is_rejected_and_keeps_the_winner(accounts: TableAccountStore) -> None:
    account = accounts.save(_account())
    first, second = accounts.get(account.account_id), accounts.get(account.account_id)
    assert first is not None and second is not None
    first.status = AccountStatus.REAUTH_REQUIRED
    accounts.save(first)
    second.last_error = "written from a stale read"
    with pytest.raises(ConcurrencyError):
        accounts.save(second)
    stored = accounts.get(account.account_id)
    assert stored is not None
    assert stored.status is AccountStatus.REAUTH_REQUIRED and stored.last_error is None


def test_creating_an_account_twice_without_etag_is_a_conflict(accounts: TableAccountStore) -> None:
    account = _account()
    accounts.save(account)
    with pytest.raises(ConcurrencyError):
        accounts.save(_account(account_id=account.account_id))


def test_accounts_are_listed_page_by_page(accounts: TableAccountStore) -> None:
    for _ in range(5):
        accounts.save(_account())
    seen: list[str] = []
    continuation: str | None = None
    pages = 0
    while True:
        page, continuation = accounts.page(size=2, continuation=continuation)
        pages += 1
        assert len(page) <= 2
        seen.extend(a.account_id for a in page)
        if continuation is None:
            break
    assert len(seen) == len(set(seen)) >= 5 and pages >= 3


def test_a_forged_continuation_token_is_invalid_input(accounts: TableAccountStore) -> None:
    with pytest.raises(InvalidInputError):
        accounts.page(continuation="%%%not-base64%%%")


def test_an_unknown_or_malformed_account_id(accounts: TableAccountStore) -> None:
    assert accounts.get("no-such-account") is None
    with pytest.raises(InvalidInputError):
        accounts.get("bad/id#")


def test_expiring_subscriptions_are_found_through_the_index(subscriptions: TableSubscriptionStore) -> None:
    account_id = _account().account_id
    soon = subscriptions.save(_subscription(account_id, NOW + dt.timedelta(minutes=30)))
    later = subscriptions.save(_subscription(account_id, NOW + dt.timedelta(days=5)))
    expired = subscriptions.save(_subscription(account_id, NOW - dt.timedelta(days=2)))
    found = {s.subscription_id for s in subscriptions.expiring_before(NOW + dt.timedelta(hours=2))}
    assert {soon.subscription_id, expired.subscription_id} <= found
    assert later.subscription_id not in found


def test_a_renewed_subscription_leaves_the_old_expiry_bucket(
    subscriptions: TableSubscriptionStore, azurite  # type: ignore[no-untyped-def]
) -> None:
    sub = subscriptions.save(_subscription(_account().account_id, NOW + dt.timedelta(minutes=10)))
    sub.expires_at = NOW + dt.timedelta(days=6)
    subscriptions.save(sub)
    found = [s.subscription_id for s in subscriptions.expiring_before(NOW + dt.timedelta(hours=1))]
    assert sub.subscription_id not in found
    # The stale index entry was removed when it was read, so it costs nothing next time.
    index = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(EXPIRY_INDEX_TABLE)
    rows = [e["RowKey"] for e in index.query_entities("RowKey eq @r", parameters={"r": f"{sub.account_id}|{sub.subscription_id}"})]
    assert len(rows) == 1


def _index_buckets(azurite, sub: Subscription) -> list[str]:  # type: ignore[no-untyped-def]
    index = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(EXPIRY_INDEX_TABLE)
    found = index.query_entities("RowKey eq @r", parameters={"r": f"{sub.account_id}|{sub.subscription_id}"})
    return sorted(e["PartitionKey"] for e in found)


def test_a_renewed_subscriptions_old_index_entry_is_gone_right_after_save(
    subscriptions: TableSubscriptionStore, azurite  # type: ignore[no-untyped-def]
) -> None:
    sub = subscriptions.save(_subscription(_account().account_id, NOW + dt.timedelta(minutes=10)))
    read = subscriptions.get(sub.account_id, sub.subscription_id)
    assert read is not None
    read.last_reauthorized_at = NOW  # a change that keeps the bucket
    read = subscriptions.save(read)
    read.expires_at = NOW + dt.timedelta(days=6)
    subscriptions.save(read)
    assert _index_buckets(azurite, sub) == [index_partition(sub, NOW + dt.timedelta(days=6))]


def test_deferred_renewals_move_their_index_entries_in_batches(
    subscriptions: TableSubscriptionStore, azurite  # type: ignore[no-untyped-def]
) -> None:
    """250 renewals over two old buckets: saved with defer_index (the index untouched), then
    moved by one reindex: each ends with exactly one entry, in its new bucket."""
    account_id = _account().account_id
    subs = [
        subscriptions.save(_subscription(account_id, NOW + dt.timedelta(minutes=10 + 60 * (n % 2))))
        for n in range(250)
    ]
    renewed = []
    for sub in subs:
        sub.expires_at = NOW + dt.timedelta(days=6, minutes=subs.index(sub) % 90)
        renewed.append(subscriptions.save(sub, defer_index=True))
    assert _index_buckets(azurite, subs[0]) == [index_partition(subs[0], NOW + dt.timedelta(minutes=10))]  # not moved yet

    subscriptions.reindex(renewed)

    for n, sub in enumerate(subs):
        assert _index_buckets(azurite, sub) == [index_partition(sub, NOW + dt.timedelta(days=6, minutes=n % 90))]
    ours = {s.subscription_id for s in subs}
    later = {s.subscription_id for s in subscriptions.expiring_before(NOW + dt.timedelta(days=7))}
    soon = {s.subscription_id for s in subscriptions.expiring_before(NOW + dt.timedelta(hours=3))}
    assert ours <= later and not ours & soon


def test_a_renewal_whose_index_move_never_happened_is_repaired_by_a_recheck(
    subscriptions: TableSubscriptionStore, azurite  # type: ignore[no-untyped-def]
) -> None:
    """A crash between the deferred save and its reindex; the next run rechecks: the old
    entry finds the record, the read writes the right entry and drops the stale one, and
    offers the record once."""
    sub = subscriptions.save(_subscription(_account().account_id, NOW + dt.timedelta(minutes=10)))
    sub.expires_at = NOW + dt.timedelta(days=6)
    subscriptions.save(sub, defer_index=True)

    first = [s.subscription_id for s in subscriptions.expiring_before(NOW + dt.timedelta(days=8), recheck=True)]

    assert first.count(sub.subscription_id) == 1
    assert _index_buckets(azurite, sub) == [index_partition(sub, NOW + dt.timedelta(days=6))]
    assert sub.subscription_id not in {s.subscription_id for s in subscriptions.expiring_before(NOW + dt.timedelta(days=1))}


def _index_client(azurite):  # type: ignore[no-untyped-def]
    return TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(EXPIRY_INDEX_TABLE)


def _offered(subscriptions: TableSubscriptionStore, sub: Subscription, before: dt.datetime, **kw: bool) -> Subscription:
    found = [s for s in subscriptions.expiring_before(before, **kw) if s.subscription_id == sub.subscription_id]
    assert len(found) == 1
    return found[0]


def test_the_index_offers_a_full_copy_of_the_record_without_reading_it(
    subscriptions: TableSubscriptionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = _subscription(_account().account_id, NOW + dt.timedelta(minutes=40))
    sub.last_renewed_at, sub.last_reauthorized_at = NOW - dt.timedelta(days=6), NOW - dt.timedelta(hours=1)
    saved = subscriptions.save(sub)
    record = subscriptions.get(saved.account_id, saved.subscription_id)

    def no_reads(*args: object) -> None:
        raise AssertionError("a record was read")

    monkeypatch.setattr(subscriptions, "get", no_reads)
    offered = _offered(subscriptions, sub, NOW + dt.timedelta(hours=2))

    assert record is not None
    assert offered == record and offered.etag == record.etag
    assert offered.indexed_expires_at == record.expires_at


def test_a_stale_copy_is_refused_at_the_write_and_reread_gives_the_record(
    subscriptions: TableSubscriptionStore, azurite  # type: ignore[no-untyped-def]
) -> None:
    """A writer that crashed after writing the record but before its copy: the copy still
    offers the old state, the ETag refuses a write based on it, ``reread`` tells the truth
    and a recheck brings the copy up to date."""
    from azure.data.tables import UpdateMode

    sub = subscriptions.save(_subscription(_account().account_id, NOW + dt.timedelta(minutes=40)))
    records = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client("subscriptions")
    records.update_entity(
        {"PartitionKey": sub.account_id, "RowKey": sub.subscription_id, "LastReauthorizedAt": NOW},
        mode=UpdateMode.MERGE,
    )

    stale = _offered(subscriptions, sub, NOW + dt.timedelta(hours=2))
    assert stale.last_reauthorized_at is None
    stale.last_renewed_at = NOW
    with pytest.raises(ConcurrencyError):
        subscriptions.save(stale, defer_index=True)
    current = subscriptions.reread(stale)
    rechecked = _offered(subscriptions, sub, NOW + dt.timedelta(hours=2), recheck=True)
    trusted_again = _offered(subscriptions, sub, NOW + dt.timedelta(hours=2))

    assert current is not None and current.last_reauthorized_at == NOW
    assert _index_buckets(azurite, sub) == [index_partition(sub, NOW + dt.timedelta(minutes=40))]  # the right entry stays
    assert rechecked.last_reauthorized_at == NOW
    assert trusted_again.last_reauthorized_at == NOW and trusted_again.etag == current.etag


def test_reread_drops_the_entry_a_crashed_renewal_left_behind(
    subscriptions: TableSubscriptionStore, azurite  # type: ignore[no-untyped-def]
) -> None:
    """Renewed and saved with ``defer_index``, then a crash: the old entry's copy offers the
    old expiry. Its write is refused, ``reread`` drops that entry, and the renewal's own
    save and reindex leave one entry, in the new bucket."""
    sub = subscriptions.save(_subscription(_account().account_id, NOW + dt.timedelta(minutes=10)))
    renewed = subscriptions.get(sub.account_id, sub.subscription_id)
    assert renewed is not None
    renewed.expires_at = NOW + dt.timedelta(days=6)
    subscriptions.save(renewed, defer_index=True)

    stale = _offered(subscriptions, sub, NOW + dt.timedelta(hours=1))
    stale.expires_at = NOW + dt.timedelta(days=6, hours=1)
    with pytest.raises(ConcurrencyError):
        subscriptions.save(stale, defer_index=True)
    current = subscriptions.reread(stale)
    assert current is not None and current.expires_at == NOW + dt.timedelta(days=6)
    current.expires_at = NOW + dt.timedelta(days=6, hours=1)
    subscriptions.reindex([subscriptions.save(current, defer_index=True)])

    assert _index_buckets(azurite, sub) == [index_partition(sub, NOW + dt.timedelta(days=6, hours=1))]
    assert _offered(subscriptions, sub, NOW + dt.timedelta(days=8)).etag == current.etag


def test_an_entry_without_a_copy_is_read_through_its_record_and_then_gets_one(
    subscriptions: TableSubscriptionStore, azurite  # type: ignore[no-untyped-def]
) -> None:
    """Entries written before they carried copies (or by a save that crashed half-way)."""
    sub = subscriptions.save(_subscription(_account().account_id, NOW + dt.timedelta(minutes=50)))
    row = f"{sub.account_id}|{sub.subscription_id}"
    index = _index_client(azurite)
    index.upsert_entity({"PartitionKey": index_partition(sub, sub.expires_at), "RowKey": row, "ExpiresAt": sub.expires_at})

    offered = _offered(subscriptions, sub, NOW + dt.timedelta(hours=2))

    assert offered.etag == sub.etag
    assert index.get_entity(index_partition(sub, sub.expires_at), row)["Version"] == sub.etag


def test_an_unsharded_entry_of_an_earlier_version_is_found_and_moved_to_its_shard(
    subscriptions: TableSubscriptionStore, azurite  # type: ignore[no-untyped-def]
) -> None:
    sub = subscriptions.save(_subscription(_account().account_id, NOW + dt.timedelta(minutes=30)))
    index = _index_client(azurite)
    index.delete_entity(index_partition(sub, sub.expires_at), f"{sub.account_id}|{sub.subscription_id}")
    unsharded = sub.expires_at.strftime("%Y%m%d%H")
    index.create_entity({"PartitionKey": unsharded, "RowKey": f"{sub.account_id}|{sub.subscription_id}"})

    assert _offered(subscriptions, sub, NOW + dt.timedelta(minutes=45)).etag == sub.etag
    assert _index_buckets(azurite, sub) == [index_partition(sub, sub.expires_at)]


def test_a_deleted_subscription_takes_its_index_entry_with_it(
    subscriptions: TableSubscriptionStore, azurite  # type: ignore[no-untyped-def]
) -> None:
    sub = subscriptions.save(_subscription(_account().account_id, NOW + dt.timedelta(minutes=10)))
    subscriptions.delete(sub.account_id, sub.subscription_id)
    assert _index_buckets(azurite, sub) == []


def test_an_old_entry_whose_delete_failed_is_dropped_and_its_record_offered_once(
    subscriptions: TableSubscriptionStore, azurite  # type: ignore[no-untyped-def]
) -> None:
    sub = subscriptions.save(_subscription(_account().account_id, NOW + dt.timedelta(minutes=20)))
    index = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(EXPIRY_INDEX_TABLE)
    stale = index_partition(sub, NOW + dt.timedelta(hours=5))
    index.create_entity({"PartitionKey": stale, "RowKey": f"{sub.account_id}|{sub.subscription_id}"})

    found = [s.subscription_id for s in subscriptions.expiring_before(NOW + dt.timedelta(hours=6))]

    assert found.count(sub.subscription_id) == 1
    assert _index_buckets(azurite, sub) == [index_partition(sub, NOW + dt.timedelta(minutes=20))]


def test_a_subscription_recorded_again_after_its_deletion_is_found_as_expiring(
    subscriptions: TableSubscriptionStore,
) -> None:
    sub = subscriptions.save(_subscription(_account().account_id, NOW + dt.timedelta(minutes=10)))
    subscriptions.delete(sub.account_id, sub.subscription_id)
    assert sub.subscription_id not in {s.subscription_id for s in subscriptions.expiring_before(NOW + dt.timedelta(hours=1))}
    sub.etag = None  # recorded again, as the renewal puts back a removed one
    subscriptions.save(sub)
    assert sub.subscription_id in {s.subscription_id for s in subscriptions.expiring_before(NOW + dt.timedelta(hours=1))}


def test_a_deleted_subscription_is_not_reported_as_expiring(subscriptions: TableSubscriptionStore) -> None:
    sub = subscriptions.save(_subscription(_account().account_id, NOW + dt.timedelta(minutes=10)))
    subscriptions.delete(sub.account_id, sub.subscription_id)
    subscriptions.delete(sub.account_id, sub.subscription_id)  # idempotent
    assert sub.subscription_id not in {s.subscription_id for s in subscriptions.expiring_before(NOW + dt.timedelta(hours=1))}
    assert subscriptions.for_account(sub.account_id) == []


def test_a_stale_subscription_write_is_rejected(subscriptions: TableSubscriptionStore) -> None:
    sub = subscriptions.save(_subscription(_account().account_id, NOW))
    a = subscriptions.get(sub.account_id, sub.subscription_id)
    b = subscriptions.get(sub.account_id, sub.subscription_id)
    assert a is not None and b is not None
    a.last_reauthorized_at = NOW
    subscriptions.save(a)
    b.status = SubscriptionStatus.REMOVED
    with pytest.raises(ConcurrencyError):
        subscriptions.save(b)


def test_an_auth_flow_is_taken_once_even_by_racing_callbacks(azurite) -> None:  # type: ignore[no-untyped-def]
    flows = TableAuthFlowStore(azurite.connection_string)
    state = uuid.uuid4().hex
    flows.put(PendingAuthFlow(state=state, flow={"state": state, "code_verifier": "v"}, expires_at=NOW))
    results: list[PendingAuthFlow | None] = []
    threads = [threading.Thread(target=lambda: results.append(flows.take(state))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].flow["code_verifier"] == "v"
    assert flows.take(state) is None
    assert flows.take("not/a valid#state") is None


def test_a_checkpoint_is_saved_and_leased_under_its_etag(azurite) -> None:  # type: ignore[no-untyped-def]
    store = TableCheckpointStore(azurite.connection_string)
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    assert store.get(name) is None
    store.save(SweepCheckpoint(name, continuation="page-2", leased_until=NOW))
    with pytest.raises(ConcurrencyError):
        store.save(SweepCheckpoint(name))  # a second run cannot create it again
    mine, theirs = store.get(name), store.get(name)
    assert mine is not None and theirs is not None and mine.continuation == "page-2"
    mine.leased_until = NOW + dt.timedelta(minutes=5)
    store.save(mine)
    theirs.leased_until = NOW + dt.timedelta(minutes=5)
    with pytest.raises(ConcurrencyError):
        store.save(theirs)
