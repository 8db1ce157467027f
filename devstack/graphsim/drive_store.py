"""OneDrive for Business drives: items, their versions and the change log behind delta.

Every change to a drive (an upload, a user's edit in the browser, a rename, a delete, a
new folder) goes through :class:`DriveStore`, which bumps the item's eTag (any change)
and cTag (content changes only), records a change sequence number for the drive delta
and tells the notifier. Graph requests and the control API both use it. Callers hold
``SimState.lock``.

Facts followed (https://learn.microsoft.com/graph/api/resources/driveitem):
``eTag`` changes with content or metadata, ``cTag`` with content only; deleting a folder
deletes what it holds; a name is unique in its folder, case-insensitively; OneDrive for
Business files carry ``file.hashes.quickXorHash``.
"""

from __future__ import annotations

import base64
import datetime as dt
import mimetypes
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .state import User, utcnow

QUICKXOR_WIDTH_BITS = 160
QUICKXOR_SHIFT = 11
INVALID_NAME_CHARS = set('"*:<>?/\\|')
ROOT_NAME = "root"


def quick_xor_hash(data: bytes) -> str:
    """OneDrive's quickXorHash, base64 (https://learn.microsoft.com/onedrive/developer/code-snippets/quickxorhash).

    Byte ``k`` is XORed into a 160-bit circular register at bit ``11 k mod 160``; since
    ``160 * 11 = 0 (mod 160)``, bytes 160 apart land on the same bits, so the data is first
    folded into 160 bytes with whole-buffer XORs (fast in CPython), then rotated in.
    """
    size = QUICKXOR_WIDTH_BITS
    if data:
        blocks = 1
        while blocks * size < len(data):
            blocks *= 2
        buffer = data + bytes(blocks * size - len(data))
        while len(buffer) > size:
            half = len(buffer) // 2
            folded = int.from_bytes(buffer[:half], "little") ^ int.from_bytes(buffer[half:], "little")
            buffer = folded.to_bytes(half, "little")
    else:
        buffer = bytes(size)
    mask = (1 << QUICKXOR_WIDTH_BITS) - 1
    register = 0
    for index, value in enumerate(buffer):
        if value:
            shift = (index * QUICKXOR_SHIFT) % QUICKXOR_WIDTH_BITS
            register ^= ((value << shift) | (value >> (QUICKXOR_WIDTH_BITS - shift))) & mask
    digest = bytearray(register.to_bytes(QUICKXOR_WIDTH_BITS // 8, "little"))
    for i, byte in enumerate(len(data).to_bytes(8, "little")):
        digest[QUICKXOR_WIDTH_BITS // 8 - 8 + i] ^= byte
    return base64.b64encode(bytes(digest)).decode("ascii")


def new_item_id() -> str:
    """OneDrive for Business item ids: ``01`` and 32 base32 characters."""
    return "01" + base64.b32encode(secrets.token_bytes(20)).decode("ascii")[:32]


def identity_of(user: User) -> dict[str, Any]:
    return {"user": {"email": user.user_principal_name, "id": user.id, "displayName": user.display_name}}


@dataclass
class DriveItem:
    id: str
    name: str
    parent_id: str | None  # None for the root
    is_folder: bool
    created: dt.datetime
    modified: dt.datetime
    created_by: dict[str, Any]
    modified_by: dict[str, Any]
    content: bytes = b""
    mime_type: str | None = None
    uid: str = field(default_factory=lambda: str(uuid.uuid4()).upper())  # the GUID in eTag and cTag
    version: int = 1  # eTag: every change
    content_version: int = 1  # cTag: content changes
    deleted: bool = False
    quick_xor: str = ""
    links: list[dict[str, Any]] = field(default_factory=list)

    @property
    def etag(self) -> str:
        return f'"{{{self.uid}}},{self.version}"'

    @property
    def ctag(self) -> str:
        return f'"c:{{{self.uid}}},{self.content_version}"'

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass
class Drive:
    id: str
    owner: User
    created: dt.datetime
    root: DriveItem
    items: dict[str, DriveItem] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)  # item id -> sequence number of its last change
    seq: int = 0
    epoch: int = 0  # bumped by the control API: older delta tokens answer 410

    @property
    def web_url(self) -> str:
        return f"https://contoso-my.sharepoint.com/personal/{personal_site(self.owner)}/Documents"


def personal_site(user: User) -> str:
    return "".join(c if c.isalnum() else "_" for c in user.user_principal_name.lower())


class NameConflict(Exception):
    """An item of that name exists in the folder (Graph: 409 ``nameAlreadyExists``)."""


class InvalidName(ValueError):
    """The name is empty, too long or holds a character OneDrive refuses."""


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 400 or any(c in INVALID_NAME_CHARS for c in name) or name in (".", ".."):
        raise InvalidName(f"The name '{name}' is not a valid file or folder name.")
    return name


class DriveStore:
    """The drives of the tenant, one per user, provisioned on first use as OneDrive does."""

    def __init__(self, on_change: Callable[[Drive], None] | None = None) -> None:
        self.drives: dict[str, Drive] = {}
        self._by_user: dict[str, str] = {}
        self.on_change = on_change

    # drives ---------------------------------------------------------------------------------
    def drive_of(self, user: User) -> Drive:
        drive_id = self._by_user.get(user.id)
        if drive_id is not None:
            return self.drives[drive_id]
        now = utcnow()
        system = {"user": {"displayName": "System Account"}}
        root = DriveItem(new_item_id(), ROOT_NAME, None, True, now, now, system, system)
        drive = Drive("b!" + base64.urlsafe_b64encode(secrets.token_bytes(48)).decode("ascii"), user, now, root)
        drive.items[root.id] = root
        self.drives[drive.id] = drive
        self._by_user[user.id] = drive.id
        return drive

    # reading --------------------------------------------------------------------------------
    @staticmethod
    def item(drive: Drive, item_id: str) -> DriveItem | None:
        if item_id.lower() == ROOT_NAME:
            return drive.root
        found = drive.items.get(item_id)
        return found if found is not None and not found.deleted else None

    @staticmethod
    def children(drive: Drive, folder: DriveItem) -> list[DriveItem]:
        kids = [i for i in drive.items.values() if i.parent_id == folder.id and not i.deleted]
        kids.sort(key=lambda i: i.name.lower())
        return kids

    def child_named(self, drive: Drive, folder: DriveItem, name: str) -> DriveItem | None:
        lowered = name.lower()
        return next((i for i in self.children(drive, folder) if i.name.lower() == lowered), None)

    def resolve(self, drive: Drive, base: DriveItem, path: str) -> DriveItem | None:
        current: DriveItem | None = base
        for part in [p for p in path.split("/") if p]:
            if current is None or not current.is_folder:
                return None
            current = self.child_named(drive, current, part)
        return current

    def path_of(self, drive: Drive, item: DriveItem) -> str:
        """``/drive/root:/a/b`` for the folder ``b``: Graph's ``parentReference.path`` form."""
        names: list[str] = []
        current = item
        while current.parent_id is not None:
            names.append(current.name)
            current = drive.items[current.parent_id]
        return "/drive/root:" + ("/" + "/".join(reversed(names)) if names else "")

    # changing -------------------------------------------------------------------------------
    def _touch(self, drive: Drive, item: DriveItem) -> None:
        drive.seq += 1
        drive.changes[item.id] = drive.seq

    def _changed(self, drive: Drive) -> None:
        if self.on_change is not None:
            self.on_change(drive)

    def unique_name(self, drive: Drive, folder: DriveItem, name: str) -> str:
        """``report 1.docx``, ``report 2.docx``...: Graph's ``rename`` conflict behaviour."""
        if self.child_named(drive, folder, name) is None:
            return name
        stem, dot, ext = name.rpartition(".") if "." in name.strip(".") else (name, "", "")
        n = 1
        while True:
            candidate = f"{stem} {n}{dot}{ext}"
            if self.child_named(drive, folder, candidate) is None:
                return candidate
            n += 1

    def create_folder(self, drive: Drive, parent: DriveItem, name: str, actor: dict[str, Any],
                      conflict: str = "fail") -> tuple[DriveItem, bool]:
        """The folder and whether it was created (``replace`` on a folder keeps the folder)."""
        name = check_name(name)
        existing = self.child_named(drive, parent, name)
        if existing is not None:
            if conflict == "rename":
                name = self.unique_name(drive, parent, name)
            elif conflict == "replace" and existing.is_folder:
                return existing, False
            else:
                raise NameConflict(name)
        now = utcnow()
        folder = DriveItem(new_item_id(), name, parent.id, True, now, now, actor, actor)
        drive.items[folder.id] = folder
        self._touch(drive, folder)
        self._changed(drive)
        return folder, True

    def ensure_folders(self, drive: Drive, path: str, actor: dict[str, Any]) -> DriveItem:
        """The folder at ``path`` below the root, creating what is missing (uploads by path do)."""
        current = drive.root
        for part in [p for p in path.split("/") if p]:
            found = self.child_named(drive, current, part)
            if found is None:
                found, _ = self.create_folder(drive, current, part, actor)
            elif not found.is_folder:
                raise NameConflict(part)
            current = found
        return current

    def put_file(self, drive: Drive, parent: DriveItem, name: str, content: bytes, actor: dict[str, Any],
                 conflict: str = "replace", mime_type: str | None = None) -> tuple[DriveItem, bool]:
        """Create or replace a file; the item and whether it was created (201) or replaced (200)."""
        name = check_name(name)
        existing = self.child_named(drive, parent, name)
        if existing is not None:
            if conflict == "rename":
                name = self.unique_name(drive, parent, name)
            elif conflict == "replace" and not existing.is_folder:
                self.replace_content(drive, existing, content, actor)
                return existing, False
            else:
                raise NameConflict(name)
        now = utcnow()
        guessed = mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        item = DriveItem(new_item_id(), name, parent.id, False, now, now, actor, actor, content=content,
                         mime_type=guessed, quick_xor=quick_xor_hash(content))
        drive.items[item.id] = item
        self._touch(drive, item)
        self._changed(drive)
        return item, True

    def replace_content(self, drive: Drive, item: DriveItem, content: bytes, actor: dict[str, Any]) -> None:
        item.content = content
        item.quick_xor = quick_xor_hash(content)
        item.version += 1
        item.content_version += 1
        item.modified = utcnow()
        item.modified_by = actor
        self._touch(drive, item)
        self._changed(drive)

    def rename(self, drive: Drive, item: DriveItem, name: str, actor: dict[str, Any]) -> None:
        """A new name: a new eTag, the same cTag (the content did not change)."""
        name = check_name(name)
        if item.parent_id is None:
            raise InvalidName("The root cannot be renamed.")
        other = self.child_named(drive, drive.items[item.parent_id], name)
        if other is not None and other.id != item.id:
            raise NameConflict(name)
        item.name = name
        item.version += 1
        item.modified = utcnow()
        item.modified_by = actor
        self._touch(drive, item)
        self._changed(drive)

    def delete(self, drive: Drive, item: DriveItem) -> None:
        """To the recycle bin, with everything the folder holds; each shows as deleted in delta."""
        doomed = [item]
        while doomed:
            current = doomed.pop()
            if current.is_folder:
                doomed.extend(self.children(drive, current))
            current.deleted = True
            self._touch(drive, current)
        self._changed(drive)
