"""The Graph client's transport: one retry policy, the mailbox's 4 slots, errors by status.

- 429 and 503 carry ``Retry-After`` (docs/graph-notes.md "Throttling"): wait that long, or back off
  exponentially when it is missing, a bounded number of times, then ``ThrottledError``
  so the caller (a queue message, the renewal run) retries later instead of blocking.
  Each thread counts the throttled answers it met (``throttle_count``).
- Outlook allows 4 concurrent requests per app per mailbox: a semaphore per account keeps
  this process under it; a ``$batch`` holds as many slots as it has requests (up to 4).
- OData errors become ``GraphError``; 401 ``GraphUnauthorizedError``; 404 ``NotFoundError``;
  a dead delta token (410 Gone, or ``syncStateNotFound`` / ``resyncRequired``)
  ``DeltaTokenExpiredError``.

The calls themselves are ``shared.adapters.graph.RequestsGraphApi``'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.request import getproxies_environment

import requests

from shared.errors import (
    DeltaTokenExpiredError,
    GraphError,
    GraphUnauthorizedError,
    NotFoundError,
    ThrottledError,
    UpstreamError,
)
from shared.ports import GraphAuth, JsonObject

log = logging.getLogger("shared.adapters.graph")


MAILBOX_CONCURRENCY = 4
# One call, its retries, timeouts and waits after 429 included, ends within this: below the
# sync lease's 60 s staleness less the 10 s between its proofs (shared/sync.py), so a round
# never loses its lease to a slow call. A wait that would pass it ends the call with
# ThrottledError instead, and the queue retries later.
MAX_CALL_SECONDS = 40.0
_DELTA_EXPIRED_CODES = {"syncStateNotFound", "resyncRequired", "SyncStateNotFound"}
THROTTLED_STATUSES = (429, 503)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    max_wait_seconds: float = 20.0
    base_backoff_seconds: float = 0.5

    def wait_for(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_wait_seconds)
        return min(self.base_backoff_seconds * (2**attempt) * (0.5 + random.random()), self.max_wait_seconds)


def _retry_after(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _raise_status(status: int, code: str, message: str, *, delta: bool = False) -> None:
    if status == 404:
        raise NotFoundError(f"Graph 404 {code}: {message}")
    if status == 401:
        raise GraphUnauthorizedError(code, message)
    if delta and (status == 410 or code in _DELTA_EXPIRED_CODES):
        raise DeltaTokenExpiredError(status, code, message)
    raise GraphError(status, code, message)


def _odata_error(response: requests.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error", {})
        return str(error.get("code", "unknown")), str(error.get("message", ""))[:300]
    except ValueError:
        return "unknown", response.reason or ""


class GraphClient:
    """Sends a request with the account's token, by the rules above; the base of the client."""

    def __init__(
        self,
        endpoint: str,
        *,
        session: requests.Session | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._session = session or self._new_session()
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._sleep = sleep
        self._mailbox_slots: dict[str, threading.BoundedSemaphore] = {}
        self._wide_locks: dict[str, threading.Lock] = {}
        self._slots_lock = threading.Lock()
        self._monotonic = monotonic
        self._throttles = threading.local()

    def throttle_count(self) -> int:
        """429/503 answers this thread has met (retried here or not): callers that count
        throttling (the renewal run) read it before and after their work."""
        return int(getattr(self._throttles, "count", 0))

    @staticmethod
    def _new_session() -> requests.Session:
        session = requests.Session()
        if not getproxies_environment():
            # Nothing for requests to re-read from the environment on every call (about
            # 0.6 ms of CPU each): the CA bundle is taken once. With proxy variables it
            # keeps deciding per request.
            session.trust_env = False
            session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def _slot(self, account_id: str) -> threading.BoundedSemaphore:
        with self._slots_lock:
            slot = self._mailbox_slots.get(account_id)
            if slot is None:
                slot = self._mailbox_slots[account_id] = threading.BoundedSemaphore(MAILBOX_CONCURRENCY)
                self._wide_locks[account_id] = threading.Lock()
            return slot

    @contextlib.contextmanager
    def _slots(self, account_id: str, weight: int) -> Iterator[None]:
        """Hold ``weight`` of the mailbox's slots. Requests taking more than one (batches)
        queue behind one lock, so two of them never each hold a part and wait for the rest."""
        slot = self._slot(account_id)
        if weight <= 1:
            with slot:
                yield
            return
        with self._wide_locks[account_id]:
            taken = 0
            try:
                for _ in range(min(weight, MAILBOX_CONCURRENCY)):
                    slot.acquire()
                    taken += 1
                yield
            finally:
                for _ in range(taken):
                    slot.release()

    def _url(self, path_or_link: str) -> str:
        if path_or_link.startswith(("https://", "http://")):
            return path_or_link
        return f"{self._endpoint}{path_or_link}"

    def _call(
        self,
        auth: GraphAuth,
        method: str,
        path_or_link: str,
        *,
        json_body: JsonObject | None = None,
        headers: dict[str, str] | None = None,
        weight: int = 1,
        stream: bool = False,
    ) -> requests.Response:
        url = self._url(path_or_link)
        request_headers = {"Authorization": f"Bearer {auth.access_token}", **(headers or {})}
        ends_at = self._monotonic() + MAX_CALL_SECONDS
        for attempt in range(self._retry.max_attempts):
            timeout = min(self._timeout, max(ends_at - self._monotonic(), 0.1))
            try:
                with self._slots(auth.account_id, weight):
                    response = self._session.request(
                        method, url, json=json_body, headers=request_headers, timeout=timeout,
                        stream=stream,
                    )
            except requests.RequestException as exc:
                wait = self._retry.wait_for(attempt, None)
                if attempt + 1 >= self._retry.max_attempts or self._monotonic() + wait >= ends_at:
                    raise UpstreamError(f"Graph unreachable: {type(exc).__name__}") from exc
                self._sleep(wait)
                continue
            if response.status_code not in THROTTLED_STATUSES:
                return response
            self._throttles.count = self.throttle_count() + 1
            retry_after = _retry_after(response)
            wait = self._retry.wait_for(attempt, retry_after)
            if attempt + 1 >= self._retry.max_attempts or self._monotonic() + wait >= ends_at:
                raise ThrottledError(
                    f"Graph answered {response.status_code} {method} for account {auth.account_id}",
                    retry_after if retry_after is not None else wait,
                )
            log.info("graph: %s for account %s, retrying in %.1fs", response.status_code, auth.account_id, wait)
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _raise_for(response: requests.Response, *, delta: bool = False) -> None:
        if response.status_code < 400:
            return
        code, message = _odata_error(response)
        _raise_status(response.status_code, code, message, delta=delta)

    def _json(self, response: requests.Response) -> JsonObject:
        self._raise_for(response)
        try:
            body = response.json()
        except ValueError:
            raise GraphError(response.status_code, "invalidJson", "Graph answered with a body that is not JSON") from None
        if not isinstance(body, dict):
            raise GraphError(response.status_code, "invalidJson", "Graph answered with a JSON value that is not an object")
        return body
