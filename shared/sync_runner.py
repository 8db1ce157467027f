"""Delta syncs under an account's lease, for any resource (``shared.resources``): who runs
a round, how long, and what happens to work that comes while it runs.

One account runs one round of a resource at a time: the ledger's sync lease under the
resource's sync key (``Resource.sync_key``; the mail's is the account id). The lease also
fences every write of a round (``MailLedger.commit``), is proved again after every Graph
call and before every publish (``shared.delta_round``), and a holder whose lease went stale
or was seized by a disconnect stops and writes nothing.

A round that does not fit in one invocation (``SYNC_TIME_BUDGET_SECONDS``) keeps its place
and hands the rest to the next invocation through queue ``mail-sync`` (whose jobs name
their resource); a resumed round ends with one more incremental round for the changes that
came meanwhile. Triggers that arrive while a round runs leave a pending mark; the holder
runs one more round for all of them, and hands pending work to the queue rather than
dropping it when it has run ``MAX_ROUNDS_PER_LEASE`` rounds or is out of time. Triggers of
this process join the running round instead (``shared.sync_joining``).

What a round is differs per resource and is passed in (``SyncTarget.rounds``): the watched
mail folders' rounds (``shared.sync``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.config import MAIL_SYNC_QUEUE
from shared.delta_round import LEASE_RENEW_AFTER, SyncLease, SyncResult
from shared.errors import InvalidInputError, ReauthRequiredError, UpstreamError
from shared.ledger import LeaseLostError
from shared.models import Account, AccountStatus
from shared.resources import MAIL, Resource, by_kind
from shared.retry import with_fresh_token
from shared.sync_joining import Joiners, joined, mark_served

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import GraphAuth

log = logging.getLogger(__name__)

LEASE_STALE_AFTER = dt.timedelta(seconds=60)
# How long a disconnect waits after seizing the lease from a running round, counted from
# that round's last proof: by then the round can no longer publish (LEASE_RENEW_AFTER plus
# a queue write's time).
PUBLISH_FENCE = LEASE_RENEW_AFTER + dt.timedelta(seconds=5)
MAX_ROUNDS_PER_LEASE = 20
_JOB_VERSION = 1
_monotonic = time.monotonic  # the budget's clock (tests replace it)

# The rounds of one resource for one account under a lease: (services, account, auth,
# result, emit_history, lease, notified_at) -> True when they ended with every deltaLink
# saved, False when they stopped for time with their place kept.
Rounds = Callable[
    ["Services", Account, "GraphAuth", SyncResult, bool, SyncLease, "dt.datetime | None"], bool
]


@dataclass(frozen=True)
class SyncTarget:
    """What a sync of one resource runs: its resource and its rounds."""

    resource: Resource
    rounds: Rounds


@dataclass(frozen=True)
class SyncJob:
    """A ``mail-sync`` message: run a sync of ``resource`` for the account."""

    account_id: str
    reason: str
    resource: Resource = MAIL


# --- queue mail-sync ---------------------------------------------------------------------


def request_sync(services: Services, account_id: str, *, reason: str, resource: Resource = MAIL) -> None:
    """Queue a delta sync of the account's resource (queue ``mail-sync``): the first round
    after a connect, or the rest of a round that did not fit in one invocation. A mail job
    names no resource (as jobs always did); others carry ``resource``."""
    document: dict[str, object] = {"v": _JOB_VERSION, "accountId": account_id, "reason": reason}
    if resource is not MAIL:
        document["resource"] = resource.kind.value
    services.queues.send(MAIL_SYNC_QUEUE, [json.dumps(document)])


def parse_sync_request(body: bytes | str) -> SyncJob:
    """The job of a ``mail-sync`` message; ``InvalidInputError`` if malformed."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInputError("sync job is not JSON") from None
    if not isinstance(document, dict) or document.get("v") != _JOB_VERSION:
        raise InvalidInputError("sync job is not a version 1 object")
    account_id, reason = document.get("accountId"), document.get("reason", "requested")
    if not isinstance(account_id, str) or not account_id or not isinstance(reason, str):
        raise InvalidInputError("sync job has no accountId")
    kind = document.get("resource", MAIL.kind.value)
    try:
        resource = by_kind(kind) if isinstance(kind, str) else None
    except ValueError:
        resource = None
    if resource is None:
        raise InvalidInputError("sync job names an unknown resource")
    return SyncJob(account_id, reason[:40], resource)


