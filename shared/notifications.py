"""Processing of a notification trigger (queue ``graph-notifications``).

The webhook queued one trigger per account (``shared.webhook``): the subscriptions that
said "something changed" and the lifecycle events received. Here, for that account:
1. every subscription named must be recorded for the account (one point read each), and
   the nonce its clientState carried must be the one recorded with it: a notification of
   a deleted or foreign subscription, or one that replays the clientState of an earlier
   subscription of the account, publishes nothing (a subscription recorded before nonces
   were kept has none, and is accepted on its clientState's HMAC alone);
2. lifecycle events are acted on (docs/graph-notes.md "Lifecycle notifications"), each for
   the resource its subscription is of (``shared.resources``: mail, the drive):
   ``reauthorizationRequired`` -> reauthorize (or PATCH when Graph refuses),
   ``subscriptionRemoved`` -> renew it if Graph still has it (a replay), else recreate
   it, then resync that resource,
   ``missed`` -> resync that resource. Graph sends drives ``reauthorizationRequired``
   only; the other two, should they come for a drive subscription, are handled the same
   way for the drive;
3. one delta sync per resource whose subscription changed or had a lifecycle event
   covers every change of the trigger: the mail's (``shared.sync.sync_mailbox``), the
   drive's (``shared.resource_sync.sync_resource``), each under its own sync key;
4. a subscription whose clientState was signed with another key than ``CLIENT_STATE_KEY``
   (the previous one, during a rotation), that has no nonce recorded (created before
   nonces were kept), that was created without immutable ids, or whose resource is not the
   one ``MAIL_FOLDERS`` needs (``shared.subscriptions.is_current``) is re-issued once the
   sync of its resource has run: deleted in Graph, created anew for the same resource
   under the current key with a nonce, then that resource is synced again for what arrived
   in between. Active mailboxes and drives thus finish a rotation, or the move to nonces,
   on their next notification.
Transient failures (throttling, Graph 5xx, storage) propagate so the queue retries the
message and finally moves it to ``graph-notifications-poison``; a dead refresh token
marks the account ``reauth_required`` and ends the work for it. A lifecycle event that
fails for good (Graph refuses it with a 4xx) is logged and counted, and the rest of the
trigger still runs: one bad item never takes the valid work of its trigger with it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from shared.errors import ConnectorError, GraphError, InvalidInputError, NotFoundError, ReauthRequiredError
from shared.models import Account, AccountStatus, Subscription, SubscriptionStatus
from shared.resource_sync import sync_resource
from shared.resources import MAIL, Resource, ResourceKind, resource_of
from shared.subscriptions import GRAPH_COOLDOWN, needs_reissue, resource_for
from shared.sync import SyncResult, served_already, sync_mailbox
from shared.webhook import ORIGIN, NotificationTrigger

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import GraphAuth

log = logging.getLogger(__name__)

# Graph: do not send both a reauthorize and a PATCH for one subscription within 10 minutes.
REAUTHORIZE_QUIET_PERIOD = GRAPH_COOLDOWN
# Subscription records read for change notifications, kept this long per process.
RECORD_CACHE_TTL = dt.timedelta(seconds=30)
RECORD_CACHE_SIZE = 65_536


@dataclass
class TriggerOutcome:
    account_id: str
    unknown_subscriptions: int = 0
    # Notifications whose clientState is not the one of the subscription they name.
    stale_client_states: int = 0
    rejected: int = 0  # entries whose subscription id is not a Graph id
    lifecycle_handled: list[str] = field(default_factory=list)
    lifecycle_failed: list[str] = field(default_factory=list)
    reissued: int = 0  # subscriptions re-issued under the current key
    gap_sync: SyncResult | None = None  # the sync after a re-issue
    sync: SyncResult | None = None  # the mail's
    # The syncs of the other resources whose subscriptions changed or had a lifecycle
    # event (the drive's), by kind; and their syncs after a re-issue.
    resource_syncs: dict[ResourceKind, SyncResult] = field(default_factory=dict)
    resource_gap_syncs: dict[ResourceKind, SyncResult] = field(default_factory=dict)
    dropped: str | None = None  # why the whole trigger was dropped

    @property
    def published(self) -> int:
        syncs = (self.sync, self.gap_sync, *self.resource_syncs.values(), *self.resource_gap_syncs.values())
        return sum(s.published for s in syncs if s is not None)


def process_trigger(services: Services, trigger: NotificationTrigger) -> TriggerOutcome:
    outcome = TriggerOutcome(trigger.account_id, rejected=trigger.rejected)
    account_id = trigger.account_id
    if trigger.rejected:
        log.warning("account %s: %d trigger entries without a Graph subscription id ignored", account_id, trigger.rejected)
    # Subscriptions are stored under their account: an unknown account has none recorded.
    changed = False
    # The resources whose subscriptions changed; one the connector does not make (a path
    # ``resource_of`` does not know) speaks of the mail, as every subscription once did.
    resources: dict[ResourceKind, Resource] = {}
    outdated: dict[str, Subscription] = {}
    for change in trigger.changed:
        subscription = _recorded(services, account_id, change.subscription_id, outcome, cached=True)
        if subscription is False:
            continue
        if subscription is None:
            outcome.unknown_subscriptions += 1
        elif not issued_for(subscription, change.nonce):
            outcome.stale_client_states += 1
        else:
            changed = True
            resource = resource_of(subscription.resource) or MAIL
            resources.setdefault(resource.kind, resource)
            if needs_reissue(services, subscription):
                outdated[subscription.subscription_id] = subscription
    if outcome.unknown_subscriptions:
        log.warning(
            "account %s: %d notified subscription(s) are not recorded for it; ignored",
            account_id,
            outcome.unknown_subscriptions,
        )
    if outcome.stale_client_states:
        log.warning(
            "account %s: %d notification(s) carry the clientState of another subscription; ignored",
            account_id,
            outcome.stale_client_states,
        )
    if not trigger.lifecycle:
        if changed:  # the hot path: the sync reads the account (and checks its status) itself
            _sync_changed(services, trigger, outcome, resources.values())
            _reissue_outdated(services, trigger, outcome, list(outdated.values()))
        return outcome

    account = services.accounts.get(account_id)
    if account is None:
        outcome.dropped = "unknown account"
        return outcome
    if account.status is not AccountStatus.ACTIVE:
        outcome.dropped = f"account is {account.status.value}"
        return outcome

    resync: list[Resource] = []  # the resources to sync once the events are handled
    for signal in trigger.lifecycle:
        subscription = _recorded(services, account.account_id, signal.subscription_id, outcome)
        if subscription is False:
            continue
        if subscription is None:
            outcome.unknown_subscriptions += 1
            log.warning(
                "account %s: lifecycle %s for unrecorded subscription %s ignored",
                account.account_id,
                signal.event,
                signal.subscription_id,
            )
            continue
        if not issued_for(subscription, signal.nonce):
            outcome.stale_client_states += 1
            log.warning(
                "account %s: lifecycle %s for subscription %s carries another subscription's clientState; ignored",
                account.account_id,
                signal.event,
                signal.subscription_id,
            )
            continue
        resource = resource_for(subscription)
        try:
            if _handle_lifecycle(services, account, subscription, signal.event, resource):
                _add(resync, resource)
        except ReauthRequiredError:
            outcome.dropped = "account must sign in again"
            return outcome
        except GraphError as error:
            if error.transient:
                raise
            # Refused for good: retrying the message would fail again, and take the sync
            # of this trigger (and the other events) with it. A resync covers the mail.
            log.warning(
                "account %s: lifecycle %s for subscription %s failed (%s %s); going on",
                account.account_id,
                signal.event,
                signal.subscription_id,
                error.status,
                error.code,
            )
            outcome.lifecycle_failed.append(signal.event)
            _add(resync, resource)
            continue
        outcome.lifecycle_handled.append(signal.event)

    mail_changed = MAIL.kind in resources
    if mail_changed or resync:
        reason = "notification" if mail_changed and not resync else "lifecycle"
        if mail_changed:
            _add(resync, MAIL)
        _sync_each(services, account_id, resync, reason, _notified_at(services, trigger), outcome)
        if outdated:  # not one a lifecycle event above replaced already
            current = {s.subscription_id for s in services.subscriptions.for_account(account_id)}
            outdated = {k: v for k, v in outdated.items() if k in current}
        _reissue_outdated(services, trigger, outcome, list(outdated.values()))
    # The other resources that changed, unless a lifecycle event's resync covered them.
    others = [r for r in resources.values() if r is not MAIL and r not in resync]
    _sync_changed(services, trigger, outcome, others, join=False)
    return outcome


def _sync_changed(
    services: Services,
    trigger: NotificationTrigger,
    outcome: TriggerOutcome,
    resources: Iterable[Resource],
    *,
    join: bool = True,
) -> None:
    """One delta sync of each resource (the mail's on ``outcome.sync``, the others' on
    ``outcome.resource_syncs``). A trigger that a finished round of this process served
    already (that round began after the trigger came, and ended with its deltaLink saved)
    costs nothing (``shared.sync_joining``), judged by the resource's own sync key."""
    account_id = trigger.account_id
    notified_at = _notified_at(services, trigger)
    for resource in resources:
        if (
            join
            and trigger.received_at_ms is not None
            and served_already(
                services, resource.sync_key(account_id), notified_at, same_clock=trigger.origin == ORIGIN
            )
        ):
            result = SyncResult(account_id, "notification", joined=True)
        elif resource is MAIL:
            result = sync_mailbox(services, account_id, reason="notification", notified_at=notified_at, join=join)
        else:
            result = sync_resource(
                services, account_id, resource, reason="notification", notified_at=notified_at, join=join
            )
        if resource is MAIL:
            outcome.sync = result
        else:
            outcome.resource_syncs[resource.kind] = result
        if result.skipped in ("unknown_account", "inactive"):
            outcome.dropped = result.skipped


