"""The mail's part of a delta round (``shared.delta_round.RoundItems``): how one watched
folder's delta items become events and ledger marks (shared.sync runs the folders' rounds;
docs/design.md "Processing" and "Watched folders and moves").

created / updated / deleted, as ``shared.sync`` explains: a message without a mark is
``created`` when it was received after the account connected, else history; a mark with
another ``changeKey`` is ``updated``; ``@removed`` is ``deleted`` once, or a move, which
``locate`` tells apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.config import MAIL_EVENT_QUEUE
from shared.delta_round import DeltaRound, PageWork, RoundMode, connect_baseline, parse_graph_time
from shared.events import Change, encode_event, mail_event
from shared.ledger import LedgerMark
from shared.mail_folders import DELETED_ITEMS, INBOX, WatchedFolders, locate
from shared.models import Account

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import DeltaPage, GraphAuth


class MailItems:
    """One watched folder's delta items of one account."""

    queue = MAIL_EVENT_QUEUE

    def __init__(
        self,
        services: Services,
        account: Account,
        auth: GraphAuth,
        emit_history: bool,
        watched: WatchedFolders,
        folder: str,
    ) -> None:
        self.services = services
        self.account = account
        self.auth = auth
        self.emit_history = emit_history
        self.watched = watched
        self.folder = folder
        self.baseline = connect_baseline(account)

    def fetch(self, link: str | None) -> DeltaPage:
        return self.services.graph.delta_page(self.auth, link, folder=self.folder)

    def vanished(self, round_: DeltaRound, item_ids: list[str]) -> PageWork:
        return self.prepare(round_, [{"id": mid, "@removed": {"reason": "deleted"}} for mid in item_ids])

    def prepare(self, round_: DeltaRound, items: list[dict[str, Any]]) -> PageWork:
        mode = round_.mode
        # A first or full round ignores history unpublished so far, so only messages that may
        # give an event or that a full round must see need a ledger read (the history of a
        # large mailbox's first round reads no ledger row).
        if mode in (RoundMode.INCREMENTAL, RoundMode.FULL) or (mode == RoundMode.FIRST and self.emit_history):
            wanted = items
        else:
            wanted = [item for item in items if "@removed" in item or self._is_new(item, mode)]
        work = PageWork()
        if not wanted:
            return work
        known = round_.marks([item["id"] for item in wanted])
        departed: list[LedgerMark] = []
        seen = round_.round_id if mode == RoundMode.FULL else None
        for item in wanted:
            message_id = item["id"]
            mark = work.marks.get(message_id) or known.get(message_id)
            if "@removed" in item and mark is not None and not mark.removed and _folder_of(mark) == self.folder:
                departed.append(mark)  # where did it go? (below, for the whole page at once)
                continue
            change, previous = self.classify(item, mark, mode)
            change_key = item.get("changeKey") if isinstance(item.get("changeKey"), str) else None
            if change is None:
                if (
                    mode == RoundMode.FULL
                    and mark is not None
                    and not mark.removed
                    and mark.seen_in != round_.round_id
                    and _folder_of(mark) == self.folder
                ):
                    # Seen by this full round: not among the vanished at its end.
                    work.keep(LedgerMark(message_id, mark.change_key, False, round_.round_id, self.folder))
                continue
            version: str | None = None
            if previous is not None:  # a move: the same changeKey may have been published in the old folder
                version = f"{change_key or ''}|{self.folder}"
            elif change is Change.CREATED and mark is not None:  # back after it left the watched folders
                version = f"again|{change_key or ''}"
            work.publish(
                self._event(item, change, previous_folder=previous, version=version),
                change,
                LedgerMark(message_id, change_key, removed=change is Change.DELETED, seen_in=seen, folder=self.folder),
            )
        if departed:
            self._departed(departed, work, seen)
        return work

    def _departed(self, departed: list[LedgerMark], work: PageWork, seen: str | None) -> None:
        """Messages that left this folder: deleted, moved out of the watched folders, or
        moved to another watched one (whose round publishes the move)."""
        where = locate(self.services, self.auth, [mark.message_id for mark in departed])
        names: dict[str, str] | None = None
        for mark in departed:
            folder_id = where.get(mark.message_id)
            reason = "deleted"
            if folder_id is not None:
                if self.watched.key_of(self.services, self.auth, folder_id) is not None:
                    continue
                if names is None:
                    from shared.mail_actions import folder_names

                    names = folder_names(self.services, self.auth)
                reason = "deleted" if names.get(folder_id) == DELETED_ITEMS else "moved"
            item = {"id": mark.message_id, "@removed": {"reason": reason}}
            work.publish(
                self._event(item, Change.DELETED, reason=reason, version=mark.change_key or ""),
                Change.DELETED,
                LedgerMark(mark.message_id, mark.change_key, True, seen, self.folder),
            )

    def _event(
        self,
        item: dict[str, Any],
        change: Change,
        *,
        previous_folder: str | None = None,
        reason: str | None = None,
        version: str | None = None,
    ) -> str:
        settings = self.services.settings
        return encode_event(
            mail_event(
                self.account,
                item,
                change,
                folder=self.folder,
                now=self.services.clock.now(),
                previous_folder=previous_folder,
                reason=reason,
                version=version,
                body=settings.event_body,
                body_max_bytes=settings.event_body_max_bytes,
            )
        )

    def classify(
        self, item: dict[str, Any], mark: LedgerMark | None, mode: str
    ) -> tuple[Change | None, str | None]:
        """(change or None, the folder a moved message came from)."""
        if "@removed" in item:
            if mark is not None:
                # Its deletion was published, or it lives in another folder now (the move
                # was published when that folder's round saw it).
                return None, None
            # Never published: a deletion is news only in an incremental round.
            return (Change.DELETED if mode == RoundMode.INCREMENTAL else None), None
        if mark is not None and mark.removed:
            return Change.CREATED, None  # it left the watched folders (or was deleted) and came back
        if mark is not None:
            previous = _folder_of(mark)
            if previous != self.folder:
                return Change.UPDATED, previous
            change_key = item.get("changeKey")
            return (None if change_key is not None and change_key == mark.change_key else Change.UPDATED), None
        if self._is_new(item, mode):
            return Change.CREATED, None
        if mode == RoundMode.INCREMENTAL:
            return Change.UPDATED, None
        return (Change.CREATED if mode == RoundMode.FIRST and self.emit_history else None), None

    def _is_new(self, item: dict[str, Any], mode: str) -> bool:
        if self.baseline is None:
            return mode != RoundMode.FIRST
        received = parse_graph_time(item.get("receivedDateTime"))
        return received is not None and received >= self.baseline


def _folder_of(mark: LedgerMark) -> str:
    # Marks written before folders were kept belong to the inbox, the only folder then.
    return mark.folder or INBOX
