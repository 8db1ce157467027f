"""The drive's part of a delta round (``shared.delta_round.RoundItems``): how the drive
delta's items become ``drive-events`` and ledger marks (``shared.drive_sync`` runs the
rounds; docs/design.md "Resources", docs/graph-notes.md "OneDrive").

Delta returns each changed item once in its latest state, preceded by its parent folders
(whose eTag does not change when only a descendant did), deletions with the ``deleted``
facet, and leaves out what OneDrive for Business does not give in delta: ``cTag`` and
``parentReference.path`` (https://learn.microsoft.com/graph/api/driveitem-delta, Remarks).
So, for one page:

- the ledger mark of an item (in the drive's partition, ``{account}|drive``) keeps the eTag
  last published (``change_key``) and what tells its content (``content_tag``); an item
  whose eTag is the mark's changed nothing (a parent folder, a replayed page): no event;
- a first round (no deltaLink: after a connect) publishes nothing for what was there
  before the connect: it writes a *baseline* mark per item, without reading the ledger, so
  that a later change is classified exactly (created or updated, content or not); an item
  created since the connect (``createdDateTime``) is ``created``;
- the items that do give an event are read again, 20 to a ``$batch`` of
  ``GET /me/drive/items/{id}`` (``DriveApi.get_items``), for their ``cTag`` and path; the
  event carries the item as that read shows it, and its mark that read's eTag. An item
  that is gone by then (404) gives nothing now: its deletion is in a later delta;
- ``contentChanged``: the mark's content tag against the same kind of tag of the item now
  (a cTag with a cTag, a quickXorHash with a quickXorHash; never one with the other); a
  tag of that kind that the item no longer has counts as changed; folders have no content;
- a ``deleted`` item with a live mark is ``deleted`` once, with the name and path its mark
  kept (delta tells only a deleted item's ids; a mark keeps what was last published or,
  for a baseline, what delta showed); one never published nor baselined is nothing; the
  root never gives an event.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from shared.config import DRIVE_EVENT_QUEUE
from shared.delta_round import DeltaRound, PageWork, RoundMode, connect_baseline, parse_graph_time
from shared.events import Change, drive_event, drive_item_path, encode_event
from shared.ledger import LedgerMark
from shared.models import Account

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import DeltaPage, GraphAuth, JsonObject

# The tags that tell a file's content, in the order a new mark takes one: the cTag ("an
# eTag for the content of the item", not changed by a metadata change), else a hash of
# the content: OneDrive for Business's delta has no cTag, but quickXorHash is "the only
# value that is guaranteed to be available" on every drive; sha256Hash "isn't supported"
# (https://learn.microsoft.com/graph/api/resources/hashes).
CONTENT_TAG_KINDS = ("cTag", "quickXorHash", "sha1Hash")


class DriveItems:
    """The drive delta's items of one account."""

    queue = DRIVE_EVENT_QUEUE

    def __init__(self, services: Services, account: Account, auth: GraphAuth) -> None:
        self.services = services
        self.account = account
        self.auth = auth
        self.baseline = connect_baseline(account)

    def fetch(self, link: str | None) -> DeltaPage:
        return self.services.drive.drive_delta_page(self.auth, link)

    def vanished(self, round_: DeltaRound, item_ids: list[str]) -> PageWork:
        return self.prepare(round_, [{"id": item_id, "deleted": {"state": "deleted"}} for item_id in item_ids])

    def prepare(self, round_: DeltaRound, items: list[JsonObject]) -> PageWork:
        mode, work = round_.mode, PageWork()
        latest: dict[str, JsonObject] = {}
        for item in items:
            if "root" not in item:  # the root is no document: it never gives an event
                latest.pop(item["id"], None)  # "use the last occurrence you see" (driveitem-delta)
                latest[item["id"]] = item
        if mode == RoundMode.FIRST:
            # What was there before the connect is history: a baseline mark, no ledger read.
            wanted = [i for i in latest.values() if "deleted" in i or self._is_new(i, mode)]
        else:
            wanted = list(latest.values())
        known = round_.marks([item["id"] for item in wanted])
        wanted_ids = {item["id"] for item in wanted}
        seen = round_.round_id if mode == RoundMode.FULL else None
        candidates: list[tuple[JsonObject, LedgerMark | None, Change]] = []
        for item_id, item in latest.items():
            if item_id not in wanted_ids:
                work.keep(_mark(item, seen))
                continue
            mark = known.get(item_id)
            if "deleted" in item:
                if mark is not None and not mark.removed:
                    # Delta tells only the ids of a deleted item: its name and path are the mark's.
                    last = {"name": mark.name, "path": mark.path}
                    event = self._event(
                        item, Change.DELETED, version=mark.change_key or "", content_changed=False, known=last
                    )
                    work.publish(event, Change.DELETED, dataclasses.replace(mark, removed=True, seen_in=seen))
                continue
            if mark is None:
                if mode == RoundMode.FULL and not self._is_new(item, mode):
                    work.keep(_mark(item, seen))  # history no round had marked yet
                else:
                    candidates.append((item, None, Change.CREATED))
            elif mark.removed:
                candidates.append((item, mark, Change.CREATED))  # back from the recycle bin
            elif item.get("eTag") is not None and item.get("eTag") == mark.change_key:
                if mode == RoundMode.FULL and mark.seen_in != round_.round_id:
                    work.keep(dataclasses.replace(mark, seen_in=round_.round_id))  # not among the vanished
            else:
                candidates.append((item, mark, Change.UPDATED))
        if candidates:
            self._publish(candidates, work, round_, seen)
        return work

    def _publish(
        self,
        candidates: list[tuple[JsonObject, LedgerMark | None, Change]],
        work: PageWork,
        round_: DeltaRound,
        seen: str | None,
    ) -> None:
        """Read the items that give an event as they are now, then publish them."""
        current = self.services.drive.get_items(self.auth, [item["id"] for item, _, _ in candidates])
        for delta_item, mark, change in candidates:
            read = current.get(delta_item["id"])
            if read is None:
                continue  # deleted since the delta page: a later round publishes that
            item = {**delta_item, **read}
            etag = item.get("eTag") if isinstance(item.get("eTag"), str) else None
            if mark is not None and not mark.removed and etag is not None and etag == mark.change_key:
                if round_.mode == RoundMode.FULL:
                    work.keep(dataclasses.replace(mark, seen_in=round_.round_id))
                continue  # the read shows the state already published
            if change is Change.CREATED:
                version = "" if mark is None else f"again|{etag or ''}"
                content_changed = "folder" not in item
                tag = content_tag(item)
            else:
                assert mark is not None
                version = etag or ""
                compared = content_tag(item, like=mark.content_tag)
                content_changed = "folder" not in item and (compared is None or compared != mark.content_tag)
                tag = compared or content_tag(item)
            work.publish(
                self._event(item, change, version=version, content_changed=content_changed),
                change,
                LedgerMark(item["id"], etag, False, seen, None, tag, _name(item), drive_item_path(item)),
            )

    def _event(
        self, item: JsonObject, change: Change, *, version: str, content_changed: bool,
        known: dict[str, str | None] | None = None,
    ) -> str:
        now = self.services.clock.now()
        return encode_event(
            drive_event(
                self.account, item, change, now=now, content_changed=content_changed, version=version, known=known
            )
        )

    def _is_new(self, item: JsonObject, mode: str) -> bool:
        """Created since the account connected (Graph's times have whole seconds)."""
        if self.baseline is None:
            return mode != RoundMode.FIRST
        created = parse_graph_time(item.get("createdDateTime"))
        return created is not None and created >= self.baseline