def parse_sync_job(body: bytes | str) -> tuple[str, str]:
    """(account id, reason) of a ``mail-sync`` message (``parse_sync_request`` in full)."""
    job = parse_sync_request(body)
    return job.account_id, job.reason


# --- one sync ------------------------------------------------------------------------------


def run_sync(
    services: Services,
    account_id: str,
    target: SyncTarget,
    *,
    reason: str,
    notified_at: dt.datetime | None = None,
    monotonic: Callable[[], float] | None = None,
    join: bool = False,
) -> SyncResult:
    """Bring the account's events of ``target.resource`` up to date. With ``join`` (a
    change notification's trigger), a call that finds a round of the same account and
    resource running in this process waits for the next round it runs instead of running
    one of its own (``shared.sync_joining``)."""
    if join:
        key = target.resource.sync_key(account_id)
        return joined(
            services, key, account_id, reason, notified_at,
            lambda state: _sync_once(services, account_id, target, reason, notified_at, monotonic, state),
        )
    return _sync_once(services, account_id, target, reason, notified_at, monotonic, None)


def _sync_once(
    services: Services,
    account_id: str,
    target: SyncTarget,
    reason: str,
    notified_at: dt.datetime | None,
    monotonic: Callable[[], float] | None,
    joiners: Joiners | None,
) -> SyncResult:
    result = SyncResult(account_id, reason)
    emit_history = services.settings.emit_history_on_connect

    def run(lease: SyncLease) -> bool:
        # Read under the lease: the deltaLink is the one the previous holder saved (or, in a
        # further round of this hold, the one our last round saved: no read needed).
        account = lease.account or services.accounts.get(account_id)
        lease.account = account
        if account is None:
            result.skipped = "unknown_account"
            return True
        if account.status is not AccountStatus.ACTIVE:
            result.skipped = "inactive"
            return True
        tried: list[Account] = []
        at = joiners.notified_at(notified_at) if joiners is not None else notified_at

        def rounds(auth: GraphAuth) -> bool:
            # Once more after a refused token: from the account as it is now.
            current = services.accounts.get(account_id) or account if tried else account
            tried.append(current)
            return target.rounds(services, current, auth, result, emit_history, lease, at)

        return with_fresh_token(services.tokens, account_id, rounds, lambda: services.tokens.graph_auth(account))

    try:
        with_lease(services, target.resource, result, run, monotonic=monotonic, joiners=joiners)
    except ReauthRequiredError:
        log.warning("sync of account %s skipped: it must sign in again", account_id)
        result.skipped = "reauth_required"
        if joiners is not None:
            joiners.done(result)
        return result
    except LeaseLostError:
        log.warning("sync of account %s stopped: its lease was taken over; nothing more written", account_id)
        result.skipped = "lease_lost"
        if joiners is not None:
            joiners.done(result)  # the new holder's round began after the joined triggers came
        return result
    except UpstreamError as error:
        _note_error(services, account_id, f"{type(error).__name__}: {error}")
        raise
    log.info(
        "%s sync of account %s (%s): %d created, %d updated, %d deleted in %d page(s)%s%s%s%s",
        target.resource.kind.value,
        account_id,
        reason,
        result.created,
        result.updated,
        result.deleted,
        result.pages,
        ", after 410 a full round" if result.restarted else "",
        ", resumed" if result.resumed else "",
        ", the rest queued" if result.handed_over else "",
        ", busy: the running round takes it" if result.skipped == "busy" else "",
    )
    return result


# --- the lease and the rounds it covers ------------------------------------------------


