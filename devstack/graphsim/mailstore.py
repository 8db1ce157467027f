"""The data of one simulated mailbox: folders (a tree under ``msgfolderroot``), messages, attachments.

Ids follow Exchange: every message has a REST id, which changes when the message moves
to another folder, and an immutable id, which stays for the life of the message in the
mailbox (https://learn.microsoft.com/graph/outlook-immutable-id). Both are accepted as
input everywhere; a request with ``Prefer: IdType="ImmutableId"`` is answered with the
immutable ones. Messages are keyed by their immutable id; ``rest_ids`` maps the current
REST ids to it. Folder ids do not change, so one form serves both.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from typing import Any

# The folders of a new mailbox: well-known name, display name, shown under the root or not.
# (https://learn.microsoft.com/graph/api/resources/mailfolder, "Use well-known folder names")
ROOT = "msgfolderroot"
WELL_KNOWN_FOLDERS = (
    ("inbox", "Inbox", True),
    ("drafts", "Drafts", True),
    ("sentitems", "Sent Items", True),
    ("deleteditems", "Deleted Items", True),
    ("junkemail", "Junk Email", True),
    ("archive", "Archive", True),
    ("outbox", "Outbox", True),
    ("conversationhistory", "Conversation History", True),
    # soft-deleted items (a DELETE from Deleted Items lands here); outside the visible tree
    ("recoverableitemsdeletions", "Deletions", False),
)
REST_ID_PREFIX = "AAMkAGI2THVSAAA"
IMMUTABLE_ID_PREFIX = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0"
STORE_ROOT_ID = "AAMkAGI2store"


def new_graph_id(prefix: str) -> str:
    """An opaque Exchange-style id (base64 with ``-`` and ``_``, may end in '=')."""
    return prefix + base64.b64encode(secrets.token_bytes(30)).decode("ascii").replace("/", "-").replace("+", "_")


@dataclass
class Folder:
    id: str
    display_name: str
    well_known: str | None
    parent_id: str
    hidden: bool = False
    # message key (immutable id) -> sequence number of the last change this folder saw (for delta)
    changes: dict[str, int] = field(default_factory=dict)
    # message key -> the REST id it had when it left this folder (a delta's "@removed" entry)
    departed: dict[str, str] = field(default_factory=dict)


@dataclass
class Attachment:
    id: str
    name: str
    content_type: str
    content: bytes
    last_modified: str
    is_inline: bool = False

    def public(self, with_bytes: bool = True) -> dict[str, Any]:
        """A ``fileAttachment`` (https://learn.microsoft.com/graph/api/resources/fileattachment)."""
        out: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "id": self.id,
            "lastModifiedDateTime": self.last_modified,
            "name": self.name,
            "contentType": self.content_type,
            "size": len(self.content),
            "isInline": self.is_inline,
            "contentId": None,
            "contentLocation": None,
        }
        if with_bytes:
            out["contentBytes"] = base64.b64encode(self.content).decode("ascii")
        return out


@dataclass
class Message:
    id: str  # the REST id: a new one after each move
    immutable_id: str
    folder_id: str
    data: dict[str, Any]
    change_key: str
    attachments: list[Attachment] = field(default_factory=list)

    def etag(self) -> str:
        return f'W/"{self.change_key}"'

    def id_for(self, immutable: bool) -> str:
        return self.immutable_id if immutable else self.id


class Mailbox:
    """Folders and messages of one user, with the lookups Graph's paths need."""

    def __init__(self) -> None:
        self.folders: dict[str, Folder] = {}
        self.messages: dict[str, Message] = {}  # by immutable id
        self.rest_ids: dict[str, str] = {}  # current REST id -> immutable id
        self._well_known: dict[str, str] = {}
        root = Folder(new_graph_id("AAMkAGI2"), "Top of Information Store", ROOT, STORE_ROOT_ID, hidden=True)
        self.add_folder(root)
        for well_known, name, visible in WELL_KNOWN_FOLDERS:
            parent = root.id if visible else STORE_ROOT_ID
            self.add_folder(Folder(new_graph_id("AAMkAGI2"), name, well_known, parent, hidden=not visible))

    def add_folder(self, folder: Folder) -> None:
        self.folders[folder.id] = folder
        if folder.well_known:
            self._well_known[folder.well_known] = folder.id

    @property
    def root(self) -> Folder:
        return self.folders[self._well_known[ROOT]]

    def folder(self, ref: str) -> Folder | None:
        """A folder by id or well-known name (case-insensitive)."""
        found = self.folders.get(ref)
        if found is not None:
            return found
        folder_id = self._well_known.get(ref.lower())
        return self.folders.get(folder_id) if folder_id else None

    def children(self, folder: Folder, include_hidden: bool = False) -> list[Folder]:
        return [f for f in self.folders.values()
                if f.parent_id == folder.id and f.id != folder.id and (include_hidden or not f.hidden)]

    def message(self, ref: str) -> Message | None:
        """A message by REST id or immutable id."""
        found = self.messages.get(ref)
        if found is not None:
            return found
        key = self.rest_ids.get(ref)
        return self.messages.get(key) if key else None

    def in_view(self, folder_id: str) -> bool:
        """A folder of the mailbox's visible tree (under msgfolderroot), not of the recoverable items."""
        folder = self.folders.get(folder_id)
        return folder is not None and folder.parent_id != STORE_ROOT_ID

    def in_folder(self, folder: Folder) -> list[Message]:
        return [m for m in self.messages.values() if m.folder_id == folder.id]
