"""An in-memory OneDrive for Business behind the drive delta calls of the ``DriveApi`` port
(``drive_delta_page``, ``get_items``), keeping the rules of Graph the drive sync depends on
(docs/graph-notes.md "OneDrive"); tests/graphsim/test_drive_delta_contract.py runs the same
assertions against this fake and against the real adapter on the simulator.

- a round without a link returns the whole hierarchy, parents before children, the root
  first; with a deltaLink, each item changed since, once, in its latest state, preceded by
  its parent folders (whose eTag a child's change leaves alone); deleted items come with the
  ``deleted`` facet and without ``name``;
- delta items leave out ``cTag`` (unless ``include_ctag``, as the simulator's
  ``driveDeltaIncludesCTag``) and ``parentReference.path``; files carry
  ``file.hashes.quickXorHash``;
- ``get_items`` shows the items as they are now, with cTag and path, None for a deleted one;
- a rename changes the eTag and keeps the cTag and hash; an edit changes all three;
- ``reset()`` makes every link of the drive answer ``DeltaTokenExpiredError`` (410).

One drive per account (``GraphAuth.account_id``). ``fail[method]`` raises its exceptions
first in, first out; ``calls`` records (method, account id); ``before_read`` runs before
each ``get_items`` (a user acting between the delta page and the read).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from shared.errors import DeltaTokenExpiredError
from shared.ports import DeltaPage, GraphAuth, JsonObject
from tests.fakes import EPOCH, enter_call

USER = {"user": {"email": "adele@contoso.test", "id": "adele-oid", "displayName": "Adele Vance"}}
_ids = itertools.count(1)


def graph_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def content_hash(content: bytes) -> str:
    """Stands in for quickXorHash: 20 bytes, base64, changed by any change of the bytes."""
    return base64.b64encode(hashlib.sha256(content).digest()[:20]).decode()


@dataclass
class _Item:
    id: str
    name: str
    parent_id: str | None
    folder: bool
    created: dt.datetime
    content: bytes = b""
    version: int = 1
    content_version: int = 1
    deleted: bool = False
    mime_type: str | None = None
    modified: dt.datetime = field(default=EPOCH)


class FakeDrive:
    """One account's drive and its change log."""

    def __init__(self, clock: Any, page_size: int) -> None:
        self.clock = clock
        self.page_size = page_size
        self.id = "b!" + hashlib.sha256(str(next(_ids)).encode()).hexdigest()[:20]
        now = clock.now() - dt.timedelta(days=30)
        self.root = _Item(f"01ROOT{next(_ids):06d}", "root", None, True, now)
        self.items: dict[str, _Item] = {self.root.id: self.root}
        self.changes: dict[str, int] = {}
        self.seq = 0
        self.epoch = 0

    # --- what the user does -----------------------------------------------------------
    def _touch(self, item: _Item) -> None:
        self.seq += 1
        self.changes[item.id] = self.seq
        item.modified = self.clock.now()

    def folder(self, path: str, *, created: dt.datetime | None = None) -> str:
        """The folder at ``path`` below the root (made, with its parents, when missing)."""
        current = self.root
        for name in [p for p in path.split("/") if p]:
            found = self._child(current, name)
            if found is None:
                found = _Item(f"01F{next(_ids):08d}", name, current.id, True, created or self.clock.now())
                self.items[found.id] = found
                self._touch(found)
            current = found
        return current.id

    def put(self, path: str, content: bytes, *, created: dt.datetime | None = None) -> str:
        """A new file at ``path``, or new content for the one there; its id."""
        parent_path, _, name = path.strip("/").rpartition("/")
        parent = self.items[self.folder(parent_path, created=created)]
        existing = self._child(parent, name)
        if existing is not None:
            self.edit(existing.id, content)
            return existing.id
        item = _Item(f"01X{next(_ids):08d}", name, parent.id, False, created or self.clock.now(), content,
                     mime_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document")
        self.items[item.id] = item
        self._touch(item)
        return item.id

    def edit(self, item_id: str, content: bytes) -> None:
        item = self.items[item_id]
        item.content, item.version, item.content_version = content, item.version + 1, item.content_version + 1
        self._touch(item)

    def rename(self, item_id: str, name: str) -> None:
        item = self.items[item_id]
        item.name, item.version = name, item.version + 1
        self._touch(item)

    def delete(self, item_id: str) -> None:
        doomed = [self.items[item_id]]
        while doomed:
            current = doomed.pop()
            doomed.extend(i for i in self.items.values() if i.parent_id == current.id and not i.deleted)
            current.deleted = True
            self._touch(current)

    def reset(self) -> None:
        self.epoch += 1

    def _child(self, parent: _Item, name: str) -> _Item | None:
        lowered = name.lower()
        return next((i for i in self.items.values()
                     if i.parent_id == parent.id and not i.deleted and i.name.lower() == lowered), None)

    def ancestors(self, item_id: str) -> list[str]:
        """The folders above a live item, the root first; none for a deleted one."""
        item = self.items[item_id]
        above: list[str] = []
        while not item.deleted and item.parent_id is not None:
            above.insert(0, item.parent_id)
            item = self.items[item.parent_id]
        return above

    def path_of(self, item: _Item) -> str:
        names: list[str] = []
        while item.parent_id is not None:
            names.append(item.name)
            item = self.items[item.parent_id]
        return "/drive/root:" + ("/" + "/".join(reversed(names)) if names else "")

    # --- how Graph shows it -------------------------------------------------------------
    def render(self, item: _Item, *, in_delta: bool, include_ctag: bool = False) -> JsonObject:
        parent: JsonObject = {"driveType": "business", "driveId": self.id}
        if item.parent_id is not None:
            parent["id"] = item.parent_id
            if not in_delta:
                parent["path"] = self.path_of(self.items[item.parent_id])
        out: JsonObject = {
            "id": item.id,
            "name": item.name,
            "eTag": f'"{{{item.id}}},{item.version}"',
            "cTag": f'"c:{{{item.id}}},{item.content_version}"',
            "createdDateTime": graph_time(item.created),
            "lastModifiedDateTime": graph_time(item.modified),
            "lastModifiedBy": copy.deepcopy(USER),
            "size": len(item.content),
            "webUrl": f"https://contoso-my.sharepoint.test/personal/adele/Documents{self.path_of(item)[12:]}",
            "parentReference": parent,
        }
        if item.parent_id is None:
            out["root"] = {}
        if item.folder:
            out["folder"] = {"childCount": sum(1 for i in self.items.values() if i.parent_id == item.id and not i.deleted)}
            out.pop("cTag")  # OneDrive for Business gives no cTag for a folder
        else:
            out["file"] = {"mimeType": item.mime_type, "hashes": {"quickXorHash": content_hash(item.content)}}
        if in_delta:
            if not include_ctag:
                out.pop("cTag", None)
            if item.deleted:
                out["deleted"] = {"state": "deleted"}
                out.pop("name")
                out.pop("cTag", None)
        return out


class FakeDriveDelta:
    """The drive delta calls of ``DriveApi`` over one ``FakeDrive`` per account."""

    def __init__(self, clock: Any = None, page_size: int = 3, include_ctag: bool = False) -> None:
        from shared.clock import FixedClock

        self._lock = threading.Lock()
        self.clock = clock or FixedClock(EPOCH)
        self.page_size = page_size
        self.include_ctag = include_ctag
        self.drives: dict[str, FakeDrive] = {}
        self.fail: dict[str, list[Exception]] = {}
        self.calls: list[tuple[str, str]] = []
        self.reads: list[list[str]] = []  # the ids of each get_items call
        self.before_read: Callable[[], None] | None = None
        self._rounds: dict[str, tuple[list[str], int]] = {}  # a round's ids, fixed when it began

    def drive(self, account_id: str) -> FakeDrive:
        with self._lock:
            return self.drives.setdefault(account_id, FakeDrive(self.clock, self.page_size))

    def _enter(self, method: str, auth: GraphAuth) -> None:
        enter_call(self._lock, self.calls, self.fail, method, auth.account_id)

    def drive_delta_page(self, auth: GraphAuth, link: str | None) -> DeltaPage:
        self._enter("drive_delta_page", auth)
        drive = self.drive(auth.account_id)
        with self._lock:
            offset = 0
            if link is None:
                ids, upto = self._hierarchy(drive), drive.seq
            else:
                parsed = urlparse(link)
                query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                if int(query["epoch"]) != drive.epoch or (parsed.netloc == "next" and query["round"] not in self._rounds):
                    raise DeltaTokenExpiredError(410, "resyncRequired", "Resync required.")
                if parsed.netloc == "next":
                    ids, upto = self._rounds[query["round"]]
                    offset = int(query["offset"])
                else:
                    ids, upto = self._changed(drive, int(query["since"]), drive.seq), drive.seq
            chunk = ids[offset:offset + self.page_size]
            value = [drive.render(drive.items[i], in_delta=True, include_ctag=self.include_ctag) for i in chunk]
            if offset + self.page_size < len(ids):
                round_id = f"r{next(_ids)}"
                self._rounds[round_id] = (ids, upto)
                following = f"fakedrive://next?round={round_id}&offset={offset + self.page_size}&epoch={drive.epoch}"
                return DeltaPage(value, next_link=following)
            return DeltaPage(value, delta_link=f"fakedrive://delta?since={upto}&epoch={drive.epoch}")

    def get_items(self, auth: GraphAuth, item_ids: Sequence[str]) -> dict[str, JsonObject | None]:
        self._enter("get_items", auth)
        if self.before_read is not None:
            self.before_read()
        drive = self.drive(auth.account_id)
        with self._lock:
            self.reads.append(list(item_ids))
            found: dict[str, JsonObject | None] = {}
            for item_id in item_ids:
                item = drive.items.get(item_id)
                found[item_id] = None if item is None or item.deleted else drive.render(item, in_delta=False)
            return found

    @staticmethod
    def _hierarchy(drive: FakeDrive) -> list[str]:
        ordered, pending = [], [drive.root]
        while pending:
            current = pending.pop(0)
            ordered.append(current.id)
            pending.extend(sorted((i for i in drive.items.values() if i.parent_id == current.id and not i.deleted),
                                  key=lambda i: i.name.lower()))
        return ordered

    @staticmethod
    def _changed(drive: FakeDrive, since: int, upto: int) -> list[str]:
        """Each item changed in (since, upto], in the order of its last change, after the
        folders above it (a deleted item alone)."""
        ordered: dict[str, None] = {}
        for _, item_id in sorted((s, i) for i, s in drive.changes.items() if since < s <= upto):
            ordered.update(dict.fromkeys([*drive.ancestors(item_id), item_id]))
        return list(ordered)
