"""The two retries of the core (shared/retry.py): a write refused for a stale ETag, a
refused access token."""

from __future__ import annotations

import pytest

from shared.errors import ConcurrencyError, GraphError, GraphUnauthorizedError
from shared.ports import GraphAuth
from shared.retry import update_with_etag, with_fresh_token


class Record:
    def __init__(self, value: int, etag: int) -> None:
        self.value, self.etag = value, etag


class Store:
    """One record under an ETag; ``concurrent`` writes by somebody else land before ours."""

    def __init__(self, concurrent: int = 0) -> None:
        self.value, self.etag, self.concurrent, self.reads = 1, 1, concurrent, 0

    def read(self) -> Record:
        self.reads += 1
        return Record(self.value, self.etag)

    def write(self, record: Record) -> Record:
        if self.concurrent:
            self.concurrent -= 1
            self.value, self.etag = self.value + 100, self.etag + 1  # their change
        if record.etag != self.etag:
            raise ConcurrencyError("stale")
        self.value, self.etag = record.value, self.etag + 1
        return Record(self.value, self.etag)


def add_one(record: Record) -> bool:
    record.value += 1
    return True


def test_a_change_refused_for_a_stale_etag_is_made_again_on_the_record_as_it_is_now() -> None:
    store = Store(concurrent=2)
    saved = update_with_etag(store.read, add_one, store.write)
    assert saved is not None and saved.value == 1 + 200 + 1  # their two changes kept, ours once
    assert store.reads == 3


def test_a_change_that_keeps_being_refused_ends_in_concurrency_error() -> None:
    store = Store(concurrent=10)
    with pytest.raises(ConcurrencyError):
        update_with_etag(store.read, add_one, store.write, attempts=3)
    assert store.reads == 3


def test_nothing_is_written_when_the_change_says_so_or_the_record_is_gone() -> None:
    store = Store()
    unchanged = update_with_etag(store.read, lambda r: False, store.write)
    assert unchanged is not None and store.etag == 1
    assert update_with_etag(lambda: None, add_one, store.write) is None


def test_a_copy_at_hand_saves_the_first_read() -> None:
    store = Store()
    update_with_etag(store.read, add_one, store.write, first=Record(1, 1))
    assert store.reads == 0 and store.value == 2


class Tokens:
    def __init__(self) -> None:
        self.issued, self.forgotten = 0, []

    def token(self) -> GraphAuth:
        self.issued += 1
        return GraphAuth("a", f"token-{self.issued}")

    def forget(self, account_id: str) -> None:
        self.forgotten.append(account_id)


def test_a_refused_token_is_forgotten_and_the_call_made_once_more_with_a_new_one() -> None:
    tokens = Tokens()
    seen: list[str] = []

    def call(auth: GraphAuth) -> str:
        seen.append(auth.access_token)
        if len(seen) == 1:
            raise GraphUnauthorizedError("InvalidAuthenticationToken", "revoked")
        return "done"

    assert with_fresh_token(tokens, "a", call, tokens.token) == "done"  # type: ignore[arg-type]
    assert seen == ["token-1", "token-2"] and tokens.forgotten == ["a"]


def test_a_second_refusal_and_other_graph_errors_reach_the_caller() -> None:
    tokens = Tokens()

    def refused(auth: GraphAuth) -> str:
        raise GraphUnauthorizedError("InvalidAuthenticationToken", "revoked")

    with pytest.raises(GraphUnauthorizedError):
        with_fresh_token(tokens, "a", refused, tokens.token)  # type: ignore[arg-type]
    assert tokens.issued == 2

    def forbidden(auth: GraphAuth) -> str:
        raise GraphError(403, "ErrorAccessDenied", "no")

    with pytest.raises(GraphError):
        with_fresh_token(tokens, "a", forbidden, tokens.token)  # type: ignore[arg-type]
    assert tokens.forgotten == ["a"]  # a 403 is no token problem