def _recorded(
    services: Services, account_id: str, subscription_id: str, outcome: TriggerOutcome, *, cached: bool = False
) -> Subscription | None | Literal[False]:
    """The subscription's record, None when there is none, False when the id cannot be one
    (the store refuses it as a key): counted, and the trigger's other entries go on.

    With ``cached`` (change notifications), a record read less than ``RECORD_CACHE_TTL``
    ago in this process is used again: a burst of one mailbox's mail costs one point read,
    not one per trigger. At worst a change notification of a subscription deleted within
    that time still runs a delta round, which publishes only what the mailbox really
    changed. Lifecycle events always read the record: they act on it."""
    records = services.subscription_records
    key = (account_id, subscription_id)
    now = services.clock.now()
    if cached:
        hit = records.get(key)
        if hit is not None and now - hit[1] < RECORD_CACHE_TTL:
            return hit[0]
    try:
        subscription = services.subscriptions.get(account_id, subscription_id)
    except InvalidInputError:
        outcome.rejected += 1
        log.warning("account %s: a trigger entry names an impossible subscription id; ignored", account_id)
        return False
    if subscription is None:
        records.pop(key, None)
    else:
        if len(records) >= RECORD_CACHE_SIZE:
            records.clear()
        records[key] = (subscription, now)
    return subscription


