"""Per-folder message delta (``GET /me/mailFolders/{id}/messages/delta``, also called as ``delta()``).

A round starts from nothing (every message of the folder) or from a deltaLink (what
changed in the folder since): the ids are fixed when the round starts and served in
pages of ``Prefer: odata.maxpagesize`` (default ``defaultPageSize``), linked by
``@odata.nextLink``; the last page carries ``@odata.deltaLink``. A message that left the
folder (deleted or moved out) comes as ``{"id", "@removed": {"reason": "deleted"}}``.
Query options (``$select``, ``$filter`` on ``receivedDateTime ge|gt``) are encoded in the links; ``Prefer`` headers are read on
every request, as Graph does. A reset of the mailbox's sync state answers 410
``syncStateNotFound``. (https://learn.microsoft.com/graph/delta-query-messages)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable
from typing import Any

from . import mailbox
from .context import SimContext
from .graph_common import Preferences, select_of, sync_state_gone
from .graph_query import InvalidQuery, parse_filter
from .mailstore import Folder, Message
from .state import DeltaRound, User
from .wire import Request, Response, graph_error


class MessageDelta:
    def __init__(self, ctx: SimContext) -> None:
        self.sim = ctx
        self.state = ctx.state

    def handle(self, request: Request, user: User, folder: Folder) -> Response:
        link_base = self.sim.base_url + request.raw_path.split("?", 1)[0]
        prefs = Preferences.of(request)
        page_size = prefs.max_page_size or self.state.settings.default_page_size
        box = user.mailbox
        with self.state.lock:
            skiptoken = request.query.get("$skiptoken")
            deltatoken = request.query.get("$deltatoken")
            if skiptoken:
                round_id, _, offset_text = skiptoken.partition(".")
                delta_round = self.state.delta_rounds.get(round_id)
                if (delta_round is None or delta_round.user_id != user.id or delta_round.epoch != user.delta_epoch
                        or delta_round.folder_id != folder.id or not offset_text.isdigit()):
                    return sync_state_gone()
                offset = int(offset_text)
            else:
                select, filter_text = select_of(request), request.query.get("$filter")
                if deltatoken:
                    try:
                        token = json.loads(base64.urlsafe_b64decode(deltatoken + "=" * (-len(deltatoken) % 4)))
                        since, epoch, token_folder = int(token["s"]), int(token["e"]), str(token["f"])
                        select, filter_text = token.get("sel") or None, token.get("flt") or None
                    except (ValueError, KeyError, TypeError, binascii.Error):
                        return graph_error(400, "BadRequest", "The delta token is malformed.")
                    if epoch != user.delta_epoch or token_folder != folder.id or token.get("u") != user.id:
                        return sync_state_gone()
                keep = _delta_filter(filter_text)
                if isinstance(keep, Response):
                    return keep
                if deltatoken:
                    changed = sorted((seq, key) for key, seq in folder.changes.items() if seq > since)
                    keys = [key for _, key in changed]
                    removed = {key for key in keys
                               if key not in box.messages or box.messages[key].folder_id != folder.id}
                    keys = [key for key in keys if key in removed or keep(box.messages[key])]
                else:
                    current = [m for m in box.in_folder(folder) if keep(m)]
                    current.sort(key=lambda m: (m.data["receivedDateTime"], m.immutable_id), reverse=True)
                    keys, removed = [m.immutable_id for m in current], set()
                round_id = secrets.token_urlsafe(12)
                delta_round = DeltaRound(user.id, folder.id, user.delta_epoch, keys, removed, self.state.seq,
                                         select, page_size, filter_text)
                self.state.delta_rounds[round_id] = delta_round
                offset = 0
            size = prefs.max_page_size or delta_round.page_size
            chunk = delta_round.ids[offset:offset + size]
            value = [self._item(user, folder, key, delta_round, prefs) for key in chunk]
            body: dict[str, Any] = {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
                "value": value,
            }
            next_offset = offset + len(chunk)
            if next_offset < len(delta_round.ids):
                body["@odata.nextLink"] = f"{link_base}?$skiptoken={round_id}.{next_offset}"
            else:
                self.state.delta_rounds.pop(round_id, None)
                token_json = json.dumps({"u": user.id, "f": folder.id, "s": delta_round.snapshot_seq,
                                         "e": delta_round.epoch, "sel": delta_round.select,
                                         "flt": delta_round.filter}, separators=(",", ":"))
                encoded = base64.urlsafe_b64encode(token_json.encode()).decode().rstrip("=")
                body["@odata.deltaLink"] = f"{link_base}?$deltatoken={encoded}"
        applied = Preferences(prefs.immutable_ids, prefs.body_type, size).applied()
        return Response.json(200, body, applied)

    @staticmethod
    def _item(user: User, folder: Folder, key: str, delta_round: DeltaRound, prefs: Preferences) -> dict[str, Any]:
        message = user.mailbox.messages.get(key)
        if key in delta_round.removed or message is None or message.folder_id != folder.id:
            gone_id = key if prefs.immutable_ids else folder.departed.get(key, key)
            return {"@odata.type": "#microsoft.graph.message", "id": gone_id, "@removed": {"reason": "deleted"}}
        item: dict[str, Any] = {"@odata.type": "#microsoft.graph.message"}
        item.update(mailbox.render_message(message, delta_round.select, immutable=prefs.immutable_ids,
                                           body_type=prefs.body_type))
        return item


_DELTA_FILTER = re.compile(r"^\s*receivedDateTime\s+(ge|gt)\s+\S+\s*$", re.IGNORECASE)


def _delta_filter(text: str | None) -> Callable[[Message], bool] | Response:
    """Message delta filters on ``receivedDateTime ge|gt`` only (Graph's rule for change tracking)."""
    if not text:
        return lambda message: True
    if not _DELTA_FILTER.match(text):
        return graph_error(400, "BadRequest", "Delta of messages supports $filter on receivedDateTime with "
                                              "ge or gt only.")
    try:
        return parse_filter(text)[1]
    except InvalidQuery as exc:
        return graph_error(400, "BadRequest", str(exc))
