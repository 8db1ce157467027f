"""Mailbox sync: run the inbox delta query and publish one event per changed message.

Notifications only say "something changed" (and may be dropped, doubled or reordered);
the delta query is the source of truth (docs/graph-notes.md "Mail delta query"). A round starts
from the account's stored deltaLink, follows ``@odata.nextLink`` pages and ends with a new
deltaLink, saved with the account's ETag. Events of a page are published before the page
is marked in the ledger, and the deltaLink is saved last: a crash anywhere means the
round runs again from the old link and the ledger filters what was already published.
At most one event can be published twice (a crash between publish and mark), with the
same CloudEvent id; concurrent triggers cannot double anything because one account runs
one round at a time (the ledger's sync lease).

created / updated / deleted (delta does not say which):
- a message with no ledger mark is ``created`` when it was received after the account
  connected (``connected_at``); an older one is history: ``updated`` when it shows up in
  an incremental round (it changed), ignored in a first or full round;
- a mark with another ``changeKey`` is ``updated``; the same ``changeKey`` is a replay;
- ``@removed`` is ``deleted``, once; after ``410 Gone`` a full round runs and the messages
  of the ledger it no longer returns are ``deleted``.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.config import MAIL_EVENT_QUEUE
from shared.errors import (
    ConcurrencyError,
    DeltaTokenExpiredError,
    GraphError,
    ReauthRequiredError,
    UpstreamError,
)
from shared.events import CREATED, DELETED, UPDATED, encode_event, mail_event
from shared.ledger import LedgerMark
from shared.models import Account, AccountStatus

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import GraphAuth

log = logging.getLogger(__name__)

FOLDER = "inbox"
LEASE_STALE_AFTER = dt.timedelta(seconds=60)
LEASE_RENEW_AFTER = LEASE_STALE_AFTER / 4
MAX_ROUNDS_PER_LEASE = 20
_SAVE_ATTEMPTS = 5


class LeaseLostError(ConcurrencyError):
    """Another worker took over the account's sync lease (ours had gone stale)."""


class _Mode:
    FIRST = "first"  # no deltaLink yet: the connect's first round
    INCREMENTAL = "incremental"  # from the stored deltaLink
    FULL = "full"  # after 410 Gone: everything again, publish only what is new


@dataclass
class SyncResult:
    account_id: str
    reason: str
    created: int = 0
    updated: int = 0
    deleted: int = 0
    rounds: int = 0
    pages: int = 0
    restarted: bool = False  # the deltaLink had expired (410) and a full round ran
    skipped: str | None = None  # why nothing ran: unknown_account, inactive, reauth_required, busy

    @property
    def published(self) -> int:
        return self.created + self.updated + self.deleted


def record_initial_delta(
    services: Services, account: Account, auth: GraphAuth, *, emit_history: bool
) -> Account:
    """The connect's first delta round: follow the pages, store the deltaLink.

    History (mail received before ``account.connected_at``) is published only with
    ``emit_history``; mail that arrived since the connect started is published as created,
    so nothing that came in while the subscription was being set up is missed. Returns the
    saved account (unchanged when another round holds the lease: that one records it).
    """
    result = SyncResult(account.account_id, "connect")

    def run(lease: _Lease) -> None:
        current = services.accounts.get(account.account_id) or account
        _rounds(services, current, auth, result, emit_history, lease)

    _with_lease(services, account.account_id, result, run)
    return services.accounts.get(account.account_id) or account


