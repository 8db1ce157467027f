"""Account lifecycle events: one CloudEvents 1.0 document per transition, on ``account-events``.

The product learns from them that one of its users' accounts was connected, connected
again, needs its user to sign in again, or was disconnected, without polling the
accounts API. ``type`` is ``com.m365connector.account.<transition>``: the connector's own
prefix (mail events keep Graph's ``com.microsoft.graph.message.*``, since they describe
Graph's resource; these describe the connector's). ``source`` is ``/accounts/{accountId}``.

``id`` is a hash of the account, the transition and the ETag the transition's write gave
the account record: a transition published again (a retry) carries the same id, and two
transitions never share one (CloudEvents 1.0 §3.1.1: source + id identify an event).

Publishing follows the account write that made the transition: a transition is written
first, then told. A queue that fails three times in a row loses the event (logged, and
the account's state still says it): at most once, never an event for a transition that
did not happen.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from shared.config import ACCOUNT_EVENT_QUEUE
from shared.errors import PersistenceError
from shared.models import Account

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

EVENT_TYPE_PREFIX = "com.m365connector.account."
CONNECTED = "connected"
RECONNECTED = "reconnected"
REAUTH_REQUIRED = "reauth_required"
DISCONNECTED = "disconnected"
TRANSITIONS = (CONNECTED, RECONNECTED, REAUTH_REQUIRED, DISCONNECTED)
_SEND_ATTEMPTS = 3


def transition_id(account_id: str, transition: str, marker: str) -> str:
    return hashlib.sha256(f"{account_id}|{transition}|{marker}".encode()).hexdigest()[:32]


def account_event(
    account: Account,
    transition: str,
    *,
    reason: str,
    now: dt.datetime,
    previous_owner_id: str | None = None,
) -> dict[str, Any]:
    if transition not in TRANSITIONS:
        raise ValueError(f"unknown account transition {transition!r}")
    data: dict[str, Any] = {
        "accountId": account.account_id,
        "ownerId": account.owner_id,
        "tenantId": account.tenant_id,
        "userId": account.user_id,
        "userPrincipalName": account.user_principal_name,
        "reason": reason,
    }
    if previous_owner_id is not None:
        data["previousOwnerId"] = previous_owner_id
    return {
        "specversion": "1.0",
        "id": transition_id(account.account_id, transition, account.etag or ""),
        "source": f"/accounts/{account.account_id}",
        "type": EVENT_TYPE_PREFIX + transition,
        "subject": account.account_id,
        "time": now.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }


def publish_transition(
    services: Services,
    account: Account,
    transition: str,
    *,
    reason: str,
    previous_owner_id: str | None = None,
) -> None:
    """Tell the product about a transition that was just written (``account`` as written,
    with its new ETag). Never raises for the queue: the transition stands either way."""
    event = account_event(
        account, transition, reason=reason, now=services.clock.now(), previous_owner_id=previous_owner_id
    )
    message = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    for attempt in range(1, _SEND_ATTEMPTS + 1):
        try:
            services.queues.send(ACCOUNT_EVENT_QUEUE, [message])
            break
        except PersistenceError as exc:
            if attempt == _SEND_ATTEMPTS:
                log.error(
                    "account %s: %s event not published: %s", account.account_id, transition, type(exc).__name__
                )
                return
    log.info("account %s: published %s", account.account_id, transition)