def _forget_record(services: Services, subscription: Subscription) -> None:
    services.subscription_records.pop((subscription.account_id, subscription.subscription_id), None)


def _reissue_outdated(
    services: Services, trigger: NotificationTrigger, outcome: TriggerOutcome, outdated: list[Subscription]
) -> None:
    """Replace ``outdated`` subscriptions once the sync ran; then sync what fell in the gap.

    Best effort: the trigger's changes are published already, and a subscription that could
    not be replaced now is tried again on its next notification (or is recreated by the
    renewal's sweep if it was deleted and its replacement failed).
    """
    # Only those whose resource's sync ran: their changes are published.
    outdated = [s for s in outdated if _synced(outcome, resource_for(s))]
    if not outdated:
        return
    account = services.accounts.get(trigger.account_id)
    if account is None or account.status is not AccountStatus.ACTIVE:
        return
    try:
        auth = services.tokens.graph_auth(account)
        for subscription in outdated:
            _recreate(services, account, subscription, auth)
            outcome.reissued += 1
    except (ConnectorError, OSError) as error:
        log.warning(
            "account %s: re-issuing a subscription under the current clientState key failed (%s); "
            "tried again on its next notification",
            account.account_id,
            type(error).__name__,
        )
    if outcome.reissued:
        resources: list[Resource] = []
        for subscription in outdated[: outcome.reissued]:
            _add(resources, resource_for(subscription))
        _sync_each(services, account.account_id, resources, "lifecycle", _notified_at(services, trigger), outcome, gap=True)


def _synced(outcome: TriggerOutcome, resource: Resource) -> bool:
    """Whether this trigger's sync of ``resource`` ran (not skipped)."""
    result = outcome.sync if resource is MAIL else outcome.resource_syncs.get(resource.kind)
    return result is not None and result.skipped is None


