"""Upload sessions and download URLs: the pre-authenticated file transfer URLs of OneDrive.

Served under ``{base_url}/_files/`` without a bearer token, as Graph's ``uploadUrl`` and
``@microsoft.graph.downloadUrl`` are (https://learn.microsoft.com/graph/api/driveitem-createuploadsession):

- ``POST .../createUploadSession`` -> 200 ``{uploadUrl, expirationDateTime, nextExpectedRanges}``;
  ``@microsoft.graph.conflictBehavior`` in ``item`` (or the query), ``fail`` by default.
- ``PUT {uploadUrl}`` with ``Content-Range: bytes a-b/total`` and exactly ``b-a+1`` bytes:
  fragments in order (an overlap or a gap answers 416), at most 60 MiB each, a multiple of
  320 KiB except the last, the same total in every request; 202 ``nextExpectedRanges`` until
  the last byte, then 201 (new file) or 200 (replaced) with the item; 409
  ``nameAlreadyExists`` on a ``fail`` conflict (the session stays until it expires).
  Each fragment extends the expiry (``uploadSessionLifetimeSeconds``).
- ``GET {uploadUrl}`` -> the status; ``DELETE {uploadUrl}`` -> 204; unknown, cancelled or
  expired -> 404; a PUT after the last range -> 400.
- ``POST /_sim/users/{u}/drive/uploads/failures`` ``{"count": n, "status": 503}``: the
  user's next n well-formed fragments fail (their bytes are dropped), to exercise resuming.
- ``GET {downloadUrl}`` -> the bytes (``Range: bytes=a-b`` -> 206); valid for an hour.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .context import RequestLog
from .drive_render import render_item
from .drive_store import Drive, DriveItem, DriveStore, InvalidName, NameConflict, check_name
from .state import SimState, graph_time_precise, utcnow
from .wire import Request, Response, graph_error

FRAGMENT_MULTIPLE = 320 * 1024  # "each byte range MUST be a multiple of 320 KiB"
MAX_FRAGMENT_BYTES = 60 * 1024 * 1024  # "less than 60 MiB" per request
DOWNLOAD_URL_SECONDS = 3600
CONFLICT_BEHAVIORS = ("fail", "replace", "rename")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def conflict_behavior(value: Any, default: str) -> str | None:
    if value is None or value == "":
        return default
    return value if value in CONFLICT_BEHAVIORS else None


def precondition_failed(request: Request, item: DriveItem) -> Response | None:
    """``If-Match`` with an eTag or cTag that is no longer current: 412 (driveitem-update)."""
    wanted = request.header("if-match")
    if wanted is None or wanted.strip() == "*":
        return None
    if wanted.strip() in (item.etag, item.ctag, item.etag.strip('"'), item.ctag.strip('"')):
        return None
    return graph_error(412, "resourceModified", "The resource has changed since the caller last read it.")


def _range_error(message: str, inner: str) -> Response:
    """416 ``invalidRange`` as OneDrive answers a fragment it cannot take (``innerError.code`` says why)."""
    response = graph_error(416, "invalidRange", message)
    body = json.loads(response.body)
    body["error"]["innerError"]["code"] = inner
    return Response.json(416, body, {k: v for k, v in response.headers.items() if k != "Content-Type"})


@dataclass
class UploadSession:
    id: str
    drive_id: str
    user_id: str
    app_id: str
    actor: dict[str, Any]
    parent_id: str | None  # a new file: its folder and name
    name: str | None
    item_id: str | None  # an existing file whose content is replaced
    conflict: str
    expires: dt.datetime
    created: dt.datetime = field(default_factory=utcnow)
    total: int | None = None
    buffer: bytearray = field(default_factory=bytearray)
    ranges: list[dict[str, Any]] = field(default_factory=list)  # every PUT: range, status
    state: str = "open"  # open | completed | cancelled | expired

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "driveId": self.drive_id, "userId": self.user_id, "name": self.name,
                "itemId": self.item_id, "conflictBehavior": self.conflict, "state": self.state,
                "size": self.total, "received": len(self.buffer),
                "expirationDateTime": graph_time_precise(self.expires), "ranges": list(self.ranges)}


class FileTransfers:
    def __init__(self, state: SimState, store: DriveStore, requests: RequestLog | None = None) -> None:
        self.state = state
        self.store = store
        self.requests = requests
        self.sessions: dict[str, UploadSession] = {}
        self.failures: dict[str, list[int]] = {}  # user id -> statuses the next fragment PUTs answer
        self.downloads = DownloadUrls(store)

    # links --------------------------------------------------------------------------------
    @staticmethod
    def share_token() -> str:
        return secrets.token_urlsafe(33)

    # sessions -----------------------------------------------------------------------------
    def create_session(self, request: Request, app_id: str, actor: dict[str, Any], drive: Drive,
                       base: DriveItem, path: str | None, target: DriveItem | None) -> Response:
        try:
            body = request.json() or {}
        except ValueError:
            return graph_error(400, "invalidRequest", "Unable to read JSON request payload.")
        if isinstance(body, dict) and body.get("deferCommit"):
            return graph_error(400, "notSupported", "The simulator commits on the last range; deferCommit is not "
                                                    "supported.")
        item_props = body.get("item") if isinstance(body, dict) else None
        item_props = item_props if isinstance(item_props, dict) else {}
        conflict = conflict_behavior(item_props.get("@microsoft.graph.conflictBehavior")
                                     or request.query.get("@microsoft.graph.conflictBehavior"), "fail")
        if conflict is None:
            return graph_error(400, "invalidRequest", "@microsoft.graph.conflictBehavior must be fail, replace or "
                                                      "rename.")
        parent_id: str | None = None
        name: str | None = None
        item_id: str | None = None
        if path is None:  # items/{id}/createUploadSession: replace that file
            if target is None:
                return graph_error(404, "itemNotFound", "The resource could not be found.")
            if target.is_folder:
                return graph_error(400, "invalidRequest", "Name the new file: items/{parent-id}:/{name}:/...")
            item_id = target.id
        else:
            parent_path, _, raw_name = path.strip("/").rpartition("/")
            parent = self.store.resolve(drive, base, parent_path) if parent_path else base
            if parent is None and base.parent_id is None:
                parent = self.store.ensure_folders(drive, parent_path, actor)
            if parent is None or not parent.is_folder:
                return graph_error(404, "itemNotFound", "The resource could not be found.")
            try:
                name = check_name(str(item_props.get("name") or raw_name))
            except InvalidName as exc:
                return graph_error(400, "invalidRequest", str(exc))
            existing = self.store.child_named(drive, parent, name)
            if existing is not None and conflict == "fail":
                return graph_error(409, "nameAlreadyExists", "The specified item name already exists.")
            parent_id = parent.id
        user_id = drive.owner.id
        session = UploadSession(secrets.token_urlsafe(24), drive.id, user_id, app_id, actor, parent_id, name,
                                item_id, conflict, self._expiry())
        self._prune()
        self.sessions[session.id] = session
        return Response.json(200, {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
            "uploadUrl": f"{request.base_url}/_files/upload/{session.id}",
            "expirationDateTime": graph_time_precise(session.expires),
            "nextExpectedRanges": ["0-"],
        })

    def _expiry(self) -> dt.datetime:
        return utcnow() + dt.timedelta(seconds=self.state.settings.upload_session_lifetime_seconds)

    def _prune(self) -> None:
        now = utcnow()
        for sid in [s.id for s in self.sessions.values() if s.expires <= now - dt.timedelta(hours=1)]:
            del self.sessions[sid]

    # the pre-authenticated URLs ---------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        seg = [p for p in request.path.split("/") if p][1:]
        response = graph_error(404, "itemNotFound", "The resource could not be found.")
        extra: dict[str, Any] = {}
        with self.state.lock:
            if len(seg) == 2 and seg[0] == "upload":
                session = self.sessions.get(seg[1])
                response = self._session_request(request, seg[1])
                extra = {"uploadSession": seg[1], "contentRange": request.header("content-range"),
                         "bytes": len(request.body)}
                user_id, app_id = (session.user_id, session.app_id) if session else (None, None)
            elif len(seg) == 2 and seg[0] == "download" and request.method in ("GET", "HEAD"):
                response = self.downloads.serve(request, seg[1])
                extra = {"range": request.header("range")}
                user_id, app_id = self.downloads.owner_of(seg[1]), None
            else:
                user_id, app_id = None, None
        if self.requests is not None:  # file transfers show in GET /_sim/requests beside Graph's requests
            # a download URL is a signed capability: its token stays out of the log
            path = "/_files/download" if seg[:1] == ["download"] else request.path
            entry = RequestLog.entry(request.method, path, path, response.status, user_id, app_id)
            entry.update(extra)
            self.requests.append(entry)
        return response

    def _live(self, session_id: str) -> UploadSession | None:
        session = self.sessions.get(session_id)
        if session is None or session.state != "open":
            return None
        if session.expires <= utcnow():
            session.state = "expired"
            return None
        return session

    def _session_request(self, request: Request, session_id: str) -> Response:
        session = self._live(session_id)
        done = self.sessions.get(session_id)
        if session is None and done is not None and done.state == "completed" and request.method == "PUT":
            # SharePoint refuses a range sent after the last one (msgraph-sdk-python-core issue 718 shows it)
            return graph_error(400, "invalidRequest", "The upload session is already complete.")
        if session is None:
            return graph_error(404, "itemNotFound", "The upload session was not found or has expired.")
        if request.method == "GET":
            return Response.json(200, self._status(session))
        if request.method == "DELETE":
            session.state = "cancelled"
            return Response.empty(204)
        if request.method == "PUT":
            response = self._fragment(request, session)
            session.ranges[-1]["status"] = response.status
            return response
        return graph_error(405, "invalidRequest", "Specified HTTP method is not allowed for the request.")

    @staticmethod
    def _status(session: UploadSession) -> dict[str, Any]:
        """What is missing; OneDrive for Business names both ends once it knows the size."""
        start = len(session.buffer)
        missing = f"{start}-{session.total - 1}" if session.total else f"{start}-"
        return {"expirationDateTime": graph_time_precise(session.expires), "nextExpectedRanges": [missing]}

    def _fragment(self, request: Request, session: UploadSession) -> Response:
        header = (request.header("content-range") or "").strip()
        session.ranges.append({"contentRange": header or None, "bytes": len(request.body),
                               "time": graph_time_precise(utcnow()), "status": None})
        match = _CONTENT_RANGE.match(header)
        if match is None:
            return graph_error(400, "invalidRequest", "The Content-Range header is missing or malformed; "
                                                      "expected 'bytes {start}-{end}/{total}'.")
        start, end, total = (int(g) for g in match.groups())
        if end < start or end >= total:
            return graph_error(400, "invalidRequest", "The Content-Range is not within the file.")
        if len(request.body) != end - start + 1:
            return graph_error(400, "invalidRequest", "The body length does not match the Content-Range.")
        if session.total is not None and total != session.total:
            return graph_error(400, "invalidRequest", "The total size differs from the one declared earlier.")
        if len(request.body) > MAX_FRAGMENT_BYTES:
            return graph_error(413, "requestEntityTooLarge", "A fragment must be smaller than 60 MiB.")
        pending_failures = self.failures.get(session.user_id)
        if pending_failures:  # injected: the fragment is lost, as when a connection drops (its bytes are ignored)
            status = pending_failures.pop(0)
            return graph_error(status, "serviceNotAvailable" if status == 503 else "generalException",
                               "The fragment could not be stored; retry it.", {"Retry-After": "1"})
        received = len(session.buffer)
        if start < received:
            return _range_error("Uploaded fragment overlaps with existing data.", "fragmentOverlap")
        if start > received:
            return _range_error("Uploaded fragment is out of order.", "fragmentOutOfOrder")
        last = end == total - 1
        if not last and len(request.body) % FRAGMENT_MULTIPLE:
            return graph_error(400, "invalidRequest", "A fragment other than the last must be a multiple of "
                                                      "320 KiB (327,680 bytes).")
        session.total = total
        session.buffer.extend(request.body)
        session.expires = self._expiry()
        if not last:
            return Response.json(202, self._status(session))
        return self._commit(request, session)

    def _commit(self, request: Request, session: UploadSession) -> Response:
        drive = self.store.drives[session.drive_id]
        content = bytes(session.buffer)
        if session.item_id is not None:
            item = self.store.item(drive, session.item_id)
            if item is None:
                return graph_error(404, "itemNotFound", "The file of this upload session no longer exists.")
            self.store.replace_content(drive, item, content, session.actor)
            created = False
        else:
            assert session.parent_id is not None and session.name is not None
            parent = self.store.item(drive, session.parent_id)
            if parent is None:
                return graph_error(404, "itemNotFound", "The folder of this upload session no longer exists.")
            try:
                item, created = self.store.put_file(drive, parent, session.name, content, session.actor,
                                                    session.conflict)
            except NameConflict:
                return graph_error(409, "nameAlreadyExists", "Another file exists with the same name as the "
                                                             "uploaded session.")
        session.state = "completed"
        session.buffer = bytearray()
        url = self.downloads.url(request, drive, item)
        return Response.json(201 if created else 200, render_item(drive, self.store, item, download_url=url))


class DownloadUrls:
    """``@microsoft.graph.downloadUrl``: signed, short-lived, no bearer token needed; serves ``Range``."""

    def __init__(self, store: DriveStore) -> None:
        self.store = store
        self._key = secrets.token_bytes(32)

    def url(self, request: Request, drive: Drive, item: DriveItem) -> str:
        expires = int(time.time()) + DOWNLOAD_URL_SECONDS
        payload = f"{drive.id}.{item.id}.{expires}"
        return f"{request.base_url}/_files/download/{payload}.{self._sign(payload)}"

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()[:32]

    def owner_of(self, token: str) -> str | None:
        drive = self.store.drives.get(token.split(".", 1)[0])
        return drive.owner.id if drive is not None else None

    def serve(self, request: Request, token: str) -> Response:
        payload, _, signature = token.rpartition(".")
        parts = payload.rsplit(".", 2)
        if len(parts) != 3 or not hmac.compare_digest(self._sign(payload), signature) or not parts[2].isdigit():
            return graph_error(401, "unauthenticated", "The download URL is not valid.")
        if int(parts[2]) < time.time():
            return graph_error(401, "unauthenticated", "The download URL has expired.")
        drive = self.store.drives.get(parts[0])
        item = self.store.item(drive, parts[1]) if drive is not None else None
        if item is None or item.is_folder:
            return graph_error(404, "itemNotFound", "The resource could not be found.")
        headers = {"Content-Type": item.mime_type or "application/octet-stream", "Accept-Ranges": "bytes",
                   "ETag": item.etag, "Content-Disposition": f"attachment; filename*=UTF-8''{quote(item.name)}"}  # RFC 6266
        wanted = request.header("range")
        if not wanted:
            return Response(200, item.content, headers)
        match = _RANGE.match(wanted.strip())
        size = item.size
        if match is None or (not match.group(1) and not match.group(2)):
            return Response(416, b"", {"Content-Range": f"bytes */{size}"})
        if match.group(1):
            first = int(match.group(1))
            last = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        else:  # the last n bytes
            first, last = max(size - int(match.group(2)), 0), size - 1
        if first >= size or first > last:
            return Response(416, b"", {"Content-Range": f"bytes */{size}"})
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        return Response(206, item.content[first:last + 1], headers)
