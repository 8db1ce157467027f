"""Resumable uploads: a file of any size put into a connected account's OneDrive in fragments.

``upload_file`` (shared/drive_files.py) takes a whole file in one request, so the host's
request limit bounds it (100 MB by default). For more, the product opens an upload session
(``open_upload``: Graph's ``createUploadSession`` for the path), sends the file's byte ranges
one request each (``put_fragment``, ``Content-Range: bytes a-b/total``), and asks where the
session stands after a failure (``upload_status``) or gives up (``cancel_upload``); the
last fragment answers with the item. The product never sees Graph's ``uploadUrl``: it gets
an upload id (shared/upload_ids.py) that only this connector opens, and only for the account
that opened it. Each fragment is checked before it goes out, so a malformed one is a 400
with a reason rather than Graph's: in order is Graph's to judge (416), but a fragment must
be a multiple of 320 KiB unless it ends the file, and under 60 MiB
(https://learn.microsoft.com/graph/api/driveitem-createuploadsession "Upload bytes to the
upload session").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from shared.drive_files import (
    FRAGMENT_MULTIPLE,
    as_account,
    conflict_behavior,
    drive_path,
    permitted_account,
    public_item,
)
from shared.errors import InvalidInputError, NotFoundError, UnknownUploadError
from shared.models import JsonObject

if TYPE_CHECKING:
    from shared.bootstrap import Services

T = TypeVar("T")

# Graph: "less than 60 MiB" per request, in multiples of 320 KiB: 191 x 320 KiB.
MAX_FRAGMENT_BYTES = 191 * FRAGMENT_MULTIPLE
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


@dataclass(frozen=True)
class FragmentResult:
    """What one fragment came to: the item once the file is whole (``created`` tells a new
    file from a replaced one), else the ranges Graph still expects."""

    item: JsonObject | None
    created: bool
    next_expected_ranges: tuple[str, ...]


def open_upload(services: Services, account_id: str, path: str, *, conflict: str = "replace") -> JsonObject:
    """A new upload session for ``path`` (missing folders are made when the file is whole):
    its upload id and what a fragment must be."""
    from shared.upload_ids import seal

    checked = drive_path(path)
    behavior = conflict_behavior(conflict)
    session = as_account(
        services, account_id, lambda auth: services.drive.create_upload_session(auth, checked, behavior), write=True
    )
    return {
        "uploadId": seal(services.settings.client_state_key, account_id, session.url),
        "expirationDateTime": session.expires_at,
        "nextExpectedRanges": ["0-"],
        "fragmentMultiple": FRAGMENT_MULTIPLE,
        "maxFragmentBytes": MAX_FRAGMENT_BYTES,
    }


def fragment_range(raw: str | None, length: int) -> tuple[int, int]:
    """``Content-Range: bytes a-b/total`` of a fragment of ``length`` bytes -> (a, total);
    ``InvalidInputError`` when it does not describe this fragment or breaks Graph's rules."""
    match = _CONTENT_RANGE.match((raw or "").strip())
    if match is None:
        raise InvalidInputError("a fragment needs Content-Range: bytes FIRST-LAST/TOTAL")
    first, last, total = (int(group) for group in match.groups())
    if first > last or last >= total:
        raise InvalidInputError("the Content-Range is not within the file")
    if last - first + 1 != length:
        raise InvalidInputError(f"the body has {length} bytes, the Content-Range names {last - first + 1}")
    if length > MAX_FRAGMENT_BYTES:
        raise InvalidInputError(f"a fragment may carry at most {MAX_FRAGMENT_BYTES} bytes")
    if last + 1 < total and length % FRAGMENT_MULTIPLE:
        raise InvalidInputError(f"a fragment that does not end the file must be a multiple of {FRAGMENT_MULTIPLE} bytes")
    return first, total


def put_fragment(
    services: Services, account_id: str, upload_id: str, fragment: bytes, content_range: str | None
) -> FragmentResult:
    """Send one fragment of the session; sent once (a failed one is resumed by the caller
    from ``upload_status``)."""
    first, total = fragment_range(content_range, len(fragment))
    url = _upload_url(services, account_id, upload_id)
    progress = _in_session(lambda: services.drive.upload_fragment(url, fragment, first, total))
    item = public_item(progress.item) if progress.item is not None else None
    return FragmentResult(item, progress.created, progress.next_expected_ranges)


def upload_status(services: Services, account_id: str, upload_id: str) -> tuple[str, ...]:
    """The byte ranges the session still expects (``nextExpectedRanges``)."""
    url = _upload_url(services, account_id, upload_id)
    return _in_session(lambda: services.drive.upload_status(url))


def cancel_upload(services: Services, account_id: str, upload_id: str) -> None:
    """End the session and drop what it received; nothing when it is gone already."""
    url = _upload_url(services, account_id, upload_id)
    services.drive.cancel_upload_session(url)


def _upload_url(services: Services, account_id: str, upload_id: str) -> str:
    """The session's Graph URL, once the account may still write. The URL is
    pre-authenticated: no token is taken for it, but a disconnected account, or one that
    must sign in again, uploads nothing more."""
    from shared.upload_ids import open_upload_id

    permitted_account(services, account_id, write=True)
    return open_upload_id(services.settings.client_state_keys, account_id, upload_id)


def _in_session(call: Callable[[], T]) -> T:
    try:
        return call()
    except NotFoundError:
        # Not the file: the session, which Graph lets expire when no fragment comes.
        raise UnknownUploadError("the upload session expired or was cancelled") from None
