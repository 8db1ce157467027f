"""The account's Graph subscriptions, one per resource its grant reaches: create, heal,
remove (``shared.resources``: mail and the drive).

Mail: the resource follows ``MAIL_FOLDERS`` (``shared.mail_folders.subscription_resource``):
the inbox's messages by default, ``/me/messages`` for several folders. Every mail
subscription is created with ``Prefer: IdType="ImmutableId"`` (its notifications then name
messages by the ids the events carry) and records that it was; one recorded without it, or
for another resource than the watched folders need, is *outdated*: processing re-issues it
after its next notification (``shared.notifications``), and ``ensure_subscription``
replaces it rather than renewing it.

Drive: ``/me/drive/root``, change type ``updated``. Item ids of a drive never change, so
immutable ids do not apply: a drive subscription is recorded with ``immutable_ids`` False
and is current whatever that flag says; only its resource path counts.

Used by the connect flow, by the lifecycle handling (``subscriptionRemoved``) and by the
renewal timer; the resource paths, change types and lifetimes are those of
``shared.resources``.

Rules (docs/graph-notes.md "Subscriptions"): an Outlook message subscription without resource
data lives at most 10,080 minutes, a drive item's 42,300; a second subscription with the same
resource and change types from the same app gets 409; deleting an already-gone subscription
(404) is normal; the notification and lifecycle URLs must pass the validation handshake
within 10 s; Graph refuses a subscription to data the grant does not reach with 403, so an
account gets one only for the resources its scopes grant (``shared.resources.granted_resources``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shared.client_state import issue_client_state, key_id, new_nonce
from shared.config import INBOX
from shared.errors import ConcurrencyError, ConnectorError, GraphError, NotFoundError, UpstreamError
from shared.mail_folders import subscription_resource
from shared.models import Account, Subscription, SubscriptionStatus
from shared.ports import GraphAuth
from shared.resources import LIFETIME_MARGIN, MAIL, Resource, granted_resources, resource_of

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

# docs/graph-notes.md "Subscriptions": never a reauthorize and a PATCH of one subscription
# within 10 minutes of each other.
GRAPH_COOLDOWN = dt.timedelta(minutes=10)
# The mail subscription's figures under their earlier names (shared.resources holds them).
MAILBOX_RESOURCE = subscription_resource((INBOX,))  # with the default MAIL_FOLDERS
MAILBOX_CHANGE_TYPES = MAIL.change_types
MAX_MAIL_SUBSCRIPTION_LIFETIME = MAIL.max_lifetime
MAILBOX_SUBSCRIPTION_LIFETIME = MAIL.lifetime
# Graph gives our endpoints 10 s to answer its validation handshake; a cold start can miss
# it. Creation is tried again a few times (docs/graph-notes.md "Validation handshake": retrying
# creation is one of the remedies).
VALIDATION_ATTEMPTS = 3
VALIDATION_RETRY_DELAY_SECONDS = 2.0

__all__ = [
    "GRAPH_COOLDOWN",
    "LIFETIME_MARGIN",
    "MAILBOX_CHANGE_TYPES",
    "MAILBOX_RESOURCE",
    "MAILBOX_SUBSCRIPTION_LIFETIME",
    "MAX_MAIL_SUBSCRIPTION_LIFETIME",
    "ensure_mailbox_subscription",
    "ensure_subscription",
    "ensure_subscriptions",
    "grants_mail",
    "is_current",
    "mailbox_subscriptions",
    "remove_subscriptions",
    "resource_for",
    "resources_of",
    "subscriptions_of",
]


def mailbox_subscription_expiry(now: dt.datetime) -> dt.datetime:
    """The expiry to ask for when creating or renewing a mailbox subscription at ``now``."""
    return MAIL.expiry(now)


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


def resource_path(services: Services, resource: Resource) -> str:
    """The Graph resource a new subscription of ``resource`` asks for."""
    return resource.subscription_path(services.settings)


def mailbox_resource(services: Services) -> str:
    return resource_path(services, MAIL)


def resources_of(account: Account) -> tuple[Resource, ...]:
    """The resources the account is subscribed to: those its grant reaches. An account
    recorded before its scopes were kept (none recorded) was connected for mail."""
    return granted_resources(account.scopes) if account.scopes else (MAIL,)


def resource_for(subscription: Subscription) -> Resource:
    """The resource a recorded subscription is of. One whose path is none of the
    connector's (it never makes one) is taken for mail, the one it always had, whose
    lifetime is the shorter."""
    return resource_of(subscription.resource) or MAIL


def subscriptions_of(services: Services, account_id: str, resource: Resource) -> list[Subscription]:
    """The account's recorded subscriptions of ``resource``, whatever their status."""
    return [s for s in services.subscriptions.for_account(account_id) if resource.owns_path(s.resource)]


def mailbox_subscriptions(services: Services, account_id: str) -> list[Subscription]:
    return subscriptions_of(services, account_id, MAIL)


def is_current(services: Services, subscription: Subscription) -> bool:
    """Whether the subscription is what the connector creates today for its resource: the
    resource path it would ask for now (for mail, the one the watched folders need) and,
    for mail, immutable ids."""
    resource = resource_of(subscription.resource)
    if resource is None:
        return False
    if _asks_immutable_ids(resource) and not subscription.immutable_ids:
        return False
    return subscription.resource == resource_path(services, resource)


