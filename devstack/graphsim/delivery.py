"""Change and lifecycle notification delivery, with Graph's retry rules and injected faults.

Changes are matched against live subscriptions when they happen and queued with a due
time. One scheduler thread takes the items that are due together, groups them by URL
(one POST may carry several items, as Graph batches), and hands each POST to a small
thread pool. A POST counts when it answers 2xx within ``deliveryTimeoutSeconds`` (3 s
in Graph); otherwise it is retried with exponential back-off from
``deliveryRetryBaseSeconds`` up to ``deliveryMaxAttempts`` attempts (Graph retries for
up to 4 hours; the simulator compresses time).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from .mailbox import MailChange
from .state import SimState, Subscription, graph_time_precise, utcnow

log = logging.getLogger(__name__)

MAX_LOG = 10_000


@dataclass
class Pending:
    url: str
    kind: str  # "change" | "lifecycle"
    subscription_id: str
    item: dict[str, Any]
    queued_at: float
    attempt: int = 1


@dataclass(order=True)
class _Scheduled:
    due: float
    order: int
    pending: Pending = field(compare=False)


class Delivery:
    def __init__(self, state: SimState, ca_file: str | None) -> None:
        self._state = state
        self._verify: str | bool = ca_file or True
        self._heap: list[_Scheduled] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="graphsim-delivery")
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="graphsim-scheduler", daemon=True)
        self._local = threading.local()
        self._log: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()
        self._delivery_ids = itertools.count(1)
        self.rng = random.Random()

    # lifecycle of the worker ------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def reseed(self, seed: int | None) -> None:
        self.rng = random.Random(seed)

    # producing ----------------------------------------------------------------------------
    def publish_changes(self, changes: list[MailChange]) -> None:
        """Queue one notification item per (change, matching live subscription)."""
        if not changes:
            return
        with self._state.lock:
            subs = self._state.live_subscriptions()
            for change in changes:
                user = self._state.users.get(change.user_id)
                if user is None:
                    continue
                for sub in subs:
                    if sub.user_id != change.user_id or change.change_type not in sub.change_types:
                        continue
                    if sub.folder_id is not None and sub.folder_id != change.folder_id:
                        continue
                    if sub.folder_id is None and not user.mailbox.in_view(change.folder_id):
                        continue  # /me/messages covers the visible folders, not the recoverable items
                    message_id = change.message_id(sub.immutable_ids)
                    resource = f"Users/{user.id}/Messages/{message_id}"
                    item = {
                        "id": str(uuid.uuid4()),
                        "subscriptionId": sub.id,
                        "subscriptionExpirationDateTime": graph_time_precise(sub.expiration, "+00:00"),
                        "changeType": change.change_type,
                        "resource": resource,
                        "resourceData": {
                            "@odata.type": "#Microsoft.Graph.Message",
                            "@odata.id": resource,
                            "@odata.etag": change.etag,
                            "id": message_id,
                        },
                        "clientState": sub.client_state,
                        "tenantId": user.tenant_id,
                    }
                    self._enqueue_with_faults(Pending(sub.notification_url, "change", sub.id, item, time.time()))

    def publish_lifecycle(self, sub: Subscription, event: str) -> bool:
        """Queue a lifecycle notification; False when the subscription has no lifecycle URL."""
        if not sub.lifecycle_url:
            self._append_log({"kind": "lifecycle", "subscriptionIds": [sub.id], "url": None,
                              "outcome": "noLifecycleUrl", "lifecycleEvent": event})
            return False
        user = self._state.users.get(sub.user_id)
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": graph_time_precise(sub.expiration, "+00:00"),
            "tenantId": user.tenant_id if user else None,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }
        self._enqueue_with_faults(Pending(sub.lifecycle_url, "lifecycle", sub.id, item, time.time()))
        return True

    def enqueue(self, pending: Pending) -> None:
        """Queue one notification item of another producer (drives), with the faults applied."""
        self._enqueue_with_faults(pending)

    def _enqueue_with_faults(self, pending: Pending) -> None:
        faults = self._state.faults
        if faults.drop_rate and self.rng.random() < faults.drop_rate:
            self._append_log({"kind": pending.kind, "subscriptionIds": [pending.subscription_id],
                              "url": pending.url, "itemCount": 1, "attempt": 0, "status": None,
                              "latencyMs": None, "outcome": "dropped"})
            return
        copies = 2 if faults.duplicate_rate and self.rng.random() < faults.duplicate_rate else 1
        for _ in range(copies):
            delay = faults.delay_ms / 1000.0
            if faults.reorder:
                delay += self.rng.uniform(0.0, 0.3)
            self._schedule(Pending(pending.url, pending.kind, pending.subscription_id, dict(pending.item),
                                   pending.queued_at), time.monotonic() + delay)

    def _schedule(self, pending: Pending, due: float) -> None:
        with self._cond:
            heapq.heappush(self._heap, _Scheduled(due, next(self._order), pending))
            self._cond.notify()

    # consuming ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._heap or self._heap[0].due > time.monotonic()):
                    timeout = None if not self._heap else max(0.0, self._heap[0].due - time.monotonic())
                    self._cond.wait(timeout)
                if self._stopping:
                    return
            # let items that become ready together travel in one POST
            window = self._state.settings.delivery_batch_window_ms / 1000.0
            if window > 0:
                time.sleep(window)
            with self._cond:
                ready: list[Pending] = []
                now = time.monotonic()
                while self._heap and self._heap[0].due <= now:
                    ready.append(heapq.heappop(self._heap).pending)
            groups: dict[tuple[str, str, int], list[Pending]] = {}
            for pending in ready:
                groups.setdefault((pending.url, pending.kind, pending.attempt), []).append(pending)
            for batch in groups.values():
                if self._state.faults.reorder:
                    self.rng.shuffle(batch)
                try:
                    self._pool.submit(self._post, batch)
                except RuntimeError:  # pool shut down while stopping
                    return

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _post(self, batch: list[Pending]) -> None:
        with self._state.lock:  # a lifecycle event may speak of a subscription that is already gone
            live = [p for p in batch
                    if p.kind == "lifecycle" or self._state.live_subscription(p.subscription_id) is not None]
        if not live:
            self._append_log({"kind": batch[0].kind, "subscriptionIds": sorted({p.subscription_id for p in batch}),
                              "url": batch[0].url, "itemCount": len(batch), "attempt": batch[0].attempt,
                              "status": None, "latencyMs": None, "outcome": "subscriptionGone"})
            return
        settings = self._state.settings
        url = live[0].url
        body = {"value": [p.item for p in live]}
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            response = self._session().post(
                url, json=body, timeout=(settings.delivery_timeout_seconds, settings.delivery_timeout_seconds),
                verify=self._verify, headers={"User-Agent": "graphsim-notifications/1.0"},
            )
            status = response.status_code
        except requests.Timeout:
            error = "timeout"
        except requests.RequestException as exc:
            error = type(exc).__name__
        latency = time.monotonic() - started
        ok = status is not None and 200 <= status < 300 and latency <= settings.delivery_timeout_seconds
        attempt = live[0].attempt
        outcome = "delivered" if ok else ("retrying" if attempt < settings.delivery_max_attempts else "failed")
        self._append_log({
            "kind": live[0].kind,
            "subscriptionIds": sorted({p.subscription_id for p in live}),
            "url": url,
            "itemCount": len(live),
            "attempt": attempt,
            "status": status,
            "error": error,
            "latencyMs": round(latency * 1000, 1),
            "endToEndMs": round((time.time() - min(p.queued_at for p in live)) * 1000, 1),
            "outcome": outcome,
        })
        if not ok and outcome == "retrying":
            delay = settings.delivery_retry_base_seconds * (2 ** (attempt - 1))
            for p in live:
                p.attempt = attempt + 1
                self._schedule(p, time.monotonic() + delay)

    # log ----------------------------------------------------------------------------------
    def _append_log(self, entry: dict[str, Any]) -> None:
        entry.setdefault("time", graph_time_precise(utcnow()))
        with self._log_lock:
            entry["id"] = next(self._delivery_ids)
            self._log.append(entry)
            if len(self._log) > MAX_LOG:
                del self._log[: len(self._log) - MAX_LOG]

    def log(self) -> list[dict[str, Any]]:
        with self._log_lock:
            return [dict(e) for e in self._log]

    def clear_log(self) -> None:
        with self._log_lock:
            self._log.clear()

    def idle(self) -> bool:
        with self._cond:
            return not self._heap