def sync_mailbox(
    services: Services, account_id: str, *, reason: str, notified_at: dt.datetime | None = None
) -> SyncResult:
    """Bring the account's events up to date with its inbox (processing, lifecycle, renewal
    catch-up, operator resync). Returns what was published, or why nothing ran.

    ``ReauthRequiredError`` is absorbed (the token provider marked the account); Graph and
    storage failures propagate so that the queue retries.
    """
    result = SyncResult(account_id, reason)
    emit_history = services.settings.emit_history_on_connect

    def run(lease: _Lease) -> None:
        # Read under the lease: the deltaLink is the one the previous holder saved.
        account = services.accounts.get(account_id)
        if account is None:
            result.skipped = "unknown_account"
        elif account.status is not AccountStatus.ACTIVE:
            result.skipped = "inactive"
        else:
            auth = services.tokens.graph_auth(account)
            try:
                _rounds(services, account, auth, result, emit_history, lease, notified_at=notified_at)
            except GraphError as error:
                if error.status != 401:
                    raise
                # The cached access token was refused (revoked, say): once more with a fresh one,
                # whose refresh tells a dead refresh token (ReauthRequiredError) from a hiccup.
                forget = getattr(services.tokens, "forget", None)
                if forget is not None:
                    forget(account_id)
                auth = services.tokens.graph_auth(account)
                _rounds(services, account, auth, result, emit_history, lease, notified_at=notified_at)

    try:
        _with_lease(services, account_id, result, run)
    except ReauthRequiredError:
        log.warning("sync of account %s skipped: it must sign in again", account_id)
        result.skipped = "reauth_required"
        return result
    except UpstreamError as error:
        _note_error(services, account_id, f"{type(error).__name__}: {error}")
        raise
    log.info(
        "sync of account %s (%s): %d created, %d updated, %d deleted in %d page(s)%s%s",
        account_id,
        reason,
        result.created,
        result.updated,
        result.deleted,
        result.pages,
        ", after 410 a full round" if result.restarted else "",
        ", busy: the running round takes it" if result.skipped == "busy" else "",
    )
    return result


@dataclass
class _Lease:
    holder: str
    renewed_at: dt.datetime


def _with_lease(
    services: Services, account_id: str, result: SyncResult, run: Callable[[_Lease], None]
) -> None:
    ledger = services.ledger
    holder = uuid.uuid4().hex
    now = services.clock.now()
    if not ledger.acquire_lease(account_id, holder, now, LEASE_STALE_AFTER):
        result.skipped = "busy"
        return
    lease = _Lease(holder, now)
    try:
        for _ in range(MAX_ROUNDS_PER_LEASE):
            run(lease)
            if ledger.release_lease(account_id, holder):
                return
        ledger.release_lease(account_id, holder, abandon=True)
    except BaseException:
        try:
            ledger.release_lease(account_id, holder, abandon=True)
        except Exception:  # noqa: BLE001 - the original error matters more; the lease goes stale
            log.exception("could not release the sync lease of account %s", account_id)
        raise


def _rounds(
    services: Services,
    account: Account,
    auth: GraphAuth,
    result: SyncResult,
    emit_history: bool,
    lease: _Lease,
    *,
    notified_at: dt.datetime | None = None,
) -> None:
    if account.delta_link is None:
        mode = _Mode.FIRST
    else:
        mode = _Mode.INCREMENTAL
    round_ = _Round(services, account, auth, result, mode, emit_history, lease)
    try:
        delta_link = round_.run(account.delta_link)
    except DeltaTokenExpiredError:
        log.warning("deltaLink of account %s expired (410): full round", account.account_id)
        result.restarted = True
        round_ = _Round(services, account, auth, result, _Mode.FULL, emit_history, lease)
        delta_link = round_.run(None)
        round_.publish_vanished()
    result.rounds += 1
    _save_delta_link(services, account, delta_link, notified_at)