def needs_reissue(services: Services, subscription: Subscription) -> bool:
    """Whether the subscription must be replaced rather than renewed: its clientState is not
    one the current key issued with a nonce (a key rotation, or a subscription made before
    nonces were kept), or it is not what the connector creates today for its resource
    (``is_current``). A PATCH cannot change either: only a new subscription can."""
    return (
        subscription.client_state_nonce is None
        or subscription.client_state_key_id != key_id(services.settings.client_state_key)
        or not is_current(services, subscription)
    )


def ensure_subscription(services: Services, account: Account, auth: GraphAuth, resource: Resource) -> Subscription:
    """The account's subscription of ``resource``, alive in Graph and recorded in the store.

    A recorded, active subscription that needs no re-issue is renewed (a PATCH also
    reauthorizes it with the current token); one that Graph no longer knows, that is
    recorded as removed or failed, or that ``needs_reissue`` (signed with a retired key or
    without a nonce, or made for another resource path), is deleted and replaced. A 409 on creation means Graph still has a
    subscription of ours for this resource that the store has lost track of: the ones
    recorded for the account and resource are deleted in Graph and creation is tried once
    more.
    """
    now = services.clock.now()
    for existing in subscriptions_of(services, account.account_id, resource):
        if existing.status == SubscriptionStatus.ACTIVE and not needs_reissue(services, existing):
            renewed = _renew(services, existing, auth, now, resource)
            if renewed is not None:
                return renewed
        _discard(services, existing, auth, keep_undeleted=True)
    try:
        return _create(services, account, auth, now, resource)
    except GraphError as exc:
        if exc.status != 409:
            raise
        log.warning(
            "account %s: Graph already has a %s subscription; replacing it", account.account_id, resource.kind.value
        )
        for leftover in subscriptions_of(services, account.account_id, resource):
            _discard(services, leftover, auth, keep_undeleted=True)
        return _create(services, account, auth, now, resource)


def ensure_mailbox_subscription(services: Services, account: Account, auth: GraphAuth) -> Subscription:
    """The account's mail subscription (``ensure_subscription`` for mail)."""
    return ensure_subscription(services, account, auth, MAIL)


def ensure_subscriptions(
    services: Services, account: Account, auth: GraphAuth
) -> list[tuple[Resource, Subscription | ConnectorError]]:
    """``ensure_subscription`` for every resource the account's grant reaches
    (``resources_of``), mail first: each resource with its subscription, or with the error
    that kept it from having one. Each is tried even when another failed: a refused drive
    subscription does not cost the mail its own."""
    outcomes: list[tuple[Resource, Subscription | ConnectorError]] = []
    for resource in resources_of(account):
        try:
            outcomes.append((resource, ensure_subscription(services, account, auth, resource)))
        except ConnectorError as exc:
            outcomes.append((resource, exc))
    return outcomes


def remove_subscriptions(services: Services, account: Account, auth: GraphAuth | None) -> int:
    """Delete every subscription of the account, of any resource, in Graph (when a token is
    at hand) and in the store; idempotent. Without a token the Graph side simply expires (a
    mail subscription within 7 days, a drive's within 30), and its notifications no longer
    match an active account. Returns how many were removed."""
    removed = 0
    for subscription in services.subscriptions.for_account(account.account_id):
        _discard(services, subscription, auth)
        removed += 1
    return removed


remove_mailbox_subscriptions = remove_subscriptions  # its earlier name


def _renew(
    services: Services, subscription: Subscription, auth: GraphAuth, now: dt.datetime, resource: Resource
) -> Subscription | None:
    expires_at = resource.expiry(now)
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


def _create(
    services: Services, account: Account, auth: GraphAuth, now: dt.datetime, resource: Resource
) -> Subscription:
    settings = services.settings
    path = resource_path(services, resource)
    expires_at = resource.expiry(now)
    nonce = new_nonce()  # recorded below: processing accepts this subscription's clientState only
    for attempt in range(1, VALIDATION_ATTEMPTS + 1):
        try:
            answer: dict[str, Any] = services.graph.create_subscription(
                auth,
                resource=path,
                change_type=resource.change_types,
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
        resource=path,
        change_type=resource.change_types,
        expires_at=parse_graph_datetime(answer.get("expirationDateTime"), expires_at),
        status=SubscriptionStatus.ACTIVE,
        last_renewed_at=now,
        client_state_nonce=nonce,
        client_state_key_id=key_id(settings.client_state_key),
        immutable_ids=_asks_immutable_ids(resource),
    )
    try:
        saved = services.subscriptions.save(subscription)
    except Exception:
        # Not recorded means never renewed and a 409 on the next try: undo it in Graph.
        _discard_unrecorded(services, subscription, auth)
        raise
    log.info(
        "account %s: %s subscription %s created", account.account_id, resource.kind.value, subscription.subscription_id
    )
    return saved


def _asks_immutable_ids(resource: Resource) -> bool:
    """Immutable ids are Outlook's (learn.microsoft.com/graph/outlook-immutable-id); a drive
    item's id never changes anyway."""
    return resource is MAIL


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


def grants_mail(scopes: Sequence[str]) -> bool:
    """Whether a grant reaches mail (``Mail.Read``, ``Mail.ReadWrite``, ...): only then does
    the account get a mail subscription and mail delta syncs. A product that asks only
    ``User.Read Files.ReadWrite.All`` connects accounts without either; Graph would refuse
    their mail subscription with 403 (docs/graph-notes.md "Subscriptions")."""
    return MAIL.granted(scopes)
