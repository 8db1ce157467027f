"""Timer triggers: run each timer function on its schedule, one run at a time.

As with the host, a timer function never overlaps itself; a run that starts more than
``PAST_DUE_AFTER`` late is flagged ``past_due``, and occurrences missed while a run was
still going are collapsed into that one late run. ``run_on_startup`` runs it once as the
host starts.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from azure.functions.timer import TimerRequest

from .ncrontab import Schedule

logger = logging.getLogger("devstack.devhost")

PAST_DUE_AFTER = dt.timedelta(seconds=1)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timer_request(past_due: bool, last: dt.datetime | None, due: dt.datetime | None,
                  next_due: dt.datetime | None) -> TimerRequest:
    def iso(moment: dt.datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    status = {"Last": iso(last), "Next": iso(next_due), "LastUpdated": iso(due)}
    return TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})


class TimerRunner:
    """Fires one timer function until stopped."""

    def __init__(
        self,
        function_name: str,
        schedule: Schedule,
        run_on_startup: bool,
        fire: Callable[[TimerRequest], object],
        stop: threading.Event,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.function_name = function_name
        self._schedule = schedule
        self._run_on_startup = run_on_startup
        self._fire = fire
        self._stop = stop
        self._clock = clock
        self._lock = threading.Lock()  # one run at a time, also against admin invocations
        self._thread = threading.Thread(target=self._run, name=f"devhost-timer-{function_name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def run_now(self, past_due: bool = False, due: dt.datetime | None = None, last: dt.datetime | None = None) -> None:
        now = self._clock()
        with self._lock:
            self._fire(timer_request(past_due, last, due or now, self._schedule.next_after(now)))

    def _run(self) -> None:
        last: dt.datetime | None = None
        if self._run_on_startup and not self._stop.is_set():
            self.run_now()
            last = self._clock()
        due = self._schedule.next_after(self._clock())
        while not self._stop.is_set():
            wait = (due - self._clock()).total_seconds()
            if wait > 0:
                # Woken at least once a minute, so a changed wall clock is noticed.
                self._stop.wait(min(wait, 60.0))
                continue
            late = self._clock() - due > PAST_DUE_AFTER
            self.run_now(past_due=late, due=due, last=last)
            last = due
            # Occurrences that passed during the run are not replayed one by one.
            due = self._schedule.next_after(max(due, self._clock()))
