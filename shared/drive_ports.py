"""Ports of the OneDrive side: a user's drive through Microsoft Graph.

Defined here and named in ``shared.ports`` too, where the core imports them from. This
module imports records only (``shared.models``), so that ``shared.ports`` can name its
ports without an import circle; a record these ports carry goes to ``shared.models``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shared.models import (
    DeltaPage,
    DriveChildrenPage,
    DriveContent,
    GraphAuth,
    JsonObject,
    UploadProgress,
    UploadSession,
)


class DriveApi(Protocol):
    """A user's OneDrive through Microsoft Graph (``/me/drive``), on the same retry policy as
    ``GraphApi``: 429/503 retried after ``Retry-After`` a bounded number of times, then
    ``ThrottledError``; 404 -> ``NotFoundError``; 409 ``nameAlreadyExists`` -> ``ConflictError``;
    other OData errors ``GraphError``. ``path`` arguments are drive paths below the root,
    already validated (``shared.drive_files.drive_path``)."""

    def get_item(self, auth: GraphAuth, item_id: str) -> JsonObject: ...

    def get_item_by_path(self, auth: GraphAuth, path: str) -> JsonObject: ...

    def list_children(
        self, auth: GraphAuth, item_id: str, *, page_size: int, next_link: str | None = None
    ) -> DriveChildrenPage:
        """``next_link`` None: the first page; otherwise a link an earlier page gave."""
        ...

    def upload_small(self, auth: GraphAuth, path: str, content: bytes, conflict: str) -> tuple[JsonObject, bool]:
        """A simple upload (``PUT .../content``); the item and whether it was created."""
        ...

    def create_upload_session(self, auth: GraphAuth, path: str, conflict: str) -> UploadSession:
        """A new upload session for ``path``: its pre-authenticated ``uploadUrl`` and expiry."""
        ...

    def upload_fragment(self, upload_url: str, fragment: bytes, start: int, total: int) -> UploadProgress:
        """One ``PUT`` of bytes ``start`` .. ``start + len(fragment) - 1`` of ``total``, sent
        once (no retry: the caller resumes from ``upload_status``). A failure raises
        ``UpstreamError`` (``ThrottledError`` with the fragment's ``Retry-After``)."""
        ...

    def upload_status(self, upload_url: str) -> tuple[str, ...]:
        """The session's ``nextExpectedRanges``."""
        ...

    def cancel_upload_session(self, upload_url: str) -> None:
        """Idempotent."""
        ...

    def open_content(self, auth: GraphAuth, item_id: str, *, byte_range: str | None = None) -> DriveContent:
        """The file's bytes from its download URL (Graph's 302), unread; ``byte_range`` is a
        ``Range`` header value (``bytes=0-1023``) passed on as it is."""
        ...

    def create_link(self, auth: GraphAuth, item_id: str, *, link_type: str, scope: str) -> JsonObject:
        """The sharing permission (``link.webUrl``)."""
        ...

    def delete_item(self, auth: GraphAuth, item_id: str) -> None: ...

    def drive_delta_page(self, auth: GraphAuth, link: str | None) -> DeltaPage:
        """A page of ``/me/drive/root/delta`` (``link`` None: a new round of the whole drive);
        410 Gone (``resyncRequired``) raises ``DeltaTokenExpiredError``."""
        ...

    def get_items(self, auth: GraphAuth, item_ids: Sequence[str]) -> dict[str, JsonObject | None]:
        """The items as they are now (``$batch``es of 20 reads); None for one gone (404)."""
        ...
