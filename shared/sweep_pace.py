"""The account sweep's pace: its resume point, and how long a full cycle takes.

An account is visited once per cycle, so the sweep's "quiet" looks ahead by the cycle's
length (plus the gap between two runs): an account is caught up when it would pass
``CATCHUP_AFTER_MINUTES`` of silence before the sweep is back. The pace is kept in the
sweep checkpoint's continuation, next to the accounts table's continuation token.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class SweepPace:
    """The sweep's resume point and pace, kept in its checkpoint's continuation: the
    accounts table's continuation token, when the current cycle began, how long the last
    full cycle took, and when the last sweep ran."""

    token: str | None = None
    cycle_started_at: dt.datetime | None = None
    last_cycle: dt.timedelta | None = None
    last_run_at: dt.datetime | None = None

    _PREFIX = "pace1:"

    @classmethod
    def decode(cls, raw: str | None) -> SweepPace:
        if not raw:
            return cls()
        if not raw.startswith(cls._PREFIX):
            return cls(token=raw)  # a resume point written before the pace was kept
        try:
            data = json.loads(raw[len(cls._PREFIX) :])
            return cls(
                token=data.get("token") or None,
                cycle_started_at=_parse_time(data.get("cycleStartedAt")),
                last_cycle=dt.timedelta(seconds=float(data["lastCycleSeconds"]))
                if data.get("lastCycleSeconds") is not None
                else None,
                last_run_at=_parse_time(data.get("lastRunAt")),
            )
        except (ValueError, TypeError, AttributeError, KeyError):
            log.warning("renewal: the sweep's stored pace is unreadable; starting a new cycle")
            return cls()

    def encode(self) -> str:
        return self._PREFIX + json.dumps(
            {
                "token": self.token,
                "cycleStartedAt": self.cycle_started_at.isoformat() if self.cycle_started_at else None,
                "lastCycleSeconds": self.last_cycle.total_seconds() if self.last_cycle is not None else None,
                "lastRunAt": self.last_run_at.isoformat() if self.last_run_at else None,
            }
        )

    def start_run(self, now: dt.datetime) -> dt.timedelta:
        """Marks a sweep starting now; returns how far ahead its "quiet" looks."""
        lookahead = self.lookahead(now)
        self.last_run_at = now
        if self.cycle_started_at is None:
            self.cycle_started_at = now
        return lookahead

    def lookahead(self, now: dt.datetime) -> dt.timedelta:
        """How long until the sweep is back at the accounts it meets now: the last cycle's
        length plus the gap between two sweeps. Unknown (no full cycle yet, right after a
        deployment): none, so the first cycle catches up only what is quiet already."""
        if self.last_cycle is None:
            return dt.timedelta(0)
        gap = now - self.last_run_at if self.last_run_at is not None else dt.timedelta(0)
        return self.last_cycle + max(gap, dt.timedelta(0))

    def cycle_finished(self, now: dt.datetime, catchup_after: dt.timedelta) -> None:
        if self.cycle_started_at is not None:
            self.last_cycle = now - self.cycle_started_at
            if self.last_cycle >= catchup_after:
                log.warning(
                    "renewal: the account sweep takes %s per cycle, longer than the catch-up period %s: "
                    "every quiet account is caught up at each visit, and still some go longer; "
                    "raise RENEWAL_SWEEP_ACCOUNTS",
                    self.last_cycle,
                    catchup_after,
                )
        self.cycle_started_at = None  # the next run starts the next cycle


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    return dt.datetime.fromisoformat(value)
