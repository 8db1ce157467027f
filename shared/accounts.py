"""Accounts: changing one under its ETag, turning it ``reauth_required``, what operators see.

``update_account`` is the one way an account record is changed (read, change, write under
the ETag read, again after a concurrent write). ``account_summary``, ``list_accounts`` and
``show_account`` are the operators' views (``/api/accounts``, the CLI): no token, no
deltaLink.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.account_events import REAUTH_REQUIRED, publish_transition
from shared.errors import InvalidInputError, NotFoundError, SessionInputError
from shared.models import Account, AccountStatus
from shared.retry import update_with_etag

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

OWNER_ID_PATTERN = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


_DOWNGRADABLE = (AccountStatus.ACTIVE, AccountStatus.ERROR)


def mark_reauth_required(services: Services, account_id: str, reason: str) -> Account | None:
    """Turn an active (or failing) account ``reauth_required``; a disconnected one stays so."""

    transitions: list[bool] = []

    def change(account: Account) -> bool:
        transitions.append(account.status in _DOWNGRADABLE)
        if account.status not in _DOWNGRADABLE:
            return False
        account.status = AccountStatus.REAUTH_REQUIRED
        account.last_error = f"sign-in required ({reason})"
        return True

    updated = update_account(services, account_id, change)
    if updated is not None and updated.status == AccountStatus.REAUTH_REQUIRED:
        log.warning("account %s must sign in again (%s)", account_id, reason)
        if transitions and transitions[-1]:  # this call made the transition: told once
            publish_transition(services, updated, REAUTH_REQUIRED, reason=reason)
    return updated


def update_account(
    services: Services, account_id: str, change: Callable[[Account], bool], *, attempts: int = 5
) -> Account | None:
    """Read, change and write an account under its ETag, again from a fresh read when
    somebody else wrote first. ``change`` returns False when there is nothing to write.
    None when the account does not exist."""
    return update_with_etag(
        lambda: services.accounts.get(account_id),
        change,
        services.accounts.save,
        attempts=attempts,
        what=f"account {account_id}",
    )


def account_summary(services: Services, account: Account) -> dict[str, Any]:
    """What operators see of an account: no token, no deltaLink."""
    subscriptions = services.subscriptions.for_account(account.account_id)
    expiry = min((s.expires_at for s in subscriptions), default=None)
    return {
        "id": account.account_id,
        "user": account.user_principal_name,
        "displayName": account.display_name,
        "tenant": account.tenant_id,
        "ownerId": account.owner_id,
        "status": account.status.value,
        "clientKind": account.client_kind.value,
        "subscriptionExpiresAt": _iso(expiry),
        "subscriptions": [
            {"id": s.subscription_id, "status": s.status.value, "expiresAt": _iso(s.expires_at)}
            for s in subscriptions
        ],
        "lastNotificationAt": _iso(account.last_notification_at),
        "lastSyncAt": _iso(account.last_sync_at),
        "connectedAt": _iso(account.connected_at),
        "lastError": account.last_error,
    }


def list_accounts(
    services: Services, *, size: int = 50, continuation: str | None = None, owner_id: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    if not 1 <= size <= 100:
        raise InvalidInputError("page size must be between 1 and 100")
    if owner_id is not None:
        ids, next_token = services.account_owners.page(
            checked_owner(owner_id), size=size, continuation=continuation or None
        )
        owned = [a for a in (services.accounts.get(i) for i in ids) if a is not None and a.owner_id == owner_id]
        return [account_summary(services, a) for a in owned], next_token
    accounts, next_token = services.accounts.page(size=size, continuation=continuation or None)
    return [account_summary(services, a) for a in accounts], next_token


def show_account(services: Services, account_id: str) -> dict[str, Any]:
    account = services.accounts.get(account_id)
    if account is None:
        raise NotFoundError(f"account {account_id} does not exist")
    return account_summary(services, account)


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def checked_owner(value: Any) -> str:
    """An ``ownerId`` of the product's own (a connect session's, the accounts filter)."""
    if value is None:
        raise SessionInputError("invalid_owner_id", "ownerId is required")
    if not isinstance(value, str):
        raise SessionInputError("invalid_owner_id", "ownerId must be a string")
    if not OWNER_ID_PATTERN.fullmatch(value):
        raise SessionInputError(
            "invalid_owner_id", "ownerId must be 1-128 characters of A-Z a-z 0-9 . _ : @ -"
        )
    return value
