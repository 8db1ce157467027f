"""Renewing one subscription, by Graph's rules: the work the renewal run gives its runner.

``SubscriptionRenewal.renew`` takes one candidate from the expiry index (a
``RenewalJob``) and comes back with its ``Outcome``, or with ``Retry`` when Graph throttled
it (see ``shared.renewal`` for the run around it). On the way it keeps Graph's rules: no
PATCH within 10 minutes of a reauthorize (or of another PATCH) of the same subscription,
one request at a time per mailbox from this run, a refused access token replaced once; a
subscription Graph no longer knows (404) is recreated for the same resource and that
resource resynced by delta, and so is one due that ``needs_reissue`` (signed with a retired
key or without a nonce, or made for another resource path). Each subscription is renewed to its resource's lifetime
(``shared.resources``: a mail subscription's 10,080 minutes, a drive's 42,300, each less
the margin).
The renewed expiry is written under the ETag of the index's copy; the index entries are
written in batches (``ReindexBatches``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shared.errors import (
    ConcurrencyError,
    ConnectorError,
    GraphError,
    NotFoundError,
    ReauthRequiredError,
    ThrottledError,
)
from shared.models import Account, AccountStatus, Subscription, SubscriptionStatus
from shared.renewal_report import Outcome, RenewalReport
from shared.resources import MAIL, Resource
from shared.retry import update_with_etag, with_fresh_token
from shared.runner import KeyedGates, Retry
from shared.subscriptions import GRAPH_COOLDOWN, needs_reissue, parse_graph_datetime, resource_for

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import GraphAuth, JsonObject, SubscriptionStore

log = logging.getLogger(__name__)

# A PATCH within GRAPH_COOLDOWN of another also means somebody else just renewed it.
# Throttled items are retried later in the run, at most this many times; then the next run.
MAX_ATTEMPTS = 4
# Renewed subscriptions whose index entries are written together: one entity-group
# transaction per index partition (an hour's shard) and at most 100 operations; 400
# renewals spread over 16 shards make about 25 per transaction.
REINDEX_BATCH = 400

# (services, account, auth, resource) -> the resource's live subscription
Recreate = Callable[["Services", Account, "GraphAuth", Resource], Subscription]
Resync = Callable[..., object]  # (services, account_id, resource, *, reason): a delta sync


@dataclass
class RenewalJob:
    """One subscription being renewed, and its account once read."""

    subscription: Subscription
    account: Account | None = None
    attempts: int = 0


class _CannotRenew(Exception):
    """The subscription's account is gone or not active: the item is skipped."""


