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
  request. The delta query and subscription creation send it too: the ids of the mail
  events, and of the notifications, are the same immutable ids.
- A ``$batch`` holds as many of the mailbox's 4 slots as it has requests (up to 4): Graph
  dispatches up to four requests of a batch to Outlook at once.
Nothing here logs a token or a request URL's query (deltaLinks carry state tokens).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import requests

from shared.adapters.graph_client import (
    MAILBOX_CONCURRENCY,
    MAX_CALL_SECONDS,
    THROTTLED_STATUSES,
    GraphClient,
    RetryPolicy,
)
from shared.errors import (
    GraphError,
    InvalidInputError,
    PayloadTooLargeError,
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

__all__ = ["MAILBOX_CONCURRENCY", "MAX_CALL_SECONDS", "RequestsGraphApi", "RetryPolicy"]

DELTA_PAGE_SIZE = 50
# What an event needs of a message (message delta takes $select: learn.microsoft.com/graph/api/message-delta);
# the body only with EVENT_BODY; everything else stays in the mailbox.
MESSAGE_FIELDS = (
    "id,subject,from,sender,toRecipients,ccRecipients,receivedDateTime,sentDateTime,isRead,"
    "parentFolderId,conversationId,internetMessageId,hasAttachments,importance,"
    "categories,flag,bodyPreview,changeKey,webLink"
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
_DOWNLOAD_CHUNK = 64 * 1024


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _with_immutable_ids(prefer: str | None) -> str:
    # Several preferences go in one Prefer header, separated by commas (RFC 7240 §2).
    return IMMUTABLE_IDS if not prefer else f"{prefer}, {IMMUTABLE_IDS}"


def _segment(value: str) -> str:
    return quote(value, safe="")


class RequestsGraphApi(GraphClient):
    """The ``GraphApi`` and ``GraphMail`` ports over Graph's REST API."""

    def __init__(self, endpoint: str, *, delta_body: str = "none", **client: Any) -> None:
        super().__init__(endpoint, **client)
        # EVENT_BODY: whether delta pages carry the body, and in which format.
        self._delta_body = delta_body

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
        # Notifications then name messages by immutable id (learn.microsoft.com/graph/outlook-immutable-id).
        headers = {"Prefer": IMMUTABLE_IDS}
        return self._json(self._call(auth, "POST", "/subscriptions", json_body=body, headers=headers))

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
        fields = MESSAGE_FIELDS + (",body" if self._delta_body != "none" else "")
        target = link or f"/me/mailFolders('{quote(folder, safe='')}')/messages/delta?$select={fields}"
        # Prefer headers are not carried in the links: sent on every page.
        prefer = f"odata.maxpagesize={DELTA_PAGE_SIZE}"
        if self._delta_body != "none":
            prefer += f', outlook.body-content-type="{self._delta_body}"'
        response = self._call(auth, "GET", target, headers={"Prefer": _with_immutable_ids(prefer)})
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
            throttled = [r for r in pending if answers[r.id].status in THROTTLED_STATUSES]
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
