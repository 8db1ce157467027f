"""The drive delta query (https://learn.microsoft.com/graph/api/driveitem-delta).

- Without a token: the whole hierarchy, parents before children, in pages of ``$top``
  (200 by default) linked by ``@odata.nextLink``; the last page has ``@odata.deltaLink``.
- ``token=latest``: no items, only a deltaLink for the present state.
- With a delta token: each item changed since, once, in its latest state, preceded by its
  parent folders (unless the ``deltaExcludeParent`` header is sent); deleted items carry
  the ``deleted`` facet. As OneDrive for Business, items leave out ``parentReference.path``
  and ``cTag`` (and ``name`` when deleted); the setting ``driveDeltaIncludesCTag`` keeps it.
- A token from before a reset (``POST /_sim/users/{u}/drive/delta/reset``), or an
  unknown page: ``410 Gone`` ``resyncRequired`` with a ``Location`` header that starts a
  fresh enumeration, as Graph answers.
- Both the path form (``/delta?token=x``) and the function form (``/delta(token='x')``);
  ``$select`` on the first request holds for the whole round.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import secrets
from dataclasses import dataclass
from typing import Any

from .drive_render import GRAPH, render_item
from .drive_store import Drive, DriveStore
from .state import SimState
from .wire import Request, Response, graph_error

DEFAULT_DELTA_PAGE = 200
MAX_DELTA_PAGE = 999
MAX_ROUNDS = 10_000


@dataclass
class DeltaPages:
    """A delta round in progress: the ids to return, fixed when the round started."""

    drive_id: str
    epoch: int
    ids: list[str]
    snapshot_seq: int
    page_size: int
    select: list[str] | None = None  # $select of the first request; later pages keep it


class DriveDelta:
    def __init__(self, state: SimState, store: DriveStore) -> None:
        self.state = state
        self.store = store
        self._rounds: dict[str, DeltaPages] = {}

    def page(self, request: Request, drive: Drive, token: str | None) -> Response:
        """One page of the delta of ``drive``; the caller holds the state lock."""
        link_base = _link_base(request)
        try:
            page_size = min(int(request.query.get("$top", str(DEFAULT_DELTA_PAGE))), MAX_DELTA_PAGE)
        except ValueError:
            return graph_error(400, "invalidRequest", "Invalid $top.")
        if page_size < 1:
            return graph_error(400, "invalidRequest", "Invalid $top.")
        if token == "latest":
            return self._answer([], None, self._delta_link(link_base, drive, drive.seq))
        if token and token.startswith("p."):
            round_id, _, offset_text = token[2:].rpartition(".")
            pages = self._rounds.get(round_id)
            if pages is None or pages.drive_id != drive.id or pages.epoch != drive.epoch or not offset_text.isdigit():
                return _resync(link_base)
            offset = int(offset_text)
        else:
            if token:
                since = self._decode(token, drive)
                if isinstance(since, Response):
                    return since if since.status != 410 else _resync(link_base)
                ids = self._changed_since(drive, since, exclude_parents=bool(request.header("deltaexcludeparent")))
            else:
                ids = self._hierarchy(drive)
            round_id = secrets.token_urlsafe(12)
            raw_select = request.query.get("$select")
            select = [s.strip() for s in raw_select.split(",") if s.strip()] if raw_select else None
            pages = DeltaPages(drive.id, drive.epoch, ids, drive.seq, page_size, select)
            if len(self._rounds) >= MAX_ROUNDS:
                self._rounds.pop(next(iter(self._rounds)))
            self._rounds[round_id] = pages
            offset = 0
        chunk = pages.ids[offset:offset + pages.page_size]
        with_ctag = self.state.settings.drive_delta_includes_ctag
        value = [_selected(render_item(drive, self.store, drive.items[i], in_delta=True, delta_ctag=with_ctag),
                           pages.select) for i in chunk if i in drive.items]
        next_offset = offset + len(chunk)
        if next_offset < len(pages.ids):
            return self._answer(value, f"{link_base}?token=p.{round_id}.{next_offset}", None)
        self._rounds.pop(round_id, None)
        return self._answer(value, None, self._delta_link(link_base, drive, pages.snapshot_seq))

    # tokens -------------------------------------------------------------------------------
    @staticmethod
    def _delta_link(link_base: str, drive: Drive, seq: int) -> str:
        raw = json.dumps({"d": drive.id, "s": seq, "e": drive.epoch}, separators=(",", ":")).encode()
        return f"{link_base}?token={base64.urlsafe_b64encode(raw).decode().rstrip('=')}"

    @staticmethod
    def _decode(token: str, drive: Drive) -> int | Response:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            drive_id, seq, epoch = str(decoded["d"]), int(decoded["s"]), int(decoded["e"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return graph_error(400, "invalidRequest", "The delta token is malformed.")
        if drive_id != drive.id or epoch != drive.epoch:
            return graph_error(410, "resyncRequired", "Resync required.")
        return seq

    # what a round returns ----------------------------------------------------------------------
    def _hierarchy(self, drive: Drive) -> list[str]:
        ordered: list[str] = []
        pending = [drive.root]
        while pending:
            current = pending.pop(0)
            ordered.append(current.id)
            if current.is_folder:
                pending.extend(self.store.children(drive, current))
        return ordered

    def _changed_since(self, drive: Drive, since: int, *, exclude_parents: bool) -> list[str]:
        changed = sorted((seq, item_id) for item_id, seq in drive.changes.items() if seq > since)
        ordered: list[str] = []
        seen: set[str] = set()
        for _, item_id in changed:
            item = drive.items[item_id]
            chain: list[str] = []
            if not exclude_parents and not item.deleted:
                parent_id = item.parent_id
                while parent_id is not None:
                    chain.append(parent_id)
                    parent_id = drive.items[parent_id].parent_id
            for entry in [*reversed(chain), item_id]:
                if entry not in seen:
                    seen.add(entry)
                    ordered.append(entry)
        return ordered

    @staticmethod
    def _answer(value: list[dict[str, Any]], next_link: str | None, delta_link: str | None) -> Response:
        body: dict[str, Any] = {"@odata.context": f"{GRAPH}/$metadata#Collection(driveItem)", "value": value}
        if next_link is not None:
            body["@odata.nextLink"] = next_link
        if delta_link is not None:
            body["@odata.deltaLink"] = delta_link
        return Response.json(200, body)


def _selected(item: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """``$select`` keeps the named properties; ``id`` and the ``deleted`` facet always stay."""
    if not select:
        return item
    wanted = {name.lower() for name in select} | {"id", "deleted", "@odata.etag"}
    return {k: v for k, v in item.items() if k.lower() in wanted}


def _link_base(request: Request) -> str:
    path = request.raw_path.split("?", 1)[0]
    head, sep, _ = path.partition("/delta")
    return request.base_url + head + sep


def _resync(link_base: str) -> Response:
    """410 with the ``Location`` of a fresh enumeration (driveitem-delta, "resync errors")."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    request_id = secrets.token_hex(16)
    body = {"error": {
        "code": "resyncRequired",
        "message": "Resync required. Replace any local items with the server's version (including deletes) if "
                   "you're sure that the service was up to date with your local changes when you last synced. "
                   "Upload any local changes that the server doesn't know about.",
        "innerError": {"code": "resyncChangesApplyDifferences", "date": now, "request-id": request_id,
                       "client-request-id": request_id},
    }}
    return Response.json(410, body, {"Location": link_base})
