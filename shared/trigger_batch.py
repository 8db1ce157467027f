"""The triggers of one ``graph-notifications`` message, processed side by side.

The webhook packs the triggers of one Graph POST, one per account, into one queue message
(``shared.webhook``). Each runs ``shared.notifications.process_trigger`` as it would from a
message of its own, on a thread of a pool shared by the process, so a message of ten
accounts takes as long as its slowest round, not the sum of them.

Exactly once still holds: a message is deleted only when its function returns, and it
returns only when every trigger of it is done. When any trigger fails, its error goes back
to the queue with the whole message; on the retry the triggers already served cost nothing
in this process (a finished round began after they were received: ``shared.sync_joining``)
and a delta round elsewhere (which publishes nothing twice: the ledger). After
``maxDequeueCount`` failures the whole message goes to the poison queue, the triggers that
had succeeded included, whose work was done.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.errors import ThrottledError
from shared.notifications import TriggerOutcome, process_trigger

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.webhook import NotificationTrigger

# Rounds of one process at once from batched triggers: more than a message holds
# (shared.webhook.MAX_TRIGGERS_PER_MESSAGE), fewer than the storage transport's pooled
# connections, which every round's reads and writes share.
TRIGGER_THREADS = 48

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
