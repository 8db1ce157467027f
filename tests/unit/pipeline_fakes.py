"""A Graph mailbox with a real delta behaviour, for the pipeline's unit tests.

``FakeGraphApi.delta_page`` of tests/fakes.py replays a list; the sync needs more of
Graph's delta semantics (docs/graph-notes.md "Mail delta query"): a round returns each changed
message once in its latest state, deletions as ``@removed``, pages chained by nextLinks,
a deltaLink that resumes after the round, and ``410 Gone`` once a token has expired
(after which a round without a link returns every message present).
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

from shared.client_state import issue_client_state
from shared.errors import DeltaTokenExpiredError
from shared.models import Account, Subscription
from shared.ports import DeltaPage, GraphAuth, JsonObject
from tests.fakes import EPOCH, FakeGraphApi

CLIENT_STATE_KEY = b"test-client-state-key-0123456789abcdef"


def graph_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DeltaMailbox:
    """One user's inbox: messages and a change log numbered by sequence."""

    def __init__(self) -> None:
        self.messages: dict[str, JsonObject] = {}
        self.changes: dict[str, int] = {}  # message id -> sequence of its last change
        self.seq = itertools.count(1)
        self.last = 0
        self.expired_below = 0  # delta links older than this sequence get 410

    def _touch(self, message_id: str) -> None:
        self.last = next(self.seq)
        self.changes[message_id] = self.last

    def deliver(self, subject: str, received: dt.datetime, sender: str = "alice@fabrikam.test") -> str:
        message_id = "AAMkAG" + secrets.token_urlsafe(18)
        self.messages[message_id] = {
            "id": message_id,
            "changeKey": secrets.token_urlsafe(8),
            "subject": subject,
            "receivedDateTime": graph_time(received),
            "from": {"emailAddress": {"address": sender, "name": sender}},
            "isRead": False,
        }
        self._touch(message_id)
        return message_id

    def update(self, message_id: str, **fields: Any) -> None:
        self.messages[message_id].update(fields, changeKey=secrets.token_urlsafe(8))
        self._touch(message_id)

    def delete(self, message_id: str) -> None:
        del self.messages[message_id]
        self._touch(message_id)

    def expire_tokens(self) -> None:
        self.expired_below = self.last + 1


class DeltaGraphApi(FakeGraphApi):
    """``FakeGraphApi`` whose delta query follows ``DeltaMailbox`` with pages of ``page_size``."""

    def __init__(self, clock: Any = None, page_size: int = 3, latency: float = 0.0) -> None:
        super().__init__(clock)
        self.inboxes: dict[str, DeltaMailbox] = {}
        self.page_size = page_size
        self.latency = latency  # seconds per delta call, to let concurrent rounds overlap

    def inbox(self, account_id: str) -> DeltaMailbox:
        with self._lock:
            return self.inboxes.setdefault(account_id, DeltaMailbox())

    def deliver(self, account_id: str, subject: str, received: dt.datetime) -> str:
        """``DeltaMailbox.deliver`` while delta queries may run on other threads."""
        box = self.inbox(account_id)
        with self._lock:
            return box.deliver(subject, received)

    def delta_page(self, auth: GraphAuth, link: str | None, *, folder: str = "inbox") -> DeltaPage:
        self._enter("delta_page", auth)
        box = self.inbox(auth.account_id)
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            return self._delta_page(box, link)

    def _delta_page(self, box: DeltaMailbox, link: str | None) -> DeltaPage:
        if link is None:
            mode, since, offset, upto = "full", 0, 0, box.last
        else:
            parsed = urlparse(link)
            query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
            if parsed.netloc == "delta":
                since = int(query["since"])
                if since < box.expired_below:
                    raise DeltaTokenExpiredError(410, "syncStateNotFound", "The delta token is not valid.")
                mode, offset, upto = "inc", 0, box.last
            else:
                mode, since, offset, upto = (
                    query["mode"],
                    int(query["since"]),
                    int(query["offset"]),
                    int(query["upto"]),
                )
        if mode == "full":
            ids = sorted((m for m in box.messages if box.changes[m] <= upto), key=box.changes.__getitem__)
        else:
            ids = sorted(
                (m for m, s in box.changes.items() if since < s <= upto), key=box.changes.__getitem__
            )
        items = [
            copy.deepcopy(box.messages[m])
            if m in box.messages
            else {"id": m, "@removed": {"reason": "deleted"}}
            for m in ids[offset : offset + self.page_size]
        ]
        if offset + self.page_size < len(ids):
            following = f"graph://next?mode={mode}&since={since}&offset={offset + self.page_size}&upto={upto}"
            return DeltaPage(items, next_link=following)
        return DeltaPage(items, delta_link=f"graph://delta?since={upto}")


def connected_account(services: Any, *, connected_at: dt.datetime = EPOCH, name: str = "adele") -> Account:
    account = Account(
        account_id=f"{name}-oid.tenant-1",
        tenant_id="tenant-1",
        user_id=f"{name}-oid",
        user_principal_name=f"{name}@contoso.test",
        connected_at=connected_at,
    )
    return services.accounts.save(account)


# Graph's subscription ids are GUIDs; the webhook accepts no other shape.
SUB_1 = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"


def recorded_subscription(services: Any, account: Account, subscription_id: str = SUB_1) -> Subscription:
    return services.subscriptions.save(
        Subscription(
            subscription_id=subscription_id,
            account_id=account.account_id,
            resource="/me/mailFolders('inbox')/messages",
            change_type="created,updated,deleted",
            expires_at=EPOCH + dt.timedelta(days=6),
        )
    )


def notification(
    account_id: str, subscription_id: str = SUB_1, *, change_type: str = "created", **extra: Any
) -> JsonObject:
    item: JsonObject = {
        "id": "lsgTZMr9KwAAA",
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": "2026-11-26T11:00:00.0000000Z",
        "clientState": issue_client_state(CLIENT_STATE_KEY, account_id),
        "changeType": change_type,
        "resource": "Users/adele-oid/Messages/AAMkAGI2",
        "tenantId": "tenant-1",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Message",
            "@odata.id": "Users/adele-oid/Messages/AAMkAGI2",
            "@odata.etag": 'W/"CQAAABYAAAA"',
            "id": "AAMkAGI2",
        },
    }
    item.update(extra)
    return item


def lifecycle(account_id: str, event: str, subscription_id: str = SUB_1) -> JsonObject:
    return {
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": "2026-11-26T11:00:00.0000000Z",
        "clientState": issue_client_state(CLIENT_STATE_KEY, account_id),
        "lifecycleEvent": event,
        "tenantId": "tenant-1",
        "organizationId": "tenant-1",
    }


def events_of(services: Any) -> list[JsonObject]:
    return [json.loads(m) for m in services.queues.sent.get("mail-events", [])]


def run_queued_rounds(services: Any) -> list[Any]:
    """What the ``mail-sync`` queue function does with the rounds queued so far (and those
    they queue in turn): run each one. Returns the results."""
    from shared.sync import parse_sync_job, sync_mailbox

    results = []
    queued = services.queues.sent.setdefault("mail-sync", [])
    while queued:
        account_id, reason = parse_sync_job(queued.pop(0))
        results.append(sync_mailbox(services, account_id, reason=reason))
    return results