def with_lease(
    services: Services,
    resource: Resource,
    result: SyncResult,
    run: Callable[[SyncLease], bool],
    *,
    monotonic: Callable[[], float] | None = None,
    joiners: Joiners | None = None,
) -> None:
    """Run rounds under the account's lease: ``run`` returns False when it stopped for time
    with its place kept. Pending work is never dropped: it runs here, or goes to the queue.

    ``joiners`` (triggers of this process waiting for a round) learn when a round that
    began after they arrived has ended: ``begin`` comes before the lease is taken and
    before each further round, ``done`` once the round saved its deltaLink, found the
    lease busy (its holder runs one more round for the pending mark) or handed its rest
    to the queue."""
    ledger = services.ledger
    account_id = result.account_id
    key = resource.sync_key(account_id)
    holder = uuid.uuid4().hex
    now = services.clock.now()
    if joiners is not None:
        joiners.begin()
    if not ledger.acquire_lease(key, holder, now, LEASE_STALE_AFTER):
        result.skipped = "busy"
        if joiners is not None:
            joiners.done(result)
        return
    budget = float(getattr(services.settings, "sync_time_budget_seconds", 120))
    clock = monotonic or _monotonic
    lease = SyncLease(holder, now, clock() + budget, clock)
    try:
        extra_round = False
        for number in range(MAX_ROUNDS_PER_LEASE):
            if number and joiners is not None:
                joiners.begin()
            resumed_before = result.resumed
            began = services.clock.now()
            if not run(lease):
                # Let go first: the queued round must find the lease free, not mark it pending.
                ledger.release_lease(key, holder, abandon=True)
                _hand_over(services, resource, result, "continue")
                if joiners is not None:
                    joiners.done(result)
                return
            lease.rounds_done += 1
            if joiners is not None:
                joiners.done(result)
            if result.skipped is not None:
                ledger.release_lease(key, holder, abandon=True)
                return
            if lease.served:
                mark_served(services, key, began)
            # A round that went on from an earlier invocation took long: one more, for the
            # mail that arrived meanwhile and whose triggers may have been dropped with it.
            if result.resumed and not resumed_before and not extra_round:
                extra_round = True
            elif joiners is not None and joiners.waiting():
                pass  # triggers of this process came during the round: one more, same lease
            elif ledger.release_lease(key, holder):
                return
            if lease.out_of_time():
                break
        # Work is pending (another trigger marked the lease) but this invocation has run
        # its share: the queue runs it, rather than the pending mark being dropped.
        ledger.release_lease(key, holder, abandon=True)
        if joiners is not None:
            joiners.begin()
        _hand_over(services, resource, result, "pending")
        if joiners is not None:
            joiners.done(result)
    except LeaseLostError:
        raise  # not ours any more: nothing to give back
    except BaseException:
        try:
            ledger.release_lease(key, holder, abandon=True)
        except Exception:  # noqa: BLE001 - the original error matters more; the lease goes stale
            log.exception("could not release the sync lease of account %s", account_id)
        raise



def seize_lease(
    services: Services, key: str, *, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Take the sync lease of ``key`` (a sync key) whoever holds it, for good (a disconnect):
    a round running under it finds its next fenced write refused and writes nothing more.
    Returns once that round can no longer publish either: its last proof of the lease plus
    ``PUBLISH_FENCE``."""
    holder = "disconnect-" + uuid.uuid4().hex
    last_proof = services.ledger.seize_lease(key, holder, services.clock.now())
    if last_proof is None:
        return
    wait = (last_proof + PUBLISH_FENCE - services.clock.now()).total_seconds()
    if wait > 0:
        log.info("%s: a round was running; waiting %.1fs until it can publish no more", key, wait)
        sleep(min(wait, PUBLISH_FENCE.total_seconds()))


def _hand_over(services: Services, resource: Resource, result: SyncResult, reason: str) -> None:
    request_sync(services, result.account_id, reason=reason, resource=resource)
    result.handed_over = True


def _note_error(services: Services, account_id: str, message: str) -> None:
    """Record the failure on the account for operators; best effort."""
    try:
        account = services.accounts.get(account_id)
        if account is not None and account.status is not AccountStatus.DISCONNECTED:
            account.last_error = message[:500]
            services.accounts.save(account)
    except Exception:  # noqa: BLE001 - the sync error is what gets raised
        log.warning("could not record the last error of account %s", account_id)
