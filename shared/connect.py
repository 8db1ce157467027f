"""Connecting, reconnecting and disconnecting a Microsoft account (docs/design.md "Connect").

``start_connect`` begins an authorization-code flow with PKCE and keeps MSAL's whole flow
in table ``authflows`` under its ``state`` for ten minutes, single use.
Every flow is bound to the browser that started it: the flow keeps the SHA-256 of that
browser's binding cookie (``shared.connect_sessions``), and the callback is taken only with
the cookie (RFC 9700 §4.7).
``complete_connect`` finishes it on the callback: the flow is taken (so a replayed state
fails), the code redeemed, then ``finish_connect`` does what every way of connecting shares
(the CLI's device-code flow too): a tenant outside ``ALLOWED_TENANT_IDS`` is refused before
anything is stored, the account's token cache goes to Key Vault, the account is created or
updated in place (same tenant and object id: same account, never a duplicate) with the
connect session's owner, one subscription per resource its grant reaches is created or
healed (mail with a Mail scope, the drive with a Files scope: ``shared.resources``), an
initial delta round of each, queued on ``mail-sync`` (a large mailbox or drive takes longer
than a callback may), records where the data stands, and ``account-events`` hears of it.
``disconnect_account`` undoes all of it and keeps the account, marked ``disconnected``;
a round running meanwhile on any instance is stopped first.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.account_events import CONNECTED, DISCONNECTED, RECONNECTED, publish_transition
from shared.accounts import update_account
from shared.browser_binding import binding_digest, binding_matches
from shared.errors import (
    AuthFlowError,
    ConcurrencyError,
    ConnectorError,
    InvalidInputError,
    NotFoundError,
    PersistenceError,
    ReauthRequiredError,
    UpstreamError,
)
from shared.models import Account, AccountStatus, ClientKind, PendingAuthFlow, Subscription, account_id_for
from shared.ports import GraphAuth, TokenGrant
from shared.resources import MAIL, Resource
from shared.retry import update_with_etag
from shared.subscriptions import ensure_subscriptions, remove_subscriptions
from shared.tokens import token_cache_secret_name

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

AUTH_FLOW_LIFETIME = dt.timedelta(minutes=10)
MAX_LOGIN_HINT_LENGTH = 256
# What a callback may carry; anything else is ignored (and never logged).
_CALLBACK_FIELDS = (
    "code",
    "state",
    "session_state",
    "client_info",
    "error",
    "error_description",
    "error_uri",
)
_MAX_FIELD_LENGTH = 8192
_sleep = time.sleep  # tests replace it


@dataclass(frozen=True)
class ConnectResult:
    account: Account
    subscription: Subscription | None  # the mail subscription; None: the grant has no mail scope
    reconnected: bool
    previous_owner_id: str | None = None
    # Every subscription made, one per resource the grant reaches (mail first, then the drive).
    subscriptions: tuple[Subscription, ...] = ()


# -- the browser flow -------------------------------------------------------------------


def start_connect(
    services: Services, login_hint: str | None = None, *, browser_binding: str, session_id: str | None = None
) -> str:
    """Begin a sign-in bound to the browser holding ``browser_binding`` (its cookie);
    returns the authorize URL to send the browser to."""
    hint = _checked_login_hint(login_hint)
    flow = services.identity.start_auth_code_flow(
        services.settings.scopes, services.settings.redirect_uri, login_hint=hint
    )
    state = str(flow["state"])
    services.authflows.put(
        PendingAuthFlow(
            state=state,
            flow=flow,
            expires_at=services.clock.now() + AUTH_FLOW_LIFETIME,
            client_kind=ClientKind.CONFIDENTIAL,
            browser_binding=binding_digest(browser_binding),
            session_id=session_id,
        )
    )
    return str(flow["auth_uri"])


def complete_connect(
    services: Services, response: Mapping[str, str], *, browser_binding: str | None = None
) -> ConnectResult:
    """Finish a sign-in from the callback's parameters (query string or form post), without
    a connect session.

    Raises ``AuthFlowError`` for an unknown, expired or reused state, for a callback from
    another browser than the one that started the flow, and for an error returned by
    Microsoft (``access_denied`` when the user declines consent).
    """
    pending, fields = claim_callback(services, response, browser_binding=browser_binding)
    return complete_claimed(services, pending, fields)


def claim_callback(
    services: Services, response: Mapping[str, str], *, browser_binding: str | None
) -> tuple[PendingAuthFlow | None, dict[str, str]]:
    """Take the flow the callback's state names, if it is this browser's.

    A callback replayed from another browser (login CSRF, RFC 9700 §4.7) raises
    ``AuthFlowError`` ``browser_mismatch`` and puts the flow back: the browser that started
    it can still finish. Otherwise the flow is taken, even when Microsoft reports an error:
    a state is good for one answer.
    """
    fields = {k: str(response[k])[:_MAX_FIELD_LENGTH] for k in _CALLBACK_FIELDS if response.get(k)}
    state = fields.get("state", "")
    pending = services.authflows.take(state) if state else None
    if pending is not None and not binding_matches(pending.browser_binding, browser_binding):
        try:
            services.authflows.put(pending)
        except ConnectorError as exc:
            log.warning("auth callback: could not put a flow back: %s", type(exc).__name__)
        raise AuthFlowError(
            "this sign-in was started in another browser; please start again in this one",
            error="browser_mismatch",
        )
    return pending, fields


def complete_claimed(
    services: Services,
    pending: PendingAuthFlow | None,
    fields: Mapping[str, str],
    *,
    owner_id: str | None = None,
    reason: str = "browser",
) -> ConnectResult:
    if "error" in fields:
        raise AuthFlowError(
            "Microsoft did not complete the sign-in",
            error=fields["error"][:100],
            description=fields.get("error_description", "")[:500],
        )
    if not fields.get("state"):
        raise AuthFlowError("the sign-in response carries no state", error="missing_state")
    if pending is None:
        raise AuthFlowError(
            "this sign-in is unknown or was already used; please start again", error="unknown_state"
        )
    if pending.expires_at <= services.clock.now():
        raise AuthFlowError("this sign-in has expired; please start again", error="expired_state")
    if not fields.get("code"):
        raise AuthFlowError("the sign-in response carries no authorization code", error="missing_code")
    grant = services.identity.redeem_auth_code(pending.flow, fields)
    return finish_connect(services, grant, owner_id=owner_id, reason=reason)


# -- the device-code flow (operators) -----------------------------------------------------


def start_device_connect(services: Services) -> dict[str, Any]:
    """A device-code flow; show its ``message`` to the user, then ``complete_device_connect``."""
    return services.identity.start_device_flow(services.settings.scopes)


def complete_device_connect(services: Services, flow: Mapping[str, Any]) -> ConnectResult:
    return finish_connect(services, services.identity.redeem_device_flow(flow), reason="device_code")


# -- what every way of connecting shares --------------------------------------------------


def finish_connect(
    services: Services, grant: TokenGrant, *, owner_id: str | None = None, reason: str = "browser"
) -> ConnectResult:
    """Store and subscribe the account; ``owner_id`` (a connect session's) becomes its
    owner, taking it from a previous one: the user proved control of the mailbox by
    signing in."""
    allowed = services.settings.allowed_tenant_ids
    if allowed and grant.tenant_id.lower() not in allowed:
        # After the code exchange (the tenant is known only from the id token) and before
        # anything is stored: the grant's tokens are dropped with it.
        log.info("connect refused: the user's tenant %s is not allowed", grant.tenant_id)
        raise AuthFlowError(
            "accounts of your organisation cannot be connected here", error="tenant_not_allowed"
        )
    account_id = grant.home_account_id or account_id_for(grant.object_id, grant.tenant_id)
    auth = GraphAuth(account_id, grant.access_token)
    me = services.graph.get_me(auth)
    if grant.cache_state is not None:
        # Before the account turns active, so an active account always has its tokens.
        services.secrets.set(token_cache_secret_name(account_id), grant.cache_state)
    if owner_id is not None:
        # Before the account names its owner: a reader of the index checks the account.
        services.account_owners.add(owner_id, account_id)
    account, reconnected, previous_owner = _upsert_account(services, account_id, grant, me, owner_id)
    if previous_owner is not None:
        _drop_owner_entry(services, previous_owner, account_id)
    services.tokens.forget(account_id)  # the old session's access token is no longer wanted
    services.tokens.remember(account_id, grant.access_token, grant.expires_in)
    subscriptions = _subscribe(services, account, auth)
    log.info(
        "account %s %s (%s)",
        account_id,
        "reconnected" if reconnected else "connected",
        ", ".join(f"{s.resource} subscription {s.subscription_id}" for s in subscriptions) or "no subscription granted",
    )
    publish_transition(
        services, account, RECONNECTED if reconnected else CONNECTED, reason=reason, previous_owner_id=previous_owner
    )
    refreshed = services.accounts.get(account_id) or account
    mail = next((s for s in subscriptions if MAIL.owns_path(s.resource)), None)
    return ConnectResult(refreshed, mail, reconnected, previous_owner, tuple(subscriptions))


def _subscribe(services: Services, account: Account, auth: GraphAuth) -> list[Subscription]:
    """One subscription per resource the grant reaches (mail only with a Mail scope, the
    drive only with a Files scope: Graph refuses the others with 403), each followed by its
    queued first round. A refusal leaves the account in error with the reason and is
    raised, once every resource was tried."""
    made: list[Subscription] = []
    failure: ConnectorError | None = None
    for resource, outcome in ensure_subscriptions(services, account, auth):
        if isinstance(outcome, ConnectorError):
            what = "inbox" if resource is MAIL else resource.kind.value
            _record_error(services, account.account_id, f"{what} subscription failed: {type(outcome).__name__}: {outcome}")
            failure = failure or outcome
            continue
        made.append(outcome)
        _queue_first_round(services, account, resource)
    if failure is not None:
        raise failure
    return made


def _drop_owner_entry(services: Services, owner_id: str, account_id: str) -> None:
    try:
        services.account_owners.remove(owner_id, account_id)
    except ConnectorError as exc:  # left behind, it is skipped by readers
        log.warning("account %s: previous owner's index entry stays: %s", account_id, type(exc).__name__)


def _upsert_account(
    services: Services, account_id: str, grant: TokenGrant, me: Mapping[str, Any], owner_id: str | None
) -> tuple[Account, bool, str | None]:
    """The account as written, whether it existed, and the owner it was taken from."""
    now = services.clock.now()
    principal = str(me.get("userPrincipalName") or me.get("mail") or grant.username or "")
    display_name = str(me.get("displayName") or grant.display_name or "")
    scopes = tuple(services.settings.scopes)
    existed = False
    previous_owner: str | None = None

    def read() -> Account:
        nonlocal existed
        existing = services.accounts.get(account_id)
        existed = existing is not None
        # Not there yet: inserted (a write without an ETag); should a concurrent callback of
        # the same user insert it first, the next read finds it and updates it instead.
        return existing or Account(
            account_id=account_id,
            tenant_id=grant.tenant_id,
            user_id=grant.object_id or str(me.get("id") or ""),
            user_principal_name=principal,
            display_name=display_name,
            status=AccountStatus.ACTIVE,
            scopes=scopes,
            client_kind=grant.client_kind,
            connected_at=now,
            owner_id=owner_id,
        )

    def change(existing: Account) -> bool:
        nonlocal previous_owner
        previous_owner = None
        if not existed:
            return True
        # A fresh start (first connect, or after a disconnect) unless a round of this
        # connection kept its deltaLink: then the history goes on from it, and what came in
        # while the account waited for its user to sign in again is still news.
        fresh = (
            existing.status == AccountStatus.DISCONNECTED
            or existing.connected_at is None
            or not _history_kept(services, existing)
        )
        existing.tenant_id = grant.tenant_id or existing.tenant_id
        existing.user_id = grant.object_id or existing.user_id
        existing.user_principal_name = principal or existing.user_principal_name
        existing.display_name = display_name or existing.display_name
        existing.status = AccountStatus.ACTIVE
        existing.scopes = scopes
        existing.client_kind = grant.client_kind
        existing.last_error = None
        previous_owner = existing.owner_id if owner_id is not None and existing.owner_id != owner_id else None
        if owner_id is not None:
            existing.owner_id = owner_id
        if fresh:
            existing.connected_at = now
        return True

    saved = update_with_etag(read, change, services.accounts.save, what=f"account {account_id} (connecting)")
    assert saved is not None  # read() never gives None
    return saved, existed, previous_owner


def _history_kept(services: Services, account: Account) -> bool:
    """Whether a round of the account's present connection kept a deltaLink: the mailbox's
    on the account, the drive's in the drive's ledger partition (a grant without Mail has
    only that one)."""
    if account.delta_link:
        return True
    from shared.drive_sync import drive_delta_link  # only for accounts with no mail history

    return drive_delta_link(services, account) is not None


def _record_error(services: Services, account_id: str, message: str) -> None:
    def change(account: Account) -> bool:
        account.status = AccountStatus.ERROR
        account.last_error = message[:500]
        return True

    try:
        update_account(services, account_id, change)
    except ConnectorError as exc:
        log.warning("account %s: could not record its error: %s", account_id, type(exc).__name__)


def _queue_first_round(services: Services, account: Account, resource: Resource) -> None:
    """The initial delta round of ``resource`` (docs/design.md "Connect") runs on queue
    ``mail-sync``, not in the browser's callback: a large mailbox or drive takes longer than
    an HTTP request may. It records where the data stands (the mailbox's deltaLink, the
    drive's), publishing history only when ``EMIT_HISTORY_ON_CONNECT`` is set.

    A failure to queue it does not undo the connect: the account is connected and
    subscribed, and the first notification or the renewal's catch-up runs the round.
    """
    from shared.sync_runner import request_sync

    try:
        request_sync(services, account.account_id, reason="connect", resource=resource)
    except (UpstreamError, ConcurrencyError, PersistenceError) as exc:
        log.warning(
            "account %s: initial %s delta round not queued: %s",
            account.account_id,
            resource.kind.value,
            type(exc).__name__,
        )


def _forget_published_mail(services: Services, account_id: str) -> None:
    """A reconnect after a disconnect starts a fresh history: drop the mail ledger."""
    services.ledger.forget_account(account_id)


# -- disconnect ------------------------------------------------------------------------


def disconnect_account(services: Services, account_id: str) -> Account:
    """Delete the account's subscriptions of every resource (Graph and store) and its token
    cache, and mark it ``disconnected``. Idempotent; ``NotFoundError`` for an unknown account.

    A round may be running for the account on any instance. The disconnect first seizes the
    account's sync lease (the round's next fenced write fails, so it writes no mark, no
    progress and no deltaLink), waits until that round can no longer publish (its last lease
    proof plus ``PUBLISH_FENCE``), and marks the account disconnected before the token cache
    goes: a token refresh of the round that ends later cannot write the cache back (a
    write-back never recovers a deleted secret), and its deltaLink save finds the account
    disconnected. A reconnect then starts afresh: a new ``connected_at``, no deltaLink."""
    from shared.sync_runner import seize_lease

    account = services.accounts.get(account_id)
    if account is None:
        raise NotFoundError(f"account {account_id} does not exist")
    seize_lease(services, account_id, sleep=_sleep)  # the mail's (its sync key is the account id)
    auth: GraphAuth | None = None
    if account.status != AccountStatus.DISCONNECTED:
        try:
            auth = services.tokens.graph_auth(account)
        except (ReauthRequiredError, UpstreamError) as exc:
            log.info(
                "account %s: no token to delete its subscriptions in Graph (%s); they expire there",
                account_id,
                type(exc).__name__,
            )

    transitions: list[bool] = []

    def change(current: Account) -> bool:
        if current.status == AccountStatus.DISCONNECTED and current.delta_link is None:
            return False
        transitions.append(current.status != AccountStatus.DISCONNECTED)
        current.status = AccountStatus.DISCONNECTED
        current.delta_link = None  # a reconnect starts from a fresh round
        current.connected_at = None  # ... and from a new connect time
        current.last_error = None
        return True

    updated = update_account(services, account_id, change)
    removed = remove_subscriptions(services, account, auth)  # mail and drive alike
    services.secrets.delete(token_cache_secret_name(account_id))
    _forget_published_mail(services, account_id)  # the marks, the round's progress, the lease
    from shared.drive_sync import forget_drive_state

    forget_drive_state(services, account_id, sleep=_sleep)  # the same for the drive, and its deltaLink
    services.tokens.forget(account_id)
    log.info("account %s disconnected (%d subscriptions removed)", account_id, removed)
    if updated is not None and transitions and transitions[-1]:
        publish_transition(services, updated, DISCONNECTED, reason="operator")
    return updated or account


def _checked_login_hint(login_hint: str | None) -> str | None:
    if login_hint is None:
        return None
    hint = login_hint.strip()
    if not hint:
        return None
    if len(hint) > MAX_LOGIN_HINT_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in hint):
        raise InvalidInputError(f"login_hint must be at most {MAX_LOGIN_HINT_LENGTH} printable characters")
    return hint
