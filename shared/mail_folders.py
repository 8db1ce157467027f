"""The watched mail folders (``MAIL_FOLDERS``): which folders the sync runs a delta for,
which subscription covers them, and where a message that left a folder went.

- ``MAIL_FOLDERS`` names well-known folders (``inbox,archive``) or is ``*`` for every
  folder of the mailbox, child folders included. A folder's *key* is its well-known name
  when it has one, else its id: the key is what events carry as ``data.folder``, what the
  ledger remembers of a message, and what the delta link of the folder is stored under.
- One folder is covered by its own subscription (``/me/mailFolders('inbox')/messages``);
  more than one, or ``*``, by one mailbox-wide subscription (``/me/messages``): Graph's
  delta exists per folder only, its subscriptions also for the whole mailbox
  (learn.microsoft.com/graph/api/resources/subscription, "Outlook message").
- A delta round says only that a message left a folder (``@removed``). With immutable ids
  the message keeps its id when it moves, so ``locate`` asks Graph (one ``$batch`` of up to
  20 reads) where it is now: gone, in another watched folder (that folder's delta shows it
  arriving: one ``updated`` event), or in a folder not watched (``deleted``, reason
  ``moved``; Deleted Items counts as a delete).
- A message names its folder by id (``parentFolderId``); ``folder_names`` tells which ids
  are a mailbox's well-known folders: for the watched folders' keys, for whether a message
  that left went to Deleted Items, and for the ``folder`` the mail actions show.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

from shared.config import ALL_FOLDERS, INBOX, WATCHABLE_FOLDERS
from shared.errors import GraphError, ThrottledError
from shared.ports import MAX_BATCH_REQUESTS, BatchRequest, GraphAuth

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

DELETED_ITEMS = "deleteditems"
MAILBOX_WIDE_RESOURCE = "/me/messages"
# With ``*``, a mailbox's folder list is walked again after this long (new folders join).
FOLDER_LIST_TTL = dt.timedelta(minutes=5)
MAX_WATCHED_FOLDERS = 500
LOCATE_FIELDS = "id,parentFolderId"
# Well-known folder names a message's parentFolderId is matched against: those a consumer
# may watch, and the two that hold mail without being watchable
# (learn.microsoft.com/graph/api/resources/mailfolder, "Well-known folder names").
WELL_KNOWN_FOLDERS = (*WATCHABLE_FOLDERS, "msgfolderroot", "recoverableitemsdeletions")
# Folder ids do not change; a mailbox's well-known ids are looked up again after this long.
FOLDER_NAMES_TTL = dt.timedelta(hours=1)


def subscription_resource(mail_folders: Sequence[str]) -> str:
    """The one subscription that covers the watched folders."""
    if len(mail_folders) == 1 and mail_folders[0] != ALL_FOLDERS:
        return f"/me/mailFolders('{mail_folders[0]}')/messages"
    return MAILBOX_WIDE_RESOURCE


def is_mail_resource(resource: str) -> bool:
    return resource == MAILBOX_WIDE_RESOURCE or (
        resource.startswith("/me/mailFolders(") and resource.endswith("/messages")
    )


@dataclass
class WatchedFolders:
    """The folders of one mailbox that one sync covers: their keys, in delta order, and the
    folder ids known to belong to them (looked up when a message's whereabouts matter)."""

    keys: tuple[str, ...]
    everything: bool = False
    ids: dict[str, str] | None = field(default=None)  # folder id -> key; None: not looked up yet

    def key_of(self, services: Services, auth: GraphAuth, folder_id: str) -> str | None:
        """The watched folder's key for a folder id; None when that folder is not watched."""
        if self.ids is None or folder_id not in self.ids:
            self.ids = self._lookup(services, auth)
        return self.ids.get(folder_id)

    def _lookup(self, services: Services, auth: GraphAuth) -> dict[str, str]:
        if self.everything:
            return {folder_id: key for folder_id, key in _walk(services, auth, fresh=True)}
        names = folder_names(services, auth)
        return {folder_id: name for folder_id, name in names.items() if name in self.keys}


def watched_folders(services: Services, auth: GraphAuth) -> WatchedFolders:
    wanted = services.settings.mail_folders
    if tuple(wanted) != (ALL_FOLDERS,):
        return WatchedFolders(tuple(wanted))
    pairs = _walk(services, auth, fresh=False)
    keys = [key for _, key in pairs]
    if INBOX in keys:
        keys.remove(INBOX)
        keys.insert(0, INBOX)
    return WatchedFolders(tuple(keys), everything=True, ids=dict(pairs))


@dataclass
class _Listing:
    pairs: list[tuple[str, str]]
    until: dt.datetime


_listings: weakref.WeakKeyDictionary[Services, dict[str, _Listing]] = weakref.WeakKeyDictionary()
_listings_lock = threading.Lock()


def _walk(services: Services, auth: GraphAuth, *, fresh: bool) -> list[tuple[str, str]]:
    """(folder id, key) of every folder of the mailbox, parents before children; kept for
    ``FOLDER_LIST_TTL`` per mailbox unless ``fresh``."""
    now = services.clock.now()
    with _listings_lock:
        known = _listings.setdefault(services, {}).get(auth.account_id)
    if known is not None and known.until > now and not fresh:
        return known.pairs
    names = folder_names(services, auth)
    pairs: list[tuple[str, str]] = []
    pending: list[str | None] = [None]
    while pending and len(pairs) < MAX_WATCHED_FOLDERS:
        parent = pending.pop(0)
        for folder in services.mail.list_folders(auth, parent):
            folder_id = folder.get("id")
            if not isinstance(folder_id, str):
                continue
            pairs.append((folder_id, names.get(folder_id, folder_id)))
            if isinstance(folder.get("childFolderCount"), int) and folder["childFolderCount"] > 0:
                pending.append(folder_id)
    if pending:
        log.warning("account %s: watching the first %d folders only", auth.account_id, MAX_WATCHED_FOLDERS)
    with _listings_lock:
        cache = _listings.setdefault(services, {})
        if len(cache) > 10_000:
            cache.clear()
        cache[auth.account_id] = _Listing(pairs, now + FOLDER_LIST_TTL)
    return pairs


def locate(services: Services, auth: GraphAuth, message_ids: Sequence[str]) -> dict[str, str | None]:
    """The folder id each message is in now; None for one Graph no longer has (404).
    Reads by immutable id, 20 to a ``$batch``; a read still throttled raises
    ``ThrottledError`` (the round is retried from its saved place), another failure
    ``GraphError``."""
    found: dict[str, str | None] = {}
    ids = list(dict.fromkeys(message_ids))
    for start in range(0, len(ids), MAX_BATCH_REQUESTS):
        chunk = ids[start : start + MAX_BATCH_REQUESTS]
        requests = [
            BatchRequest(id=str(n), method="GET", url=f"/me/messages/{quote(mid, safe='')}?$select={LOCATE_FIELDS}")
            for n, mid in enumerate(chunk)
        ]
        for message_id, answer in zip(chunk, services.mail.batch(auth, requests), strict=True):
            if answer.status == 404:
                found[message_id] = None
            elif answer.status == 200 and isinstance((answer.body or {}).get("parentFolderId"), str):
                found[message_id] = (answer.body or {})["parentFolderId"]
            elif answer.status in (429, 503):
                raise ThrottledError(
                    f"Graph throttled locating moved mail of account {auth.account_id}",
                    answer.retry_after if answer.retry_after is not None else 5.0,
                )
            else:
                error = (answer.body or {}).get("error")
                code = error.get("code", "unknown") if isinstance(error, dict) else "unknown"
                raise GraphError(answer.status, str(code), "reading a message that left a watched folder failed")
    return found


# --- well-known folder ids, per mailbox ----------------------------------------------------


@dataclass
class _Names:
    by_id: dict[str, str]
    until: dt.datetime


class _FolderNames:
    """Folder id -> well-known name of each mailbox, looked up with one ``$batch`` (v1.0's
    mailFolder has no wellKnownName) and kept for ``FOLDER_NAMES_TTL``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[str, _Names] = {}

    def of(self, services: Services, auth: GraphAuth) -> dict[str, str]:
        now = services.clock.now()
        with self._lock:
            known = self._names.get(auth.account_id)
            if known is not None and known.until > now:
                return known.by_id
        requests = [
            BatchRequest(id=name, method="GET", url=f"/me/mailFolders/{name}?$select=id")
            for name in WELL_KNOWN_FOLDERS
        ]
        by_id: dict[str, str] = {}
        for answer in services.mail.batch(auth, requests):
            # A mailbox without one of them (no archive yet, say) answers 404 for it.
            folder_id = (answer.body or {}).get("id") if answer.status == 200 else None
            if isinstance(folder_id, str):
                by_id[folder_id] = answer.id
        with self._lock:
            if len(self._names) > 10_000:
                self._names.clear()
            self._names[auth.account_id] = _Names(by_id, now + FOLDER_NAMES_TTL)
        return by_id


_folder_names: weakref.WeakKeyDictionary[Services, _FolderNames] = weakref.WeakKeyDictionary()
_folder_names_lock = threading.Lock()


def folder_names(services: Services, auth: GraphAuth) -> dict[str, str]:
    with _folder_names_lock:
        names = _folder_names.get(services)
        if names is None:
            names = _folder_names[services] = _FolderNames()
    return names.of(services, auth)
