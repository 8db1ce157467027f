"""The ``SubscriptionStore`` port (shared/ports.py) as a contract: the same assertions run
against the fake of the unit tests (tests/fakes.py) and the Table Storage adapter on a real
Azurite, so that a unit test passing against the fake means the same against the adapter.

What is checked: the ETag rules (create only when absent, replace only under the current
ETag, a stale or vanished one refused with ``ConcurrencyError``), records handed out as
copies, ``expiring_before`` (strictly before, expired ones included, each with its record's
ETag, ``recheck``), ``defer_index`` + ``reindex``, ``reread`` after a stale offer,
``delete`` taking the subscription out of the index, ``for_account``, and ids that a table
key cannot hold.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest

from shared.adapters.tables import TableSubscriptionStore
from shared.errors import ConcurrencyError, InvalidInputError
from shared.models import Subscription, SubscriptionStatus
from shared.ports import SubscriptionStore
from tests.fakes import FakeSubscriptionStore

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
RESOURCE = "/me/mailFolders('inbox')/messages"


@pytest.fixture(params=["fake", "azurite"])
def store(request: pytest.FixtureRequest) -> Iterator[SubscriptionStore]:
    if request.param == "fake":
        yield FakeSubscriptionStore()
    else:
        yield TableSubscriptionStore(request.getfixturevalue("azurite").connection_string)


def _account_id() -> str:
    return f"{uuid.uuid4()}.{uuid.uuid4()}"


def _new(account_id: str, expires_in: dt.timedelta, **fields: object) -> Subscription:
    values: dict[str, object] = {
        "subscription_id": str(uuid.uuid4()),
        "account_id": account_id,
        "resource": RESOURCE,
        "change_type": "created,updated,deleted",
        "expires_at": NOW + expires_in,
    }
    values.update(fields)
    return Subscription(**values)  # type: ignore[arg-type]


def _offers(store: SubscriptionStore, sub: Subscription, before: dt.timedelta, *, recheck: bool = False) -> list[Subscription]:
    return [
        s for s in store.expiring_before(NOW + before, recheck=recheck) if s.subscription_id == sub.subscription_id
    ]


def _current(store: SubscriptionStore, sub: Subscription) -> Subscription:
    found = store.get(sub.account_id, sub.subscription_id)
    assert found is not None
    return found


# --- ETag rules -------------------------------------------------------------------------


def test_a_new_subscription_is_created_once_and_read_back_with_its_etag(store: SubscriptionStore) -> None:
    sub = _new(
        _account_id(), dt.timedelta(hours=3), last_renewed_at=NOW, last_reauthorized_at=NOW, caught_up_at=NOW
    )
    saved = store.save(sub)
    again = _new(sub.account_id, dt.timedelta(days=2), subscription_id=sub.subscription_id)

    with pytest.raises(ConcurrencyError):
        store.save(again)  # no ETag: only when nothing is stored yet

    stored = _current(store, sub)
    assert saved.etag and stored.etag == saved.etag
    assert stored == sub  # every field, and the first write kept


def test_a_write_under_the_current_etag_wins_and_one_under_a_stale_etag_is_refused(store: SubscriptionStore) -> None:
    sub = store.save(_new(_account_id(), dt.timedelta(hours=3)))
    first, second = _current(store, sub), _current(store, sub)
    first.last_reauthorized_at = NOW
    written = store.save(first)
    second.status = SubscriptionStatus.REMOVED

    with pytest.raises(ConcurrencyError):
        store.save(second)

    stored = _current(store, sub)
    assert written.etag and written.etag != sub.etag and stored.etag == written.etag
    assert stored.last_reauthorized_at == NOW and stored.status is SubscriptionStatus.ACTIVE


def test_a_write_under_the_etag_of_a_deleted_subscription_is_refused(store: SubscriptionStore) -> None:
    sub = store.save(_new(_account_id(), dt.timedelta(hours=3)))
    store.delete(sub.account_id, sub.subscription_id)
    sub.last_renewed_at = NOW

    with pytest.raises(ConcurrencyError):
        store.save(sub)

    assert store.get(sub.account_id, sub.subscription_id) is None


def test_a_subscription_read_is_a_copy_until_it_is_saved(store: SubscriptionStore) -> None:
    sub = store.save(_new(_account_id(), dt.timedelta(hours=3)))
    read = _current(store, sub)
    read.status = SubscriptionStatus.FAILED
    read.expires_at = NOW

    stored = _current(store, sub)
    assert stored.status is SubscriptionStatus.ACTIVE and stored.expires_at == NOW + dt.timedelta(hours=3)


# --- expiring_before ----------------------------------------------------------------------


def test_expiring_before_offers_what_expires_strictly_before_expired_ones_included(store: SubscriptionStore) -> None:
    account_id = _account_id()
    soon = store.save(_new(account_id, dt.timedelta(minutes=30)))
    expired = store.save(_new(account_id, dt.timedelta(days=-2)))
    at_the_limit = store.save(_new(account_id, dt.timedelta(hours=2)))
    later = store.save(_new(account_id, dt.timedelta(days=5)))

    offered = [s for s in store.expiring_before(NOW + dt.timedelta(hours=2)) if s.account_id == account_id]

    assert sorted(s.subscription_id for s in offered) == sorted([soon.subscription_id, expired.subscription_id])
    assert at_the_limit.subscription_id not in {s.subscription_id for s in offered}
    assert later.subscription_id not in {s.subscription_id for s in offered}


def test_an_offered_subscription_carries_its_records_etag_and_can_be_written_under_it(
    store: SubscriptionStore,
) -> None:
    sub = store.save(_new(_account_id(), dt.timedelta(minutes=40), last_renewed_at=NOW - dt.timedelta(days=6)))
    [offered] = _offers(store, sub, dt.timedelta(hours=1))
    assert offered == _current(store, sub) and offered.etag == _current(store, sub).etag

    offered.expires_at = NOW + dt.timedelta(days=6)
    offered.last_renewed_at = NOW
    store.save(offered)

    assert _offers(store, sub, dt.timedelta(hours=1)) == []
    assert [s.last_renewed_at for s in _offers(store, sub, dt.timedelta(days=7))] == [NOW]


def test_a_deferred_save_is_found_by_its_old_expiry_until_it_is_reindexed(store: SubscriptionStore) -> None:
    sub = store.save(_new(_account_id(), dt.timedelta(minutes=10)))
    renewed = _current(store, sub)
    renewed.expires_at = NOW + dt.timedelta(days=6)
    renewed = store.save(renewed, defer_index=True)

    before = _offers(store, sub, dt.timedelta(hours=1))
    store.reindex([renewed])

    assert len(before) == 1  # "until then its old entry still finds it"
    assert _offers(store, sub, dt.timedelta(hours=1)) == []
    [after] = _offers(store, sub, dt.timedelta(days=7))
    assert after.expires_at == NOW + dt.timedelta(days=6) and after.etag == _current(store, sub).etag


def test_a_stale_offer_is_refused_at_the_write_and_reread_gives_the_record_and_drops_the_offer(
    store: SubscriptionStore,
) -> None:
    """A renewal saved with ``defer_index`` whose reindex never came (a crash): what the old
    entry offers may be stale. Its ETag refuses a write; ``reread`` gives the record, and
    the entry that offered it offers it no more."""
    sub = store.save(_new(_account_id(), dt.timedelta(minutes=10)))
    renewed = _current(store, sub)
    renewed.expires_at = NOW + dt.timedelta(days=6)
    store.save(renewed, defer_index=True)
    [offered] = _offers(store, sub, dt.timedelta(hours=1))

    if offered.etag != _current(store, sub).etag:  # a stale copy: its write is refused
        offered.last_renewed_at = NOW
        with pytest.raises(ConcurrencyError):
            store.save(offered, defer_index=True)
    current = store.reread(offered)

    assert current is not None and current == _current(store, sub) and current.etag == _current(store, sub).etag
    assert current.expires_at == NOW + dt.timedelta(days=6)
    assert _offers(store, sub, dt.timedelta(hours=1)) == []


def test_an_entry_that_still_names_its_record_keeps_offering_it_after_a_reread(store: SubscriptionStore) -> None:
    """A deferred save that kept the expiry (its copy is stale, but in the right place)."""
    sub = store.save(_new(_account_id(), dt.timedelta(minutes=10)))
    changed = _current(store, sub)
    changed.last_reauthorized_at = NOW
    store.save(changed, defer_index=True)
    [offered] = _offers(store, sub, dt.timedelta(hours=1))

    current = store.reread(offered)

    assert current is not None and current.last_reauthorized_at == NOW
    assert len(_offers(store, sub, dt.timedelta(hours=1))) == 1
    assert _offers(store, sub, dt.timedelta(hours=1), recheck=True)[0].etag == _current(store, sub).etag


def test_reread_of_a_deleted_subscription_is_none(store: SubscriptionStore) -> None:
    sub = store.save(_new(_account_id(), dt.timedelta(minutes=10)))
    [offered] = _offers(store, sub, dt.timedelta(hours=1))
    store.delete(sub.account_id, sub.subscription_id)

    assert store.reread(offered) is None
    assert _offers(store, sub, dt.timedelta(hours=1)) == []


def test_a_recheck_offers_the_records_themselves_and_once(store: SubscriptionStore) -> None:
    sub = store.save(_new(_account_id(), dt.timedelta(minutes=10)))
    renewed = _current(store, sub)
    renewed.expires_at = NOW + dt.timedelta(days=6)
    store.save(renewed, defer_index=True)  # and no reindex: a run that did not finish

    rechecked = _offers(store, sub, dt.timedelta(days=8), recheck=True)

    assert len(rechecked) == 1
    assert rechecked[0].expires_at == NOW + dt.timedelta(days=6)
    assert rechecked[0].etag == _current(store, sub).etag
    assert _offers(store, sub, dt.timedelta(hours=1)) == []  # the recheck moved what it found
    assert len(_offers(store, sub, dt.timedelta(days=8))) == 1


def test_a_recheck_leaves_out_what_expires_later(store: SubscriptionStore) -> None:
    sub = store.save(_new(_account_id(), dt.timedelta(days=3)))
    assert _offers(store, sub, dt.timedelta(days=1), recheck=True) == []
    assert len(_offers(store, sub, dt.timedelta(days=4), recheck=True)) == 1


# --- delete and for_account --------------------------------------------------------------


def test_a_deleted_subscription_leaves_the_index_and_the_account_and_delete_is_idempotent(
    store: SubscriptionStore,
) -> None:
    sub = store.save(_new(_account_id(), dt.timedelta(minutes=10)))
    store.delete(sub.account_id, sub.subscription_id)
    store.delete(sub.account_id, sub.subscription_id)
    store.delete(sub.account_id, str(uuid.uuid4()))

    assert store.get(sub.account_id, sub.subscription_id) is None
    assert _offers(store, sub, dt.timedelta(hours=1)) == []
    assert _offers(store, sub, dt.timedelta(hours=1), recheck=True) == []
    assert store.for_account(sub.account_id) == []


def test_a_subscription_recorded_again_after_its_deletion_is_found_again(store: SubscriptionStore) -> None:
    sub = store.save(_new(_account_id(), dt.timedelta(minutes=10)))
    store.delete(sub.account_id, sub.subscription_id)
    sub.etag = None
    store.save(sub)

    assert len(_offers(store, sub, dt.timedelta(hours=1))) == 1


def test_for_account_lists_that_accounts_subscriptions_with_their_etags(store: SubscriptionStore) -> None:
    mine, theirs = _account_id(), _account_id()
    saved = [store.save(_new(mine, dt.timedelta(hours=n + 1))) for n in range(3)]
    store.save(_new(theirs, dt.timedelta(hours=1)))

    listed = store.for_account(mine)

    assert sorted(s.subscription_id for s in listed) == sorted(s.subscription_id for s in saved)
    assert all(s == _current(store, s) and s.etag == _current(store, s).etag for s in listed)
    assert store.for_account(_account_id()) == []


@pytest.mark.parametrize("bad", ["a/b", "a\\b", "a#b", "a?b", "a\x01b", ""])
def test_an_id_a_table_key_cannot_hold_is_invalid_input(store: SubscriptionStore, bad: str) -> None:
    account_id = _account_id()
    with pytest.raises(InvalidInputError):
        store.get(account_id, bad)
    with pytest.raises(InvalidInputError):
        store.get(bad, "sub")
    with pytest.raises(InvalidInputError):
        store.save(_new(account_id, dt.timedelta(hours=1), subscription_id=bad))
    with pytest.raises(InvalidInputError):
        store.delete(account_id, bad)
    with pytest.raises(InvalidInputError):
        store.for_account(bad)
