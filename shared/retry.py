"""The two ways a call is tried again: a write refused for a stale ETag, a refused token.

- ``update_with_etag``: read, change, write under the ETag read; when somebody else wrote
  first (``ConcurrencyError``), read again and change that, so their changes are kept
  (optimistic concurrency: Azure Tables answers 412 to a write whose ``If-Match`` is stale).
- ``with_fresh_token``: Graph refused the access token (401: revoked, or expired early).
  Graph did not run the request, so it is sent once more with a fresh token, whose refresh
  tells a dead refresh token (``ReauthRequiredError``) from a passing problem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from shared.errors import ConcurrencyError, GraphUnauthorizedError
from shared.ports import GraphAuth, TokenProvider

T = TypeVar("T")
R = TypeVar("R")


def update_with_etag(
    read: Callable[[], T | None],
    change: Callable[[T], bool],
    write: Callable[[T], R],
    *,
    first: T | None = None,
    attempts: int = 5,
    what: str = "the record",
) -> R | T | None:
    """Read, ``change`` (False: nothing to write, the record read is the answer), ``write``;
    again from a fresh read after a ``ConcurrencyError``, ``attempts`` times at most (then
    the last ``ConcurrencyError`` is raised). ``first``: a copy at hand, used instead of the
    first read. None when the record does not exist (``read`` gave None)."""
    current = first if first is not None else read()
    for attempt in range(attempts):
        if attempt:
            current = read()
        if current is None:
            return None
        if not change(current):
            return current
        try:
            return write(current)
        except ConcurrencyError:
            continue
    raise ConcurrencyError(f"{what} kept changing; gave up after {attempts} attempts")


def with_fresh_token(
    tokens: TokenProvider,
    account_id: str,
    call: Callable[[GraphAuth], T],
    token: Callable[[], GraphAuth],
) -> T:
    """``call`` with ``token()``; after a 401, once more with a fresh token (the account's
    access token forgotten first, so ``token()`` acquires a new one)."""
    try:
        return call(token())
    except GraphUnauthorizedError:
        tokens.forget(account_id)
    return call(token())
