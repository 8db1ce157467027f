"""The queue listener polls an idle queue every ``maxPollingInterval``, and at once when this
host's own output binding wrote to the queue (``QueueListener.wake``)."""

from __future__ import annotations

import base64
import threading
import time
from types import SimpleNamespace
from typing import Any

from devstack.devhost.config import QueueOptions
from devstack.devhost.queues import QueueListener


class _Queue:
    """Just enough of a QueueClient: receives count as polls."""

    def __init__(self) -> None:
        self.waiting: list[Any] = []
        self.polls = 0
        self.deleted: list[str] = []
        self._lock = threading.Lock()

    def put(self, body: str) -> None:
        with self._lock:
            self.waiting.append(SimpleNamespace(
                id=f"m{len(self.waiting)}", content=base64.b64encode(body.encode()).decode(), dequeue_count=1,
                expires_on=None, inserted_on=None, next_visible_on=None, pop_receipt="r"))

    def receive_messages(self, **_: Any) -> list[Any]:
        with self._lock:
            self.polls += 1
            taken, self.waiting = self.waiting, []
            return taken

    def delete_message(self, message_id: str, _receipt: str) -> None:
        self.deleted.append(message_id)


def _listener(queue: _Queue, seen: list[tuple[bytes, float]], stop: threading.Event) -> QueueListener:
    options = QueueOptions(max_polling_interval=30.0, batch_size=4, new_batch_threshold=2)

    def process(message: Any) -> bool:
        seen.append((message.get_body(), time.monotonic()))
        return True

    return QueueListener("f", lambda: queue, lambda: queue, options, process, stop, 60)  # type: ignore[arg-type, return-value]


def test_a_message_this_host_wrote_runs_at_once_though_the_idle_queue_is_polled_rarely() -> None:
    queue, stop = _Queue(), threading.Event()
    seen: list[tuple[bytes, float]] = []
    listener = _listener(queue, seen, stop)
    listener.start()
    try:
        time.sleep(1.0)  # idle: the back-off has grown to seconds, toward the 30 s maximum
        polls_when_idle = queue.polls
        assert polls_when_idle < 15  # 5 ms doubling: about 8 polls in the first second

        queue.put("from the webhook")
        written = time.monotonic()
        listener.wake()
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen and seen[0][0] == b"from the webhook"
        assert seen[0][1] - written < 0.5
    finally:
        stop.set()
        listener.join(5)
