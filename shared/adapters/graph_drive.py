"""OneDrive through Microsoft Graph: the ``DriveApi`` port on the connector's one Graph client.

``RequestsDriveApi`` is ``RequestsGraphApi`` (shared/adapters/graph.py) with the drive
calls added: the same ``requests`` session setup, the same ``RetryPolicy`` (429/503 waited
out after ``Retry-After``, a bounded number of times, then ``ThrottledError``), the same
error translation. What the drive needs beyond the mail calls:

- bodies of bytes (a simple upload) and answers read as a stream (a download);
- the pre-authenticated URLs Graph hands out (an upload session's ``uploadUrl``, a file's
  download URL), which take no ``Authorization`` header: "including it might result in a
  401" (https://learn.microsoft.com/graph/api/driveitem-createuploadsession);
- ``GET .../content`` answers 302 to the download URL; the redirect is followed here by
  hand, without the bearer token
  (https://learn.microsoft.com/graph/api/driveitem-get-content);
- an upload fragment is sent once: a failed one is resumed by the caller from the
  session's ``nextExpectedRanges``, not sent again blindly (a fragment Graph did store
  would then overlap, 416);
- the drive delta (``/me/drive/root/delta``: a 410 is ``DeltaTokenExpiredError``) and the
  reads of the items it named, 20 to a ``$batch`` (``get_items``, for what delta leaves
  out: docs/graph-notes.md "OneDrive").

Nothing here logs a URL: download and upload URLs are bearer credentials in themselves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import requests

from shared.adapters.graph import RequestsGraphApi
from shared.adapters.graph_client import THROTTLED_STATUSES, _odata_error, _raise_status, _retry_after
from shared.errors import ConflictError, GraphError, ThrottledError, UpstreamError
from shared.ports import (
    MAX_BATCH_REQUESTS,
    BatchRequest,
    DeltaPage,
    DriveChildrenPage,
    DriveContent,
    GraphAuth,
    JsonObject,
    UploadProgress,
    UploadSession,
)

DOWNLOAD_CHUNK_BYTES = 256 * 1024
# What the files API shows of an item; Graph's pre-authenticated downloadUrl is left out
# (whoever holds it can read the file for an hour).
ITEM_FIELDS = (
    "id,name,size,webUrl,eTag,cTag,file,folder,parentReference,createdDateTime,"
    "lastModifiedDateTime,createdBy,lastModifiedBy,root"
)
# What the drive's events need of a delta item (https://learn.microsoft.com/graph/api/driveitem-delta):
# ``deleted`` tells a deletion, ``root`` the root; cTag and parentReference.path may be
# left out by Graph all the same.
DELTA_FIELDS = (
    "id,name,eTag,cTag,size,webUrl,file,folder,parentReference,createdDateTime,"
    "lastModifiedDateTime,lastModifiedBy,deleted,root"
)
# Waited when a batch's inner 429 gave no Retry-After.
DEFAULT_RETRY_AFTER_SECONDS = 5.0


def item_path(path: str) -> str:
    """``/me/drive/root:/{path}:`` with each segment percent-encoded (a ``#`` or ``%`` in a
    name must reach Graph as data, not as URL syntax)."""
    return "/me/drive/root:/" + "/".join(quote(segment, safe="") for segment in path.split("/")) + ":"


def _item_url(item_id: str) -> str:
    return f"/me/drive/items/{quote(item_id, safe='')}"


class RequestsDriveApi(RequestsGraphApi):
    """The drive calls of the one Graph client."""

    def _send(
        self,
        method: str,
        url: str,
        *,
        auth: GraphAuth | None,
        data: bytes | None = None,
        json_body: JsonObject | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> requests.Response:
        """One request under the client's retry policy; without ``auth`` (a pre-authenticated
        URL) no bearer token goes out. ``retry`` False sends it once."""
        request_headers = dict(headers or {})
        if auth is not None:
            request_headers["Authorization"] = f"Bearer {auth.access_token}"
        attempts = self._retry.max_attempts if retry else 1
        for attempt in range(attempts):
            try:
                if auth is not None:
                    with self._slot(auth.account_id):
                        response = self._session.request(
                            method, self._url(url), data=data, json=json_body, headers=request_headers,
                            timeout=self._timeout, stream=stream, allow_redirects=False,
                        )
                else:
                    response = self._session.request(
                        method, url, data=data, json=json_body, headers=request_headers,
                        timeout=self._timeout, stream=stream, allow_redirects=False,
                    )
            except requests.RequestException as exc:
                if attempt + 1 >= attempts:
                    raise UpstreamError(f"Graph unreachable: {type(exc).__name__}") from exc
                self._sleep(self._retry.wait_for(attempt, None))
                continue
            if response.status_code not in (429, 503):
                return response
            retry_after = _retry_after(response)
            response.close()
            if attempt + 1 >= attempts:
                raise ThrottledError(
                    f"Graph answered {response.status_code} {method} on the drive",
                    retry_after if retry_after is not None else self._retry.wait_for(attempt, None),
                )
            self._sleep(self._retry.wait_for(attempt, retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _check(response: requests.Response) -> None:
        if response.status_code == 409:
            code, message = _odata_error(response)
            raise ConflictError(f"Graph 409 {code}: {message}")
        RequestsGraphApi._raise_for(response)

    def _item(self, response: requests.Response) -> JsonObject:
        self._check(response)
        return self._json(response)

    # --- the DriveApi port --------------------------------------------------------------

    def get_item(self, auth: GraphAuth, item_id: str) -> JsonObject:
        return self._item(self._send("GET", f"{_item_url(item_id)}?$select={ITEM_FIELDS}", auth=auth))

    def get_item_by_path(self, auth: GraphAuth, path: str) -> JsonObject:
        return self._item(self._send("GET", f"{item_path(path)}?$select={ITEM_FIELDS}", auth=auth))

    def list_children(
        self, auth: GraphAuth, item_id: str, *, page_size: int, next_link: str | None = None
    ) -> DriveChildrenPage:
        # Query options are in the nextLink already (as for delta links).
        target = next_link or f"{_item_url(item_id)}/children?$top={page_size}&$select={ITEM_FIELDS}"
        body = self._item(self._send("GET", target, auth=auth))
        items = body.get("value")
        if not isinstance(items, list):
            raise GraphError(200, "invalidChildren", "children page has no value array")
        link = body.get("@odata.nextLink")
        return DriveChildrenPage([i for i in items if isinstance(i, dict)], link if isinstance(link, str) else None)

    def upload_small(self, auth: GraphAuth, path: str, content: bytes, conflict: str) -> tuple[JsonObject, bool]:
        # https://learn.microsoft.com/graph/api/driveitem-put-content: 201 a new file, 200 replaced.
        url = f"{item_path(path)}/content?@microsoft.graph.conflictBehavior={conflict}"
        response = self._send(
            "PUT", url, auth=auth, data=content, headers={"Content-Type": "application/octet-stream"}
        )
        return self._item(response), response.status_code == 201

    def create_upload_session(self, auth: GraphAuth, path: str, conflict: str) -> UploadSession:
        body = {"item": {"@microsoft.graph.conflictBehavior": conflict}}
        session = self._item(self._send("POST", f"{item_path(path)}/createUploadSession", auth=auth, json_body=body))
        upload_url = session.get("uploadUrl")
        if not isinstance(upload_url, str) or not upload_url.startswith(("https://", "http://")):
            raise GraphError(200, "invalidUploadSession", "the upload session has no uploadUrl")
        expires_at = session.get("expirationDateTime")
        return UploadSession(upload_url, expires_at if isinstance(expires_at, str) else None)

    def upload_fragment(self, upload_url: str, fragment: bytes, start: int, total: int) -> UploadProgress:
        end = start + len(fragment) - 1
        headers = {"Content-Range": f"bytes {start}-{end}/{total}", "Content-Type": "application/octet-stream"}
        response = self._send("PUT", upload_url, auth=None, data=fragment, headers=headers, retry=False)
        if response.status_code == 202:
            return UploadProgress(next_expected_ranges=_ranges(self._json(response)))
        if response.status_code >= 500:
            code, _ = _odata_error(response)
            raise GraphError(response.status_code, code, "the upload fragment was not stored")
        item = self._item(response)
        return UploadProgress(item=item, created=response.status_code == 201)

    def upload_status(self, upload_url: str) -> tuple[str, ...]:
        return _ranges(self._item(self._send("GET", upload_url, auth=None)))

    def cancel_upload_session(self, upload_url: str) -> None:
        response = self._send("DELETE", upload_url, auth=None)
        if response.status_code != 404:
            self._check(response)

    def open_content(self, auth: GraphAuth, item_id: str, *, byte_range: str | None = None) -> DriveContent:
        redirect = self._send("GET", f"{_item_url(item_id)}/content", auth=auth)
        location = redirect.headers.get("Location")
        if redirect.status_code not in (301, 302, 303, 307, 308) or not location:
            self._check(redirect)
            raise GraphError(redirect.status_code, "noDownloadUrl", "Graph gave no download URL for the item")
        headers = {"Range": byte_range} if byte_range else {}
        response = self._send("GET", location, auth=None, headers=headers, stream=True)
        if response.status_code >= 400:
            try:
                if response.status_code == 416:
                    raise GraphError(416, "invalidRange", "the requested range is not within the file")
                self._check(response)
            finally:
                response.close()
        length = response.headers.get("Content-Length")
        return DriveContent(
            status=response.status_code,
            size=int(length) if length and length.isdigit() else None,
            content_type=response.headers.get("Content-Type") or "application/octet-stream",
            chunks=_chunks(response),
            close=response.close,
            content_range=response.headers.get("Content-Range"),
        )

    def create_link(self, auth: GraphAuth, item_id: str, *, link_type: str, scope: str) -> JsonObject:
        body = {"type": link_type, "scope": scope}
        return self._item(self._send("POST", f"{_item_url(item_id)}/createLink", auth=auth, json_body=body))

    def delete_item(self, auth: GraphAuth, item_id: str) -> None:
        self._check(self._send("DELETE", _item_url(item_id), auth=auth))

    def drive_delta_page(self, auth: GraphAuth, link: str | None) -> DeltaPage:
        # Query options are encoded in the next and delta links: given on the first call only.
        response = self._send("GET", link or f"/me/drive/root/delta?$select={DELTA_FIELDS}", auth=auth)
        self._raise_for(response, delta=True)
        body = self._json(response)
        items = body.get("value")
        if not isinstance(items, list):
            raise GraphError(response.status_code, "invalidDelta", "drive delta page has no value array")
        next_link, delta_link = body.get("@odata.nextLink"), body.get("@odata.deltaLink")
        return DeltaPage(
            items=[item for item in items if isinstance(item, dict)],
            next_link=next_link if isinstance(next_link, str) else None,
            delta_link=delta_link if isinstance(delta_link, str) else None,
        )

    def get_items(self, auth: GraphAuth, item_ids: Sequence[str]) -> dict[str, JsonObject | None]:
        found: dict[str, JsonObject | None] = {}
        ids = list(dict.fromkeys(item_ids))
        for start in range(0, len(ids), MAX_BATCH_REQUESTS):
            chunk = ids[start : start + MAX_BATCH_REQUESTS]
            wanted = [
                BatchRequest(id=str(n), method="GET", url=f"{_item_url(item_id)}?$select={ITEM_FIELDS}")
                for n, item_id in enumerate(chunk)
            ]
            for item_id, answer in zip(chunk, self.batch(auth, wanted), strict=True):
                body = answer.body if isinstance(answer.body, dict) else {}
                if answer.status == 404:
                    found[item_id] = None
                elif answer.status == 200 and isinstance(body.get("id"), str):
                    found[item_id] = body
                elif answer.status in THROTTLED_STATUSES:
                    wait = answer.retry_after if answer.retry_after is not None else DEFAULT_RETRY_AFTER_SECONDS
                    raise ThrottledError(f"Graph throttled reading drive items of account {auth.account_id}", wait)
                else:
                    error = body.get("error")
                    code = error.get("code", "unknown") if isinstance(error, dict) else "unknown"
                    _raise_status(answer.status, str(code), "reading a drive item failed")
        return found


def _ranges(body: dict[str, Any]) -> tuple[str, ...]:
    ranges = body.get("nextExpectedRanges")
    return tuple(str(r) for r in ranges) if isinstance(ranges, list) else ()


def _chunks(response: requests.Response) -> Iterator[bytes]:
    try:
        for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
            if chunk:
                yield chunk
    except requests.RequestException as exc:
        raise UpstreamError(f"the download broke off: {type(exc).__name__}") from exc
    finally:
        response.close()
