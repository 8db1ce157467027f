"""The triggers of one ``graph-notifications`` message, processed side by side.

The webhook packs the triggers of one Graph POST, one per account, into one queue message
(``shared.webhook``). Each runs ``shared.notifications.process_trigger`` as it would from a
message of its own, on a thread of a pool shared by the process, so a message of ten
accounts takes as long as its slowest round, not the sum of them.

Exactly once still holds: a message is deleted only when its function returns, and it
returns only when every trigger of it is done or stands on the queue again (``settle``):
- some triggers failed, others succeeded: the failed ones are sent again on their own, in a
  message that carries how often they were tried and becomes visible after the queue's
  retry delay (or Graph's Retry-After, when longer); the message is done. One failing
  mailbox no longer makes every other account of its POST run a round again, nor takes
  them to the poison queue with it;
- every trigger failed: the message goes back to the queue as it is (the host retries it
  after ``visibilityTimeout`` and moves it to the poison queue after ``maxDequeueCount``);
- a trigger tried ``MAX_ATTEMPTS`` times, over its messages, goes to the poison queue
  alone, as a message of its own.
Sending again happens before the message is deleted: a crash in between leaves both, and a
trigger run twice publishes nothing twice (the ledger).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.config import NOTIFICATION_QUEUE
from shared.errors import ThrottledError
from shared.notifications import TriggerOutcome, process_trigger
from shared.webhook import retry_messages, single_trigger_json

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.webhook import NotificationTrigger, TriggerMessage

# Rounds of one process at once from batched triggers: more than a message holds
# (shared.webhook.MAX_TRIGGERS_PER_MESSAGE), fewer than the storage transport's pooled
# connections, which every round's reads and writes share.
TRIGGER_THREADS = 48
# host.json's queues settings: a trigger is tried this often in all before the poison queue,
# and a failed one is tried again after this long (tests/unit/test_trigger_batch.py checks
# them against host.json).
MAX_ATTEMPTS = 5  # maxDequeueCount
RETRY_DELAY_SECONDS = 5  # visibilityTimeout
# Graph's Retry-After is waited out on the queue, up to this long (a message's visibility
# can be set up to 7 days; a mailbox throttled for longer is tried again and waits again).
MAX_RETRY_AFTER_SECONDS = 300
POISON_QUEUE = f"{NOTIFICATION_QUEUE}-poison"

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


@dataclass
class BatchOutcome:
    outcomes: list[TriggerOutcome] = field(default_factory=list)
    failures: list[tuple[NotificationTrigger, Exception]] = field(default_factory=list)

    def error(self) -> Exception | None:
        """The error to hand the message back with: the longest throttling if any (its
        Retry-After is waited out before the retry), else the first failure."""
        throttled = [e for _, e in self.failures if isinstance(e, ThrottledError)]
        if throttled:
            return max(throttled, key=lambda e: e.retry_after)
        return self.failures[0][1] if self.failures else None


@dataclass(frozen=True)
class Settled:
    """What became of a message's failed triggers: sent again (``retried``, after
    ``delay_seconds``), moved to the poison queue (``poisoned``), or, when ``error`` is set,
    nothing yet: the message goes back to the queue with that error."""

    retried: int = 0
    poisoned: int = 0
    delay_seconds: int = 0
    error: Exception | None = None


def settle(services: Services, message: TriggerMessage, batch: BatchOutcome, dequeue_count: int) -> Settled:
    """Send the failed triggers of ``message`` again on their own, or to the poison queue once
    tried ``MAX_ATTEMPTS`` times; or hand the whole message back (every trigger failed, and
    it is the first message they came in). ``dequeue_count``: the queue's deliveries of
    this message (1 the first time)."""
    failure = batch.error()
    if failure is None:
        return Settled()
    failed = [trigger for trigger, _ in batch.failures]
    if len(failed) == len(message.triggers) and message.attempts == 0:
        return Settled(error=failure)  # the host's retry and poison queue, as for any message
    attempts = message.attempts + max(dequeue_count, 1)
    if attempts >= MAX_ATTEMPTS:
        services.queues.send(POISON_QUEUE, [single_trigger_json(trigger) for trigger in failed])
        return Settled(poisoned=len(failed))
    delay = RETRY_DELAY_SECONDS
    if isinstance(failure, ThrottledError):
        delay = max(delay, min(int(failure.retry_after + 0.999), MAX_RETRY_AFTER_SECONDS))
    services.queues.send(NOTIFICATION_QUEUE, retry_messages(failed, attempts), delay_seconds=delay)
    return Settled(retried=len(failed), delay_seconds=delay)


def process_triggers(services: Services, triggers: Sequence[NotificationTrigger]) -> BatchOutcome:
    """Process every trigger; each one's exception is kept in ``failures``, never raised."""
    batch = BatchOutcome()
    if len(triggers) == 1:  # no thread hand-over for a message of one account
        try:
            batch.outcomes.append(process_trigger(services, triggers[0]))
        except Exception as error:  # noqa: BLE001 - handed to the caller, which retries the message
            batch.failures.append((triggers[0], error))
        return batch
    pool = _threads()
    futures = [(trigger, pool.submit(process_trigger, services, trigger)) for trigger in triggers]
    for trigger, future in futures:
        try:
            batch.outcomes.append(future.result())
        except Exception as error:  # noqa: BLE001 - as above
            batch.failures.append((trigger, error))
    return batch


def _threads() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=TRIGGER_THREADS, thread_name_prefix="trigger")
        return _pool
