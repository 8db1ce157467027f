"""The embedding's Table Storage adapters against a real Azurite: connect sessions, the
owner index, the purge of expired sign-ins and sessions (its clock given)."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.adapters.sessions import (
    SESSION_RETENTION,
    TableAccountOwnerIndex,
    TableConnectSessionStore,
    TableExpiredRowPurger,
)
from shared.adapters.tables import TableAuthFlowStore
from shared.errors import ConcurrencyError
from shared.models import ConnectSession, ConnectSessionStatus, PendingAuthFlow

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def session(**changes: object) -> ConnectSession:
    values: dict[str, object] = {
        "session_id": f"cs_{uuid.uuid4().hex}",
        "owner_id": "owner:1",
        "expires_at": NOW + dt.timedelta(minutes=30),
        "created_at": NOW,
        "return_url": "https://product.test/back?x=1",
        "login_hint": "a@contoso.test",
    }
    values.update(changes)
    return ConnectSession(**values)  # type: ignore[arg-type]


def test_a_session_round_trips_and_stale_writes_are_refused(azurite) -> None:  # type: ignore[no-untyped-def]
    store = TableConnectSessionStore(azurite.connection_string)
    created = store.save(session())
    read = store.get(created.session_id)
    assert read is not None and read == created
    read.opened_at = NOW
    store.save(read)
    stale = store.get(created.session_id)
    assert stale is not None
    stale.etag = created.etag
    with pytest.raises(ConcurrencyError):
        store.save(stale)  # the browser that opened it first won
    with pytest.raises(ConcurrencyError):
        store.save(session(session_id=created.session_id))  # no second session of that id
    final = store.get(created.session_id)
    assert final is not None and final.opened_at == NOW and final.status == ConnectSessionStatus.PENDING


def test_of_two_concurrent_opens_exactly_one_wins(azurite) -> None:  # type: ignore[no-untyped-def]
    store = TableConnectSessionStore(azurite.connection_string)
    created = store.save(session())

    # Read both before either writes: the same ETag, one write wins.
    first, second = store.get(created.session_id), store.get(created.session_id)
    assert first is not None and second is not None
    first.opened_at = second.opened_at = NOW
    store.save(first)
    with pytest.raises(ConcurrencyError):
        store.save(second)


def test_the_owner_index_pages_an_owners_accounts(azurite) -> None:  # type: ignore[no-untyped-def]
    index = TableAccountOwnerIndex(azurite.connection_string)
    owner = f"owner:{uuid.uuid4().hex[:8]}"
    accounts = sorted(f"{uuid.uuid4()}.{uuid.uuid4()}" for _ in range(5))
    for account_id in accounts:
        index.add(owner, account_id)
    index.add(owner, accounts[0])  # idempotent
    index.add("someone-else", accounts[1])
    first, continuation = index.page(owner, size=3)
    rest, end = index.page(owner, size=3, continuation=continuation)
    assert first + rest == accounts and end is None
    index.remove(owner, accounts[0])
    index.remove(owner, accounts[0])  # idempotent
    assert index.page(owner, size=10)[0] == accounts[1:]


def test_the_purge_deletes_what_expired_and_keeps_the_rest(azurite) -> None:  # type: ignore[no-untyped-def]
    connection = azurite.connection_string
    flows, sessions = TableAuthFlowStore(connection), TableConnectSessionStore(connection)
    purger = TableExpiredRowPurger(connection)
    purger.purge_expired(NOW + dt.timedelta(days=365))  # a clean slate in this shared Azurite
    tag = uuid.uuid4().hex[:8]
    def put(n: int) -> None:
        flows.put(PendingAuthFlow(state=f"s{tag}{n}", flow={"state": n}, expires_at=NOW + dt.timedelta(minutes=10)))

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, range(1050)))  # more than a page of the purge's query
    live = f"live{tag}"
    flows.put(PendingAuthFlow(state=live, flow={}, expires_at=NOW + dt.timedelta(hours=2)))
    old = sessions.save(session())
    young = sessions.save(session(expires_at=NOW + dt.timedelta(hours=1)))

    assert purger.purge_expired(NOW) == {"authflows": 0, "connectsessions": 0}
    an_hour_later = NOW + dt.timedelta(hours=1)
    assert purger.purge_expired(an_hour_later) == {"authflows": 1050, "connectsessions": 0}
    after_retention = NOW + dt.timedelta(minutes=30) + SESSION_RETENTION + dt.timedelta(seconds=1)
    assert purger.purge_expired(after_retention) == {"authflows": 0, "connectsessions": 1}

    assert flows.take(live) is not None
    assert sessions.get(old.session_id) is None
    assert sessions.get(young.session_id) is not None