class _Round:
    """One delta round of one account, page by page."""

    def __init__(
        self,
        services: Services,
        account: Account,
        auth: GraphAuth,
        result: SyncResult,
        mode: str,
        emit_history: bool,
        lease: _Lease,
    ) -> None:
        self.lease = lease
        self.services = services
        self.account = account
        self.auth = auth
        self.result = result
        self.mode = mode
        self.emit_history = emit_history
        self.ledger = services.ledger
        self.baseline = _baseline(account)
        self.returned: set[str] = set()

    def run(self, link: str | None) -> str:
        while True:
            self._keep_lease()
            page = self.services.graph.delta_page(self.auth, link, folder=FOLDER)
            self.result.pages += 1
            self.publish(page.items)
            if page.next_link:
                link = page.next_link
            elif page.delta_link:
                return page.delta_link
            else:
                raise UpstreamError("delta page without nextLink or deltaLink")

    def _keep_lease(self) -> None:
        # Renewed well before it could look stale to another worker, not on every page.
        now = self.services.clock.now()
        if now - self.lease.renewed_at < LEASE_RENEW_AFTER:
            return
        if not self.ledger.renew_lease(self.account.account_id, self.lease.holder, now):
            raise LeaseLostError(f"sync lease of account {self.account.account_id} was taken over")
        self.lease.renewed_at = now

    def publish(self, items: Iterable[dict[str, Any]]) -> None:
        items = [item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]
        if not items:
            return
        ids = [item["id"] for item in items]
        if self.mode == _Mode.FULL:
            self.returned.update(item["id"] for item in items if "@removed" not in item)
        known = self.ledger.marks(self.account.account_id, ids)
        events: list[str] = []
        marks: dict[str, LedgerMark] = {}
        now = self.services.clock.now()
        for item in items:
            message_id = item["id"]
            mark = marks.get(message_id) or known.get(message_id)
            change = self.classify(item, mark)
            if change is None:
                continue
            events.append(encode_event(mail_event(self.account, item, change, folder=FOLDER, now=now)))
            change_key = item.get("changeKey") if isinstance(item.get("changeKey"), str) else None
            marks[message_id] = LedgerMark(message_id, change_key, removed=change == DELETED)
            setattr(self.result, change, getattr(self.result, change) + 1)
        self._emit(events, list(marks.values()))

    def classify(self, item: dict[str, Any], mark: LedgerMark | None) -> str | None:
        if "@removed" in item:
            return None if mark is not None and mark.removed else DELETED
        if mark is not None and not mark.removed:
            change_key = item.get("changeKey")
            return None if change_key is not None and change_key == mark.change_key else UPDATED
        if self._is_new(item):
            return CREATED
        if self.mode == _Mode.INCREMENTAL:
            return UPDATED
        return CREATED if self.mode == _Mode.FIRST and self.emit_history else None

    def _is_new(self, item: dict[str, Any]) -> bool:
        if self.baseline is None:
            return self.mode != _Mode.FIRST
        received = _parse_time(item.get("receivedDateTime"))
        return received is not None and received >= self.baseline

    def publish_vanished(self) -> None:
        """After a full round: ledger messages it did not return were deleted meanwhile."""
        gone = [
            mid for mid in self.ledger.live_message_ids(self.account.account_id) if mid not in self.returned
        ]
        for start in range(0, len(gone), 100):
            self.publish({"id": mid, "@removed": {"reason": "deleted"}} for mid in gone[start : start + 100])

    def _emit(self, events: list[str], marks: list[LedgerMark]) -> None:
        if events:
            self.services.queues.send(MAIL_EVENT_QUEUE, events)
        if marks:
            self.ledger.record(self.account.account_id, marks)


def _baseline(account: Account) -> dt.datetime | None:
    # receivedDateTime has whole seconds: compare with the connect time's second.
    if account.connected_at is None:
        return None
    return account.connected_at.astimezone(dt.UTC).replace(microsecond=0)


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def _save_delta_link(
    services: Services, account: Account, delta_link: str, notified_at: dt.datetime | None
) -> None:
    """Store the new deltaLink with the account's ETag; on a conflict (another writer changed
    another field) reload and apply again: we hold the sync lease, our link is the latest."""
    current: Account | None = account
    for _ in range(_SAVE_ATTEMPTS):
        if current is None:
            return  # disconnected meanwhile
        current.delta_link = delta_link
        current.last_sync_at = services.clock.now()
        current.last_error = None
        if notified_at is not None and (
            current.last_notification_at is None or notified_at > current.last_notification_at
        ):
            current.last_notification_at = notified_at
        try:
            services.accounts.save(current)
            return
        except ConcurrencyError:
            current = services.accounts.get(account.account_id)
    raise ConcurrencyError(f"account {account.account_id} kept changing while its deltaLink was saved")


def _note_error(services: Services, account_id: str, message: str) -> None:
    """Record the failure on the account for operators; best effort."""
    try:
        account = services.accounts.get(account_id)
        if account is not None:
            account.last_error = message[:500]
            services.accounts.save(account)
    except Exception:  # noqa: BLE001 - the sync error is what gets raised
        log.warning("could not record the last error of account %s", account_id)