class SubscriptionRenewal:
    """Renews one subscription at a time, from any number of worker threads."""

    def __init__(
        self,
        services: Services,
        *,
        window: dt.timedelta,
        recreate: Recreate,
        resync: Resync,
        gates: KeyedGates,
        report: RenewalReport,
        index: ReindexBatches,
    ) -> None:
        self.services = services
        self.window = window
        self.recreate = recreate
        self.resync = resync
        self._gates = gates
        self._report = report
        self._index = index

    def renew_guarded(self, job: RenewalJob) -> Outcome | Retry:
        """Never raises: one bad item must not end the run."""
        subscription = job.subscription
        try:
            with self._report.throttles_of(self.services.graph), self._gates.hold(subscription.account_id):
                return self._renew(job)
        except Exception:  # noqa: BLE001 - one bad item must not end the run
            log.exception(
                "renewal: account %s subscription %s failed unexpectedly",
                subscription.account_id,
                subscription.subscription_id,
            )
            return Outcome.FAILED

    def _renew(self, job: RenewalJob) -> Outcome | Retry:
        now = self.services.clock.now()
        sub = job.subscription
        if job.attempts == 0:
            reason = self._not_due(sub, now)
            if reason:
                log.debug("renewal: subscription %s skipped: %s", sub.subscription_id, reason)
                return Outcome.SKIPPED
        job.attempts += 1
        try:
            if sub.status != SubscriptionStatus.ACTIVE:
                return self._recreate(job)
            if needs_reissue(self.services, sub):
                # Signed with a key being retired (or without a nonce), or made for another
                # resource path: a PATCH would keep that for another lifetime. Due now, it
                # is replaced instead, so a mailbox that gets no mail still leaves the
                # previous key within one lifetime.
                log.info(
                    "renewal: account %s subscription %s is re-issued under the current key and resource",
                    sub.account_id,
                    sub.subscription_id,
                )
                return self._recreate(job, Outcome.REISSUED)
            expires_at = resource_for(sub).expiry(now)
            try:
                answer = self._patch(job, expires_at)
            except NotFoundError:
                log.info(
                    "renewal: account %s subscription %s is gone from Graph; recreating",
                    sub.account_id,
                    sub.subscription_id,
                )
                return self._recreate(job)
        except _CannotRenew:
            return Outcome.SKIPPED
        except ReauthRequiredError:
            # The token provider has marked the account; it is skipped until reconnected.
            return Outcome.REAUTH_REQUIRED
        except ThrottledError as exc:
            self._report.count_throttled_error(self.services.graph)
            if job.attempts >= MAX_ATTEMPTS:
                return Outcome.DEFERRED
            return Retry(max(exc.retry_after, 0.0))
        except ConnectorError as exc:
            log.warning(
                "renewal: account %s subscription %s not renewed: %s",
                sub.account_id,
                sub.subscription_id,
                describe(exc),
            )
            return Outcome.FAILED
        new_expiry = parse_graph_datetime(answer.get("expirationDateTime"), expires_at)
        self._store_renewed(sub, new_expiry, now)
        return Outcome.RENEWED

    def _account(self, job: RenewalJob) -> Account:
        """The subscription's account, read once per job; ``_CannotRenew`` when there is no
        active account to renew for (gone, disconnected, waiting for a new sign-in)."""
        if job.account is None:
            sub = job.subscription
            account = self.services.accounts.get(sub.account_id)
            if account is None or account.status != AccountStatus.ACTIVE:
                self._skip_inactive(sub, account, self.services.clock.now())
                raise _CannotRenew
            job.account = account
        return job.account

    def _patch(self, job: RenewalJob, expires_at: dt.datetime) -> JsonObject:
        graph, tokens = self.services.graph, self.services.tokens
        sub = job.subscription
        # An access token at hand is all a PATCH needs: the account is read only when its
        # token must be refreshed (the refresh needs it). An account marked for a new sign-in
        # forgets its token here; one marked by another instance is renewed while the token
        # we hold lives (an hour at most), which keeps its mail flowing meanwhile.
        # A refused token is forgotten, and the PATCH sent once more with a fresh one.
        return with_fresh_token(
            tokens,
            sub.account_id,
            lambda auth: graph.renew_subscription(auth, sub.subscription_id, expires_at),
            lambda: tokens.cached_auth(sub.account_id) or tokens.graph_auth(self._account(job)),
        )

    def _not_due(self, sub: Subscription, now: dt.datetime) -> str:
        if sub.status != SubscriptionStatus.ACTIVE:
            return ""  # to be recreated: neither a PATCH nor a reauthorize
        if sub.expires_at >= now + self.window:
            return "not expiring yet"
        if sub.last_renewed_at is not None and now - sub.last_renewed_at < GRAPH_COOLDOWN:
            return "renewed less than 10 minutes ago"
        if sub.last_reauthorized_at is not None and now - sub.last_reauthorized_at < GRAPH_COOLDOWN:
            return "reauthorized less than 10 minutes ago"
        return ""

    def _skip_inactive(self, sub: Subscription, account: Account | None, now: dt.datetime) -> Outcome:
        # No token to renew with. Once expired, Graph has dropped it: forget the record so
        # the expiry index does not offer it again; a reconnect creates a new one.
        if account is None or sub.expires_at <= now:
            self.services.subscriptions.delete(sub.account_id, sub.subscription_id)
        return Outcome.SKIPPED

    def _recreate(self, job: RenewalJob, outcome: Outcome = Outcome.RECREATED) -> Outcome | Retry:
        services = self.services
        store = services.subscriptions
        # Rare, and it replaces the record: it starts from the record, not the index's copy.
        current = store.reread(job.subscription)
        if current is None:
            return Outcome.SKIPPED  # deleted meanwhile (a disconnect): nothing to recreate
        job.subscription = sub = current
        account = self._account(job)
        auth = services.tokens.graph_auth(account)
        if sub.status == SubscriptionStatus.ACTIVE:
            # Recorded as removed first: should recreation fail, the record stays in the
            # expiry index and the next run tries again.
            sub.status = SubscriptionStatus.REMOVED
            job.subscription = sub = store.save(sub)
        resource = resource_for(sub)
        try:
            created = self.recreate(services, account, auth, resource)
        except ConnectorError:
            self._keep_in_index(sub, resource)
            raise
        log.info(
            "renewal: account %s %s subscription %s replaced by %s",
            sub.account_id,
            resource.kind.value,
            sub.subscription_id,
            created.subscription_id,
        )
        resync_account(services, self.resync, account.account_id, "subscription_recreated", resource)
        return outcome

    def _keep_in_index(self, sub: Subscription, resource: Resource) -> None:
        """After a failed recreation: the old record may be deleted already (recreation
        starts by discarding it). Recorded again as removed, unless a live one of the same
        resource exists, it stays in the expiry index and the next run tries again sooner
        than the sweep."""
        store = self.services.subscriptions
        try:
            if store.get(sub.account_id, sub.subscription_id) is not None:
                return
            if any(
                s.status == SubscriptionStatus.ACTIVE and resource.owns_path(s.resource)
                for s in store.for_account(sub.account_id)
            ):
                return
            sub.etag, sub.indexed_expires_at = None, None
            store.save(sub)
        except ConnectorError as exc:
            log.warning(
                "renewal: subscription %s not recorded again (%s); the sweep will replace it",
                sub.subscription_id,
                describe(exc),
            )

    def _store_renewed(self, sub: Subscription, expires_at: dt.datetime, now: dt.datetime) -> None:
        store = self.services.subscriptions

        def change(current: Subscription) -> bool:
            current.expires_at = max(current.expires_at, expires_at)
            current.last_renewed_at = now
            current.status = SubscriptionStatus.ACTIVE
            return True

        def write(current: Subscription) -> Subscription:
            saved = store.save(current, defer_index=True)
            self._index.add(saved)  # written in this worker when a batch is full
            return saved

        try:
            # A refused write: somebody else wrote (the lifecycle handling, say), or the
            # index's copy was stale; their record it is, with its changes kept. None: it was
            # deleted meanwhile (a disconnect), nothing to keep.
            update_with_etag(lambda: store.reread(sub), change, write, first=sub, attempts=3)
        except ConcurrencyError:
            log.warning("renewal: subscription %s renewed but its new expiry was not stored", sub.subscription_id)


