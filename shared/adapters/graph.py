"""Microsoft Graph over ``requests``: the one Graph client and its one retry policy.

- 429 and 503 carry ``Retry-After`` (docs/graph-notes.md "Throttling"): wait that long, or back off
  exponentially when it is missing, a bounded number of times, then ``ThrottledError``
  so the caller (a queue message, the renewal run) retries later instead of blocking.
- Outlook allows 4 concurrent requests per app per mailbox: a semaphore per account keeps
  this process under it.
- OData errors become ``GraphError``; 404 becomes ``NotFoundError``; a dead delta token
  (410 Gone, or ``syncStateNotFound`` / ``resyncRequired``) ``DeltaTokenExpiredError``.
- Every call of the mail actions (the ``GraphMail`` port: reads, lists, moves, changes,
  deletes, ``$batch`` and each request in it) sends ``Prefer: IdType="ImmutableId"``, so a
  message keeps its id when it moves to another folder
  (learn.microsoft.com/graph/outlook-immutable-id). Graph accepts either id format in a
  request. The delta query sends ``IMMUTABLE_IDS`` once the sync adopts immutable ids.
- A ``$batch`` holds as many of the mailbox's 4 slots as it has requests (up to 4): Graph
  dispatches up to four requests of a batch to Outlook at once.
Nothing here logs a token or a request URL's query (deltaLinks carry state tokens).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from urllib.request import getproxies_environment

import requests

from shared.errors import (
    DeltaTokenExpiredError,
    GraphError,
    GraphUnauthorizedError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ThrottledError,
    UpstreamError,
)
from shared.ports import (
    MAX_BATCH_REQUESTS,
    AttachmentContent,
    BatchRequest,
    BatchResponse,
    DeltaPage,
    GraphAuth,
    JsonObject,
    MessagePage,
)

log = logging.getLogger(__name__)

MAILBOX_CONCURRENCY = 4
# One call, its retries, timeouts and waits after 429 included, ends within this: below the
# sync lease's 60 s staleness less the 10 s between its proofs (shared/sync.py), so a round
# never loses its lease to a slow call. A wait that would pass it ends the call with
# ThrottledError instead, and the queue retries later.
MAX_CALL_SECONDS = 40.0
DELTA_PAGE_SIZE = 50
# What an event needs of a message; everything else stays in the mailbox.
MESSAGE_FIELDS = (
    "id,subject,from,sender,toRecipients,receivedDateTime,sentDateTime,isRead,"
    "parentFolderId,conversationId,internetMessageId,hasAttachments,importance,"
    "categories,bodyPreview,changeKey,webLink"
)
# What the mail actions show of a message (the body is asked for separately, by type).
MESSAGE_VIEW_FIELDS = (
    "id,subject,from,toRecipients,ccRecipients,receivedDateTime,bodyPreview,body,hasAttachments,"
    "parentFolderId,isRead,importance,categories,flag,conversationId,internetMessageId,webLink,changeKey"
)
MESSAGE_LIST_FIELDS = MESSAGE_VIEW_FIELDS.replace(",body,", ",")
ATTACHMENT_FIELDS = "id,name,contentType,size"
FOLDER_PAGE_SIZE = 100
IMMUTABLE_IDS = 'IdType="ImmutableId"'
_DELTA_EXPIRED_CODES = {"syncStateNotFound", "resyncRequired", "SyncStateNotFound"}
_THROTTLED = (429, 503)
_DOWNLOAD_CHUNK = 64 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    max_wait_seconds: float = 20.0
    base_backoff_seconds: float = 0.5

    def wait_for(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_wait_seconds)
        return min(self.base_backoff_seconds * (2**attempt) * (0.5 + random.random()), self.max_wait_seconds)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _retry_after(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _with_immutable_ids(prefer: str | None) -> str:
    # Several preferences go in one Prefer header, separated by commas (RFC 7240 §2).
    return IMMUTABLE_IDS if not prefer else f"{prefer}, {IMMUTABLE_IDS}"


def _raise_status(status: int, code: str, message: str, *, delta: bool = False) -> None:
    if status == 404:
        raise NotFoundError(f"Graph 404 {code}: {message}")
    if status == 401:
        raise GraphUnauthorizedError(code, message)
    if delta and (status == 410 or code in _DELTA_EXPIRED_CODES):
        raise DeltaTokenExpiredError(status, code, message)
    raise GraphError(status, code, message)


def _segment(value: str) -> str:
    return quote(value, safe="")


def _odata_error(response: requests.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error", {})
        return str(error.get("code", "unknown")), str(error.get("message", ""))[:300]
    except ValueError:
        return "unknown", response.reason or ""


class RequestsGraphApi:
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
            if response.status_code not in _THROTTLED:
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

    # --- the GraphApi port --------------------------------------------------------------

    def get_me(self, auth: GraphAuth) -> JsonObject:
        return self._json(self._call(auth, "GET", "/me?$select=id,displayName,userPrincipalName,mail"))

    def create_subscription(
        self,
        auth: GraphAuth,
        *,
        resource: str,
        change_type: str,
        notification_url: str,
        lifecycle_notification_url: str,
        expires_at: dt.datetime,
        client_state: str,
    ) -> JsonObject:
        body = {
            "changeType": change_type,
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_notification_url,
            "resource": resource,
            "expirationDateTime": _iso(expires_at),
            "clientState": client_state,
            "latestSupportedTlsVersion": "v1_2",
        }
        return self._json(self._call(auth, "POST", "/subscriptions", json_body=body))

    def renew_subscription(self, auth: GraphAuth, subscription_id: str, expires_at: dt.datetime) -> JsonObject:
        path = f"/subscriptions/{quote(subscription_id, safe='')}"
        return self._json(self._call(auth, "PATCH", path, json_body={"expirationDateTime": _iso(expires_at)}))

    def reauthorize_subscription(self, auth: GraphAuth, subscription_id: str) -> None:
        path = f"/subscriptions/{quote(subscription_id, safe='')}/reauthorize"
        self._raise_for(self._call(auth, "POST", path))

    def delete_subscription(self, auth: GraphAuth, subscription_id: str) -> None:
        response = self._call(auth, "DELETE", f"/subscriptions/{quote(subscription_id, safe='')}")
        if response.status_code == 404:
            return  # already gone: normal (docs/graph-notes.md "Subscriptions")
        self._raise_for(response)

    def delta_page(self, auth: GraphAuth, link: str | None, *, folder: str = "inbox") -> DeltaPage:
        # Query options are encoded in next/delta links: give them on the first call only.
        target = link or f"/me/mailFolders('{quote(folder, safe='')}')/messages/delta?$select={MESSAGE_FIELDS}"
        response = self._call(
            auth, "GET", target, headers={"Prefer": f"odata.maxpagesize={DELTA_PAGE_SIZE}"}
        )
        self._raise_for(response, delta=True)
        body = self._json(response)
        items = body.get("value")
        if not isinstance(items, list):
            raise GraphError(response.status_code, "invalidDelta", "delta page has no value array")
        return DeltaPage(
            items=[item for item in items if isinstance(item, dict)],
            next_link=body.get("@odata.nextLink"),
            delta_link=body.get("@odata.deltaLink"),
        )

    # --- the GraphMail port -------------------------------------------------------------

    def _mail(
        self, auth: GraphAuth, method: str, path_or_link: str, *, prefer: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """A call of the mail actions: with immutable ids."""
        return self._call(auth, method, path_or_link, headers={"Prefer": _with_immutable_ids(prefer)}, **kwargs)

    def get_message(self, auth: GraphAuth, message_id: str, *, body_type: str = "html") -> JsonObject:
        # The body's format is a preference (learn.microsoft.com/graph/api/message-get).
        path = f"/me/messages/{_segment(message_id)}?$select={MESSAGE_VIEW_FIELDS}"
        prefer = f'outlook.body-content-type="{body_type}"'
        return self._json(self._mail(auth, "GET", path, prefer=prefer))

    def list_attachments(self, auth: GraphAuth, message_id: str) -> list[JsonObject]:
        path = f"/me/messages/{_segment(message_id)}/attachments?$select={ATTACHMENT_FIELDS}"
        return self._all_pages(auth, path)

    def get_attachment_content(
        self, auth: GraphAuth, message_id: str, attachment_id: str, *, max_bytes: int
    ) -> AttachmentContent:
        base = f"/me/messages/{_segment(message_id)}/attachments/{_segment(attachment_id)}"
        meta = self._json(self._mail(auth, "GET", f"{base}?$select={ATTACHMENT_FIELDS}"))
        size = meta.get("size")
        if isinstance(size, int) and size > max_bytes:
            raise PayloadTooLargeError(f"the attachment has {size} bytes, more than the {max_bytes} allowed")
        response = self._mail(auth, "GET", f"{base}/$value", stream=True)
        try:
            self._raise_for(response)
            content = bytearray()
            for chunk in response.iter_content(_DOWNLOAD_CHUNK):
                content += chunk
                if len(content) > max_bytes:
                    raise PayloadTooLargeError(f"the attachment has more than the {max_bytes} bytes allowed")
        except requests.RequestException as exc:
            raise UpstreamError(f"attachment download broke off: {type(exc).__name__}") from exc
        finally:
            response.close()
        return AttachmentContent(
            name=str(meta.get("name") or "attachment"),
            content_type=str(meta.get("contentType") or "application/octet-stream"),
            content=bytes(content),
        )

    def list_messages(
        self,
        auth: GraphAuth,
        *,
        folder: str = "inbox",
        since: dt.datetime | None = None,
        top: int = 50,
        link: str | None = None,
    ) -> MessagePage:
        if link is not None:
            # A continuation comes from outside: it must lead to this endpoint's mail only,
            # or the account's token would go wherever it points.
            if not link.startswith(f"{self._endpoint}/me/"):
                raise InvalidInputError("continuation token is not valid")
            target = link
        else:
            target = (
                f"/me/mailFolders/{_segment(folder)}/messages?$top={top}&$select={MESSAGE_LIST_FIELDS}"
                "&$orderby=receivedDateTime%20desc"
            )
            if since is not None:
                # $filter and $orderby on the same property, in the same order (message-list).
                target += "&$filter=" + quote(f"receivedDateTime ge {_iso_seconds(since)}", safe="")
        body = self._json(self._mail(auth, "GET", target))
        items = body.get("value")
        if not isinstance(items, list):
            raise GraphError(200, "invalidList", "message list has no value array")
        next_link = body.get("@odata.nextLink")
        return MessagePage(
            items=[item for item in items if isinstance(item, dict)],
            next_link=next_link if isinstance(next_link, str) else None,
        )

    def list_folders(self, auth: GraphAuth, parent_id: str | None = None) -> list[JsonObject]:
        if parent_id is None:
            path = f"/me/mailFolders?$top={FOLDER_PAGE_SIZE}"
        else:
            path = f"/me/mailFolders/{_segment(parent_id)}/childFolders?$top={FOLDER_PAGE_SIZE}"
        return self._all_pages(auth, path)

    def move_message(self, auth: GraphAuth, message_id: str, destination: str) -> JsonObject:
        path = f"/me/messages/{_segment(message_id)}/move"
        return self._json(self._mail(auth, "POST", path, json_body={"destinationId": destination}))

    def update_message(self, auth: GraphAuth, message_id: str, changes: JsonObject) -> JsonObject:
        return self._json(self._mail(auth, "PATCH", f"/me/messages/{_segment(message_id)}", json_body=changes))

    def delete_message(self, auth: GraphAuth, message_id: str, *, permanent: bool = False) -> None:
        if permanent:
            response = self._mail(auth, "POST", f"/me/messages/{_segment(message_id)}/permanentDelete")
        else:
            response = self._mail(auth, "DELETE", f"/me/messages/{_segment(message_id)}")
        self._raise_for(response)

    def batch(self, auth: GraphAuth, requests_: Sequence[BatchRequest]) -> list[BatchResponse]:
        if len(requests_) > MAX_BATCH_REQUESTS:
            raise ValueError(f"a batch takes at most {MAX_BATCH_REQUESTS} requests")
        answers: dict[str, BatchResponse] = {}
        pending = list(requests_)
        for attempt in range(self._retry.max_attempts):
            if not pending:
                break
            for answer in self._send_batch(auth, pending):
                answers[answer.id] = answer
            throttled = [r for r in pending if answers[r.id].status in _THROTTLED]
            if not throttled or attempt + 1 >= self._retry.max_attempts:
                break
            # Each request of a batch is throttled on its own, with its own Retry-After
            # (learn.microsoft.com/graph/json-batching): the longest one is waited out.
            waits = [answers[r.id].retry_after for r in throttled]
            known = [w for w in waits if w is not None]
            wait = self._retry.wait_for(attempt, max(known) if known else None)
            log.info("graph: %d of a batch throttled for account %s, again in %.1fs",
                     len(throttled), auth.account_id, wait)
            self._sleep(wait)
            pending = throttled
        return [answers[r.id] for r in requests_]

    def _send_batch(self, auth: GraphAuth, requests_: Sequence[BatchRequest]) -> list[BatchResponse]:
        wire: list[JsonObject] = []
        for request in requests_:
            headers = {"Prefer": IMMUTABLE_IDS}
            item: JsonObject = {"id": request.id, "method": request.method, "url": request.url, "headers": headers}
            if request.body is not None:
                headers["Content-Type"] = "application/json"
                item["body"] = request.body
            wire.append(item)
        body = self._json(
            self._mail(auth, "POST", "/$batch", json_body={"requests": wire}, weight=len(requests_))
        )
        answered: dict[str, BatchResponse] = {}
        responses = body.get("responses")
        for raw in responses if isinstance(responses, list) else []:
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                answered[raw["id"]] = _batch_response(raw)
        missing = BatchResponse("", 502, {"error": {"code": "missingResponse", "message": "no answer in the batch"}})
        return [answered.get(r.id) or BatchResponse(r.id, missing.status, missing.body) for r in requests_]

    def _all_pages(self, auth: GraphAuth, path: str) -> list[JsonObject]:
        items: list[JsonObject] = []
        link: str | None = path
        while link:
            body = self._json(self._mail(auth, "GET", link))
            value = body.get("value")
            if not isinstance(value, list):
                raise GraphError(200, "invalidList", "list has no value array")
            items.extend(item for item in value if isinstance(item, dict))
            following = body.get("@odata.nextLink")
            link = following if isinstance(following, str) and following.startswith(self._endpoint) else None
        return items


def _iso_seconds(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _batch_response(raw: dict[str, Any]) -> BatchResponse:
    status = raw.get("status")
    status = status if isinstance(status, int) else 502
    headers = raw.get("headers") if isinstance(raw.get("headers"), dict) else {}
    retry_after: float | None = None
    for name, value in (headers or {}).items():
        if str(name).lower() == "retry-after":
            try:
                retry_after = max(0.0, float(value))
            except (TypeError, ValueError):
                retry_after = None
    body = raw.get("body")
    return BatchResponse(str(raw["id"]), status, body if isinstance(body, dict) else None, retry_after)