def _add(resources: list[Resource], resource: Resource) -> None:
    """``resource`` among the ones to sync, once, mail first (the order of ``shared.resources``)."""
    if resource not in resources:
        resources.append(resource)
        resources.sort(key=lambda r: r is not MAIL)


def _sync_each(
    services: Services,
    account_id: str,
    resources: list[Resource],
    reason: str,
    notified_at: dt.datetime,
    outcome: TriggerOutcome,
    *,
    gap: bool = False,
) -> None:
    """One delta sync per resource (``shared.resource_sync``): the mail's result goes to
    ``outcome.sync``, the others' to ``outcome.resource_syncs`` (with ``gap``, after a
    re-issue: ``gap_sync`` and ``resource_gap_syncs``)."""
    for resource in resources:
        result = sync_resource(services, account_id, resource, reason=reason, notified_at=notified_at)
        if resource is MAIL:
            if gap:
                outcome.gap_sync = result
            else:
                outcome.sync = result
        else:
            (outcome.resource_gap_syncs if gap else outcome.resource_syncs)[resource.kind] = result


def issued_for(subscription: Subscription, nonce: str | None) -> bool:
    """Whether a clientState carrying ``nonce`` was issued for ``subscription``.

    Unknown on either side means yes: a subscription recorded before nonces were kept, or
    a trigger queued before they were, has only its clientState's HMAC to go by.
    """
    if subscription.client_state_nonce is None or nonce is None:
        return True
    return hmac.compare_digest(subscription.client_state_nonce.encode(), nonce.encode("utf-8", "replace"))


def _notified_at(services: Services, trigger: NotificationTrigger) -> dt.datetime:
    if trigger.received_at_ms is None:
        return services.clock.now()
    return dt.datetime.fromtimestamp(trigger.received_at_ms / 1000, dt.UTC)


def _handle_lifecycle(
    services: Services, account: Account, subscription: Subscription, event: str, resource: Resource
) -> bool:
    """Act on one lifecycle event of a subscription of ``resource``; True when a resync of
    that resource must follow."""
    log.info(
        "account %s: lifecycle %s for %s subscription %s",
        account.account_id,
        event,
        resource.kind.value,
        subscription.subscription_id,
    )
    if event == "missed":
        return True
    auth = services.tokens.graph_auth(account)
    if event == "subscriptionRemoved":
        # Renewed when Graph still has it (a replayed or spoofed event must not tear down
        # a live subscription), recreated when the renewal finds it gone.
        from shared.subscriptions import ensure_subscription

        replacement = ensure_subscription(services, account, auth, resource)
        if replacement.subscription_id != subscription.subscription_id:
            log.info(
                "account %s: subscription %s replaced by %s",
                account.account_id,
                subscription.subscription_id,
                replacement.subscription_id,
            )
        return True
    # reauthorizationRequired
    now = services.clock.now()
    recent = [t for t in (subscription.last_reauthorized_at, subscription.last_renewed_at) if t is not None]
    if recent and now - max(recent) < REAUTHORIZE_QUIET_PERIOD:
        return False  # reauthorized or renewed moments ago (a PATCH also reauthorizes)
    try:
        services.graph.reauthorize_subscription(auth, subscription.subscription_id)
    except NotFoundError:
        _recreate(services, account, subscription, auth)
        return True
    except GraphError as error:
        if error.transient:
            raise
        log.warning(
            "account %s: reauthorizing subscription %s failed (%s); renewing instead",
            account.account_id,
            subscription.subscription_id,
            error.code,
        )
        from shared.subscriptions import ensure_subscription

        ensure_subscription(services, account, auth, resource)
        return False
    subscription.last_reauthorized_at = now
    services.subscriptions.save(subscription)
    return False


def _recreate(services: Services, account: Account, subscription: Subscription, auth: GraphAuth) -> None:
    """Replace the subscription with a new one of the same resource."""
    from shared.subscriptions import ensure_subscription

    subscription.status = SubscriptionStatus.REMOVED
    services.subscriptions.save(subscription)
    _forget_record(services, subscription)
    replacement = ensure_subscription(services, account, auth, resource_for(subscription))
    log.info(
        "account %s: subscription %s replaced by %s",
        account.account_id,
        subscription.subscription_id,
        replacement.subscription_id,
    )
