"""The files API: a connected account's OneDrive, for the product that puts documents there.

Each operation names the account, checks that it may (``require_files_scope``: a Files
scope among those it consented to at connect; ``ReadWrite`` for a change), takes the
account's Graph token and makes the drive calls through ``DriveApi`` (shared/drive_ports.py).
What it returns is the product's view of an item (``public_item``), not Graph's: the
pre-authenticated ``@microsoft.graph.downloadUrl`` is never handed out.

- Uploads up to ``SIMPLE_UPLOAD_MAX_BYTES`` (4 MiB) are one ``PUT``; larger ones go through
  an upload session in fragments of ``UPLOAD_FRAGMENT_BYTES`` (a multiple of 320 KiB, as
  Graph requires). A fragment that fails (a 5xx, a 429, a broken connection) is resumed:
  the session's ``nextExpectedRanges`` says where Graph stands, and the upload goes on
  from there (https://learn.microsoft.com/graph/api/driveitem-createuploadsession
  "Resuming an in-progress upload"), at most ``MAX_UPLOAD_RESUMES`` times. A file larger
  than one request carries goes up in the product's own fragments (shared/drive_uploads.py).
- Downloads come from the download URL Graph redirects to and are handed on unread:
  ``download`` returns the bytes as an iterator of chunks, which the route streams out
  (HTTP streams, functions/files.py), so no file is ever held whole and none is too large.
  A ``Range`` is passed on to the download URL as it is.
- Children pages carry an opaque ``continuation``: Graph's nextLink and the folder it
  belongs to, accepted back only for that folder and only towards the Graph endpoint, so
  a caller cannot make the app send the account's token elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from shared.errors import (
    ConnectorError,
    GraphError,
    InvalidInputError,
    InvalidPathError,
    MissingScopeError,
    NotFoundError,
    ReauthRequiredError,
    ThrottledError,
    UnknownAccountError,
    UpstreamError,
)
from shared.models import Account, AccountStatus
from shared.ports import DriveContent, GraphAuth, JsonObject

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)
T = TypeVar("T")

# Delegated scopes that open a user's files (https://learn.microsoft.com/graph/permissions-reference).
FILES_READ_SCOPES = ("Files.Read", "Files.Read.All", "Files.ReadWrite", "Files.ReadWrite.All")
FILES_WRITE_SCOPES = ("Files.ReadWrite", "Files.ReadWrite.All")

CONFLICT_BEHAVIORS = ("replace", "rename", "fail")
LINK_TYPES = ("view", "edit")
LINK_SCOPES = ("anonymous", "organization")

# The simple upload is documented for files up to 250 MB today; the files API keeps to the
# long-standing 4 MB rule and sends anything larger through an upload session, which is
# resumable. Fragments: "a multiple of 320 KiB", "less than 60 MiB", 5-10 MiB recommended.
SIMPLE_UPLOAD_MAX_BYTES = 4 * 1024 * 1024
FRAGMENT_MULTIPLE = 320 * 1024
UPLOAD_FRAGMENT_BYTES = 16 * FRAGMENT_MULTIPLE  # 5 MiB
MAX_UPLOAD_RESUMES = 5
MAX_RESUME_WAIT_SECONDS = 10.0

CHILDREN_PAGE_DEFAULT = 50
CHILDREN_PAGE_MAX = 200

# OneDrive's naming rules (https://support.microsoft.com/office/restrictions-and-limitations-in-onedrive-and-sharepoint-64883a5d-228e-48f5-b3d2-eb39e07630fa):
# none of " * : < > ? / \ | in a name, no leading or trailing space, no trailing dot, and
# at most 400 characters for the whole decoded path.
_BAD_NAME_CHARS = re.compile(r'["*:<>?\\|\x00-\x1f\x7f]')
MAX_PATH_CHARS = 400
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class UploadResult:
    item: JsonObject
    created: bool
    session: bool  # went through an upload session
    fragments: int  # PUTs of fragments sent (0 for a simple upload)
    resumes: int  # times a failed fragment was resumed from nextExpectedRanges


# -- input ----------------------------------------------------------------------------


def drive_path(raw: str) -> str:
    """A path below the drive's root, checked against OneDrive's rules; ``InvalidInputError``."""
    path = raw.strip("/")
    if not path:
        raise InvalidPathError("the path is empty")
    if len(path) > MAX_PATH_CHARS:
        raise InvalidPathError(f"the path is longer than {MAX_PATH_CHARS} characters")
    for segment in path.split("/"):
        if not segment:
            raise InvalidPathError("the path has an empty segment")
        if segment in (".", ".."):
            raise InvalidPathError("the path may not contain '.' or '..' segments")
        if _BAD_NAME_CHARS.search(segment):
            raise InvalidPathError('a name may not contain " * : < > ? \\ | or control characters')
        if segment != segment.strip() or segment.endswith("."):
            raise InvalidPathError("a name may not start or end with a space, or end with a dot")
    return path


def conflict_behavior(raw: str | None) -> str:
    value = (raw or "replace").strip().lower()
    if value not in CONFLICT_BEHAVIORS:
        raise InvalidInputError("conflict must be replace, rename or fail")
    return value


def link_request(body: Any) -> tuple[str, str]:
    """``{"type": "view"|"edit", "scope": "anonymous"|"organization"}`` -> (type, scope)."""
    if not isinstance(body, dict):
        raise InvalidInputError('the body must be a JSON object {"type", "scope"}')
    link_type, scope = body.get("type"), body.get("scope")
    if link_type not in LINK_TYPES:
        raise InvalidInputError("type must be view or edit")
    if scope not in LINK_SCOPES:
        raise InvalidInputError("scope must be anonymous or organization")
    return str(link_type), str(scope)


def byte_range(raw: str | None) -> str | None:
    """A single ``Range: bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` (RFC 9110 section 14.1.2)."""
    if raw is None or not raw.strip():
        return None
    match = _RANGE.match(raw.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise InvalidInputError("Range must be one range of bytes, as bytes=0-1023")
    first, last = match.groups()
    if first and last and int(last) < int(first):
        raise InvalidInputError("the Range ends before it starts")
    return f"bytes={first}-{last}"


def page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return CHILDREN_PAGE_DEFAULT
    try:
        size = int(raw)
    except ValueError:
        raise InvalidInputError("size must be a whole number") from None
    if not 1 <= size <= CHILDREN_PAGE_MAX:
        raise InvalidInputError(f"size must be between 1 and {CHILDREN_PAGE_MAX}")
    return size


# -- who may ----------------------------------------------------------------------------


def _normalised(scope: str) -> str:
    # Scopes compare case-insensitively and may come with the resource in front.
    return scope.rsplit("/", 1)[-1].lower()


def require_files_scope(account_id: str, granted: Iterable[str], *, write: bool) -> None:
    needed = FILES_WRITE_SCOPES if write else FILES_READ_SCOPES
    have = {_normalised(s) for s in granted}
    if not have.intersection(s.lower() for s in needed):
        raise MissingScopeError(account_id, needed)


def permitted_account(services: Services, account_id: str, *, write: bool) -> Account:
    """The account, once it may use its drive: it exists, needs no new sign-in and consented
    to a Files scope (a ``ReadWrite`` one to ``write``)."""
    account = services.accounts.get(account_id)
    if account is None:
        raise UnknownAccountError(f"account {account_id} does not exist")
    if account.status in (AccountStatus.REAUTH_REQUIRED, AccountStatus.DISCONNECTED):
        raise ReauthRequiredError(account_id, account.status.value)
    require_files_scope(account_id, account.scopes, write=write)
    return account


def as_account(services: Services, account_id: str, call: Callable[[GraphAuth], T], *, write: bool) -> T:
    """``call`` with the account's Graph token, once the account may. A token Graph refuses
    (401: revoked, say) is dropped and ``call`` runs once more with a fresh one, whose
    refresh tells a dead refresh token (``ReauthRequiredError``) from a hiccup."""
    account = permitted_account(services, account_id, write=write)
    try:
        return call(services.tokens.graph_auth(account))
    except GraphError as exc:
        if exc.status != 401:
            raise
    services.tokens.forget(account_id)
    return call(services.tokens.graph_auth(account))


# -- what the product sees of an item ------------------------------------------------------


def public_item(raw: JsonObject) -> JsonObject:
    """The item as the files API shows it. ``webUrl`` opens the document in the browser
    (Office documents in the Office web editor)."""
    file = raw.get("file") if isinstance(raw.get("file"), dict) else None
    parent = raw.get("parentReference") if isinstance(raw.get("parentReference"), dict) else {}
    assert isinstance(parent, dict)
    parent_path = str(parent.get("path") or "")
    # parentReference.path is "/drive/root:" or "/drive/root:/folder" (Graph's form).
    folder_path = parent_path.split("root:", 1)[1] if "root:" in parent_path else ""
    name = str(raw.get("name") or "")
    modified_by = raw.get("lastModifiedBy") if isinstance(raw.get("lastModifiedBy"), dict) else {}
    assert isinstance(modified_by, dict)
    user = modified_by.get("user") if isinstance(modified_by.get("user"), dict) else {}
    assert isinstance(user, dict)
    return {
        "id": raw.get("id"),
        "name": name,
        "path": _item_path(raw, parent_path, folder_path, name),
        "parentId": parent.get("id"),
        "driveId": parent.get("driveId"),
        "webUrl": raw.get("webUrl"),
        "size": raw.get("size"),
        "eTag": raw.get("eTag"),
        "cTag": raw.get("cTag"),
        "isFolder": "folder" in raw,
        "mimeType": file.get("mimeType") if file else None,
        "childCount": raw["folder"].get("childCount") if isinstance(raw.get("folder"), dict) else None,
        "createdDateTime": raw.get("createdDateTime"),
        "lastModifiedDateTime": raw.get("lastModifiedDateTime"),
        "lastModifiedBy": user.get("displayName") or user.get("email") or user.get("id"),
    }


def _item_path(raw: JsonObject, parent_path: str, folder_path: str, name: str) -> str | None:
    if "root" in raw or "parentReference" not in raw:
        return "/"  # the root has no parent
    if not parent_path:
        return None  # Graph left the parent's path out (it does in delta answers)
    return f"{folder_path}/{name}"


def public_link(raw: JsonObject) -> JsonObject:
    link = raw.get("link") if isinstance(raw.get("link"), dict) else {}
    assert isinstance(link, dict)
    return {
        "id": raw.get("id"),
        "type": link.get("type"),
        "scope": link.get("scope"),
        "webUrl": link.get("webUrl"),
        "expirationDateTime": raw.get("expirationDateTime"),
    }


# -- operations ---------------------------------------------------------------------------


def get_item(services: Services, account_id: str, item_id: str) -> JsonObject:
    return public_item(as_account(services, account_id, lambda auth: services.drive.get_item(auth, item_id),
                                   write=False))


def get_item_by_path(services: Services, account_id: str, path: str) -> JsonObject:
    checked = drive_path(path)
    return public_item(as_account(services, account_id, lambda auth: services.drive.get_item_by_path(auth, checked),
                                   write=False))


def list_children(
    services: Services, account_id: str, item_id: str, *, size: int = CHILDREN_PAGE_DEFAULT,
    continuation: str | None = None,
) -> tuple[list[JsonObject], str | None]:
    """One page of the folder's children (``item_id`` ``root`` for the drive's root) and the
    continuation of the next page (None at the end)."""
    next_link = _open_continuation(services, item_id, continuation) if continuation else None
    page = as_account(
        services, account_id,
        lambda auth: services.drive.list_children(auth, item_id, page_size=size, next_link=next_link), write=False,
    )
    token = _seal_continuation(item_id, page.next_link) if page.next_link else None
    return [public_item(item) for item in page.items], token


def _seal_continuation(item_id: str, next_link: str) -> str:
    raw = json.dumps({"item": item_id, "link": next_link}, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _open_continuation(services: Services, item_id: str, token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidInputError("the continuation is not one this API gave") from None
    if not isinstance(value, dict) or value.get("item") != item_id or not isinstance(value.get("link"), str):
        raise InvalidInputError("the continuation is not one this API gave for this folder")
    link = value["link"]
    endpoint = urlsplit(services.settings.graph_endpoint)
    target = urlsplit(link)
    if (target.scheme, target.netloc) != (endpoint.scheme, endpoint.netloc) or not target.path.startswith(
        endpoint.path.rstrip("/") + "/"
    ):
        raise InvalidInputError("the continuation is not one this API gave")
    return str(link)


def upload_file(
    services: Services, account_id: str, path: str, content: bytes, *, conflict: str = "replace",
    sleep: Callable[[float], None] = time.sleep,
) -> UploadResult:
    """Put ``content`` at ``path`` (missing folders are made); ``ConflictError`` when the
    name is taken and ``conflict`` is ``fail``."""
    checked = drive_path(path)
    behavior = conflict_behavior(conflict)

    def upload(auth: GraphAuth) -> UploadResult:
        if len(content) <= SIMPLE_UPLOAD_MAX_BYTES:
            item, created = services.drive.upload_small(auth, checked, content, behavior)
            return UploadResult(public_item(item), created, session=False, fragments=0, resumes=0)
        return _upload_in_session(services, auth, checked, content, behavior, sleep)

    return as_account(services, account_id, upload, write=True)


def _upload_in_session(
    services: Services, auth: GraphAuth, path: str, content: bytes, conflict: str,
    sleep: Callable[[float], None],
) -> UploadResult:
    drive = services.drive
    upload_url = drive.create_upload_session(auth, path, conflict).url
    total = len(content)
    view = memoryview(content)
    offset, fragments, resumes = 0, 0, 0
    try:
        while True:
            fragment = bytes(view[offset:offset + UPLOAD_FRAGMENT_BYTES])
            fragments += 1
            try:
                progress = drive.upload_fragment(upload_url, fragment, offset, total)
            except NotFoundError:
                # Not the file: the session (it lives for minutes between fragments).
                raise UpstreamError("the upload session expired before the upload ended") from None
            except UpstreamError as exc:
                if not exc.transient or resumes >= MAX_UPLOAD_RESUMES:
                    raise
                resumes += 1
                wait = exc.retry_after if isinstance(exc, ThrottledError) else 0.0
                log.info("account %s: upload fragment failed (%s), resuming", auth.account_id, type(exc).__name__)
                if wait:
                    sleep(min(wait, MAX_RESUME_WAIT_SECONDS))
                offset = _resume_offset(drive.upload_status(upload_url), total)
                continue
            if progress.item is not None:
                return UploadResult(public_item(progress.item), progress.created, session=True,
                                    fragments=fragments, resumes=resumes)
            offset = _resume_offset(progress.next_expected_ranges, total)
    except ConnectorError:
        _cancel_quietly(services, upload_url, auth.account_id)
        raise


def _resume_offset(ranges: Iterable[str], total: int) -> int:
    """The first byte Graph still expects (``"3276800-"`` or ``"3276800-6291455"``)."""
    starts = []
    for text in ranges:
        head = text.split("-", 1)[0].strip()
        if head.isdigit():
            starts.append(int(head))
    if not starts or min(starts) >= total:
        raise UpstreamError("the upload session expects no byte of this file")
    return min(starts)


def _cancel_quietly(services: Services, upload_url: str, account_id: str) -> None:
    try:
        services.drive.cancel_upload_session(upload_url)
    except ConnectorError as exc:  # it expires on its own
        log.info("account %s: upload session not cancelled: %s", account_id, type(exc).__name__)


def download(services: Services, account_id: str, item_id: str, *, range_header: str | None = None) -> DriveContent:
    """The file's bytes (or the ``Range`` asked) from Graph's download URL, not yet read:
    the caller iterates ``chunks`` and calls ``close``. A download that ends before the
    ``Content-Length`` Graph announced raises ``UpstreamError`` from the iteration, so a
    streamed answer is cut off (and the client sees it short) rather than ended as if whole."""
    wanted = byte_range(range_header)
    content = as_account(
        services, account_id, lambda auth: services.drive.open_content(auth, item_id, byte_range=wanted), write=False
    )
    return DriveContent(content.status, content.size, content.content_type, _checked(content), content.close,
                        content.content_range)


def _checked(content: DriveContent) -> Iterator[bytes]:
    received = 0
    try:
        for chunk in content.chunks:
            received += len(chunk)
            yield chunk
        if content.size is not None and received != content.size:
            raise UpstreamError(f"the download ended after {received} of {content.size} bytes")
    finally:
        content.close()


def read_whole(content: DriveContent) -> bytes:
    """Every chunk of ``content`` joined (for small files and tests; routes stream instead)."""
    try:
        return b"".join(content.chunks)
    finally:
        content.close()


def create_link(services: Services, account_id: str, item_id: str, *, link_type: str, scope: str) -> JsonObject:
    return public_link(as_account(
        services, account_id,
        lambda auth: services.drive.create_link(auth, item_id, link_type=link_type, scope=scope), write=True,
    ))


def delete_item(services: Services, account_id: str, item_id: str) -> None:
    as_account(services, account_id, lambda auth: services.drive.delete_item(auth, item_id), write=True)


def retry_after_seconds(exc: ThrottledError) -> int:
    """``Retry-After`` for the caller: whole seconds, at least one."""
    return max(1, math.ceil(exc.retry_after))
