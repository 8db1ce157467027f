"""A subscription as Table Storage fields: the record in ``subscriptions`` and the copy an
expiry index entry carries (``shared.adapters.expiry_index``) hold the same fields, so
they are mapped in this one place.
"""

from __future__ import annotations

from typing import Any

from shared.adapters.table_support import MIN_TIME, utc
from shared.models import Subscription, SubscriptionStatus


def subscription_fields(s: Subscription) -> dict[str, Any]:
    return {
        "Resource": s.resource,
        "ChangeType": s.change_type,
        "ExpiresAt": s.expires_at,
        "Status": s.status.value,
        "LastRenewedAt": s.last_renewed_at,
        "LastReauthorizedAt": s.last_reauthorized_at,
        "ClientStateNonce": s.client_state_nonce,
        "ClientStateKeyId": s.client_state_key_id,
        "ImmutableIds": s.immutable_ids,
        "CaughtUpAt": s.caught_up_at,
    }


def subscription_with(account_id: str, subscription_id: str, e: Any, etag: str | None) -> Subscription:
    expires_at = utc(e.get("ExpiresAt")) or MIN_TIME
    return Subscription(
        subscription_id=subscription_id,
        account_id=account_id,
        resource=e.get("Resource", ""),
        change_type=e.get("ChangeType", ""),
        expires_at=expires_at,
        status=SubscriptionStatus(e.get("Status", SubscriptionStatus.ACTIVE.value)),
        last_renewed_at=utc(e.get("LastRenewedAt")),
        last_reauthorized_at=utc(e.get("LastReauthorizedAt")),
        client_state_nonce=e.get("ClientStateNonce") or None,
        client_state_key_id=e.get("ClientStateKeyId") or None,
        immutable_ids=bool(e.get("ImmutableIds", False)),
        caught_up_at=utc(e.get("CaughtUpAt")),
        etag=etag,
        indexed_expires_at=expires_at,
    )


def subscription_from(e: Any) -> Subscription:
    return subscription_with(e["PartitionKey"], e["RowKey"], e, e.metadata.get("etag"))