def content_tag(item: dict[str, Any], *, like: str | None = None) -> str | None:
    """What tells the item's content, as ``{kind}:{value}`` (``cTag:"c:{...},3"``,
    ``quickXorHash:...``): of the kind of ``like`` when given (a mark's tag: compared with
    a tag of its own kind only), else the first kind of ``CONTENT_TAG_KINDS`` the item has.
    None for a folder, or when the item has no tag of the kind asked for."""
    if "folder" in item:
        return None
    tags = _content_tags(item)
    if like is not None:
        kind = like.partition(":")[0]
        return f"{kind}:{tags[kind]}" if kind in tags else None
    for kind in CONTENT_TAG_KINDS:
        if kind in tags:
            return f"{kind}:{tags[kind]}"
    return None


def _content_tags(item: dict[str, Any]) -> dict[str, str]:
    tags: dict[str, str] = {}
    if isinstance(item.get("cTag"), str):
        tags["cTag"] = item["cTag"]
    file = item.get("file")
    hashes = file.get("hashes") if isinstance(file, dict) else None
    for kind, value in (hashes.items() if isinstance(hashes, dict) else ()):
        if kind in CONTENT_TAG_KINDS and kind != "cTag" and isinstance(value, str) and value:
            tags[kind] = value
    return tags


def _mark(item: JsonObject, seen: str | None) -> LedgerMark:
    """An item's mark as delta shows it, with no event (a baseline: its name, and its path
    where delta gives one)."""
    etag = item.get("eTag") if isinstance(item.get("eTag"), str) else None
    return LedgerMark(
        item["id"], etag, "deleted" in item, seen, None, content_tag(item), _name(item), drive_item_path(item)
    )


def _name(item: JsonObject) -> str | None:
    name = item.get("name")
    return name if isinstance(name, str) and name else None
