"""The account's Graph subscription to its watched mail: create, heal, remove.

The resource follows ``MAIL_FOLDERS`` (``shared.mail_folders.subscription_resource``): the
inbox's messages by default, ``/me/messages`` for several folders. Every subscription is
created with ``Prefer: IdType="ImmutableId"`` (its notifications then name messages by the
ids the events carry) and records that it was; one recorded without it, or for another
resource than the watched folders need, is *outdated*: processing re-issues it after its
next notification (``shared.notifications``), and ``ensure_mailbox_subscription`` replaces it
rather than renewing it.

Used by the connect flow, by the lifecycle handling (``subscriptionRemoved``) and by the
renewal timer, so the resource, change types and lifetime are defined here once.

Rules (docs/graph-notes.md "Subscriptions"): an Outlook message subscription without resource data
lives at most 10,080 minutes; a second subscription with the same resource and change types
from the same app gets 409; deleting an already-gone subscription (404) is normal; the
notification and lifecycle URLs must pass the validation handshake within 10 s.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any

from shared.client_state import issue_client_state, key_id, new_nonce
from shared.errors import ConcurrencyError, GraphError, NotFoundError, UpstreamError
from shared.mail_folders import is_mail_resource, subscription_resource
from shared.models import Account, Subscription, SubscriptionStatus
from shared.ports import GraphAuth

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

# docs/graph-notes.md "Subscriptions": never a reauthorize and a PATCH of one subscription
# within 10 minutes of each other.
GRAPH_COOLDOWN = dt.timedelta(minutes=10)
MAILBOX_RESOURCE = "/me/mailFolders('inbox')/messages"  # with the default MAIL_FOLDERS
MAILBOX_CHANGE_TYPES = "created,updated,deleted"
# Graph's maximum for Outlook messages without resource data.
MAX_MAIL_SUBSCRIPTION_LIFETIME = dt.timedelta(minutes=10_080)
# Asked for a little less than the maximum: a clock a few minutes ahead of Graph's must
# not turn a renewal into a 400 "expirationDateTime is too far in the future".
LIFETIME_MARGIN = dt.timedelta(minutes=30)
MAILBOX_SUBSCRIPTION_LIFETIME = MAX_MAIL_SUBSCRIPTION_LIFETIME - LIFETIME_MARGIN
# Graph gives our endpoints 10 s to answer its validation handshake; a cold start can miss
# it. Creation is tried again a few times (docs/graph-notes.md "Validation handshake": retrying
# creation is one of the remedies).
VALIDATION_ATTEMPTS = 3
VALIDATION_RETRY_DELAY_SECONDS = 2.0


def mailbox_subscription_expiry(now: dt.datetime) -> dt.datetime:
    """The expiry to ask for when creating or renewing a mailbox subscription at ``now``."""
    return (now + MAILBOX_SUBSCRIPTION_LIFETIME).replace(microsecond=0)


def parse_graph_datetime(value: object, fallback: dt.datetime) -> dt.datetime:
    """A Graph DateTimeOffset (up to seven fractional digits, ``Z``) as aware UTC."""
    if not isinstance(value, str) or not value:
        return fallback
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return fallback
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def mailbox_resource(services: Services) -> str:
    return subscription_resource(services.settings.mail_folders)


def mailbox_subscriptions(services: Services, account_id: str) -> list[Subscription]:
    return [s for s in services.subscriptions.for_account(account_id) if is_mail_resource(s.resource)]


def is_current(services: Services, subscription: Subscription) -> bool:
    """Whether the subscription is what the connector creates today: immutable ids, and
    the resource the watched folders need."""
    return subscription.immutable_ids and subscription.resource == mailbox_resource(services)


def ensure_mailbox_subscription(services: Services, account: Account, auth: GraphAuth) -> Subscription:
    """The account's inbox subscription, alive in Graph and recorded in the store.

    A recorded, active subscription is renewed (a PATCH also reauthorizes it with the
    current token); one that Graph no longer knows, or that is recorded as removed or
    failed, is deleted and replaced. A 409 on creation means Graph still has a
    subscription of ours for this mailbox that the store has lost track of: the ones
    recorded for the account are deleted in Graph and creation is tried once more.
    """
    now = services.clock.now()
    for existing in mailbox_subscriptions(services, account.account_id):
        if existing.status == SubscriptionStatus.ACTIVE and is_current(services, existing):
            renewed = _renew(services, existing, auth, now)
            if renewed is not None:
                return renewed
        _discard(services, existing, auth, keep_undeleted=True)
    try:
        return _create(services, account, auth, now)
    except GraphError as exc:
        if exc.status != 409:
            raise
        log.warning("account %s: Graph already has an inbox subscription; replacing it", account.account_id)
        for leftover in mailbox_subscriptions(services, account.account_id):
            _discard(services, leftover, auth, keep_undeleted=True)
        return _create(services, account, auth, now)


def remove_mailbox_subscriptions(services: Services, account: Account, auth: GraphAuth | None) -> int:
    """Delete the account's subscriptions in Graph (when a token is at hand) and in the
    store; idempotent. Without a token the Graph side simply expires (at most 7 days), and
    its notifications no longer match an active account. Returns how many were removed."""
    removed = 0
    for subscription in services.subscriptions.for_account(account.account_id):
        _discard(services, subscription, auth)
        removed += 1
    return removed


def _renew(
    services: Services, subscription: Subscription, auth: GraphAuth, now: dt.datetime
) -> Subscription | None:
    expires_at = mailbox_subscription_expiry(now)
    try:
        answer = services.graph.renew_subscription(auth, subscription.subscription_id, expires_at)
    except NotFoundError:
        log.info(
            "account %s: subscription %s is gone from Graph; recreating",
            subscription.account_id,
            subscription.subscription_id,
        )
        return None
    except GraphError as exc:
        if exc.transient:
            raise
        log.warning(
            "account %s: subscription %s could not be renewed (%s); recreating",
            subscription.account_id,
            subscription.subscription_id,
            exc.code,
        )
        return None
    subscription.expires_at = parse_graph_datetime(answer.get("expirationDateTime"), expires_at)
    subscription.last_renewed_at = now
    subscription.status = SubscriptionStatus.ACTIVE
    try:
        return services.subscriptions.save(subscription)
    except ConcurrencyError:
        # Somebody else (the renewal timer, a lifecycle event) wrote it meanwhile: Graph has
        # it alive either way, and their record is the newer one.
        current = services.subscriptions.get(subscription.account_id, subscription.subscription_id)
        if current is None:
            raise
        return current


def _discard(
    services: Services, subscription: Subscription, auth: GraphAuth | None, *, keep_undeleted: bool = False
) -> None:
    """Delete the subscription in Graph (when a token is at hand) and in the store. With
    ``keep_undeleted``, one that Graph could not delete right now stays recorded as failed,
    so that the next attempt (or a 409 on creation) deletes it rather than losing track."""
    if auth is not None:
        try:
            services.graph.delete_subscription(auth, subscription.subscription_id)
        except NotFoundError:
            pass
        except UpstreamError as exc:
            log.warning(
                "account %s: subscription %s could not be deleted in Graph: %s",
                subscription.account_id,
                subscription.subscription_id,
                type(exc).__name__,
            )
            if keep_undeleted:
                if subscription.status != SubscriptionStatus.FAILED:
                    subscription.status = SubscriptionStatus.FAILED
                    services.subscriptions.save(subscription)
                return
    services.subscriptions.delete(subscription.account_id, subscription.subscription_id)


def _create(services: Services, account: Account, auth: GraphAuth, now: dt.datetime) -> Subscription:
    settings = services.settings
    resource = mailbox_resource(services)
    expires_at = mailbox_subscription_expiry(now)
    nonce = new_nonce()  # recorded below: processing accepts this subscription's clientState only
    for attempt in range(1, VALIDATION_ATTEMPTS + 1):
        try:
            answer: dict[str, Any] = services.graph.create_subscription(
                auth,
                resource=resource,
                change_type=MAILBOX_CHANGE_TYPES,
                notification_url=settings.notification_url,
                lifecycle_notification_url=settings.lifecycle_notification_url,
                expires_at=expires_at,
                client_state=issue_client_state(settings.client_state_key, account.account_id, nonce),
            )
            break
        except GraphError as exc:
            if not _is_validation_failure(exc) or attempt == VALIDATION_ATTEMPTS:
                raise
            log.warning(
                "account %s: Graph could not validate our endpoints (attempt %d); trying again",
                account.account_id,
                attempt,
            )
            time.sleep(VALIDATION_RETRY_DELAY_SECONDS)
    subscription = Subscription(
        subscription_id=str(answer["id"]),
        account_id=account.account_id,
        resource=resource,
        change_type=MAILBOX_CHANGE_TYPES,
        expires_at=parse_graph_datetime(answer.get("expirationDateTime"), expires_at),
        status=SubscriptionStatus.ACTIVE,
        last_renewed_at=now,
        client_state_nonce=nonce,
        client_state_key_id=key_id(settings.client_state_key),
        immutable_ids=True,
    )
    try:
        saved = services.subscriptions.save(subscription)
    except Exception:
        # Not recorded means never renewed and a 409 on the next try: undo it in Graph.
        _discard_unrecorded(services, subscription, auth)
        raise
    log.info("account %s: subscription %s created", account.account_id, subscription.subscription_id)
    return saved


def _is_validation_failure(exc: GraphError) -> bool:
    # "Subscription validation request failed / timed out" (docs/graph-notes.md "Validation handshake").
    return exc.status == 400 and "validation request" in str(exc).lower()


def _discard_unrecorded(services: Services, subscription: Subscription, auth: GraphAuth) -> None:
    try:
        services.graph.delete_subscription(auth, subscription.subscription_id)
    except Exception as exc:  # noqa: BLE001 - best effort while another error propagates
        log.warning(
            "account %s: unrecorded subscription %s left in Graph: %s",
            subscription.account_id,
            subscription.subscription_id,
            type(exc).__name__,
        )


def grants_mail(scopes: tuple[str, ...] | list[str]) -> bool:
    """Whether a grant reaches mail (``Mail.Read``, ``Mail.ReadWrite``, ...): only then does
    the account get a mail subscription and delta syncs. A product that asks only
    ``User.Read Files.ReadWrite.All`` connects accounts without either; Graph would refuse
    their mail subscription with 403 (docs/graph-notes.md "Subscriptions")."""
    return any(scope.lower().startswith("mail.") for scope in scopes)