class ReindexBatches:
    """The index entries of renewed subscriptions, written a batch at a time (by the worker
    that fills one: the run's loop never waits on it). Until then the old entry, with its
    old copy, still offers the subscription: should a run not get to write them all
    (``behind``), it gives its lease back unfinished and the next run rechecks."""

    def __init__(self, store: SubscriptionStore, batch: int = REINDEX_BATCH) -> None:
        self._store = store
        self._batch = batch
        self._lock = threading.Lock()
        self._waiting: list[Subscription] = []
        self.behind = False  # some renewed subscriptions' index entries were not written

    def add(self, renewed: Subscription) -> None:
        with self._lock:
            self._waiting.append(renewed)
        self._reindex()

    def flush(self) -> None:
        """Writes what is waiting, full batch or not (at the end of the renewals)."""
        self._reindex(everything=True)

    def _reindex(self, *, everything: bool = False) -> None:
        with self._lock:
            if not self._waiting or (len(self._waiting) < self._batch and not everything):
                return
            batch, self._waiting = self._waiting, []
        try:
            self._store.reindex(batch)
        except ConnectorError as exc:
            self.behind = True
            log.warning("renewal: %d index entries not written yet (%s)", len(batch), describe(exc))


ResyncOutcome = Literal["synced", "reauth_required", "failed"]


def resync_account(
    services: Services, resync: Resync, account_id: str, reason: str, resource: Resource = MAIL
) -> ResyncOutcome:
    """A delta sync of the account's ``resource`` (a recreated subscription, a quiet
    account): "synced", "reauth_required" (the sync found the refresh token dead and marked
    the account) or "failed", which is not lost: the resource stays due, so the sweep tries
    again."""
    try:
        result = resync(services, account_id, resource, reason=reason)
    except ReauthRequiredError:
        return "reauth_required"
    except ConnectorError as exc:
        log.warning(
            "renewal: account %s %s delta sync (%s) failed: %s", account_id, resource.kind.value, reason, describe(exc)
        )
        return "failed"
    if getattr(result, "skipped", None) == "reauth_required":
        return "reauth_required"
    return "synced"


def describe(exc: Exception) -> str:
    """An error as a log line may show it: its kind, and Graph's status and code."""
    if isinstance(exc, GraphError):
        return f"Graph {exc.status} {exc.code}"
    return type(exc).__name__
