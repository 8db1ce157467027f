"""NCRONTAB schedules, as the Functions timer trigger reads them.

Six fields ``second minute hour day month day-of-week`` (the timer trigger's format; five
fields are read as ``0 minute hour ...``). Each field takes ``*``, a value, a range ``a-b``,
a step ``*/n``, ``a-b/n`` or ``a/n``, and comma lists of those; months and days of week also
take English three-letter names, and day-of-week 7 is Sunday like 0. As in the NCrontab
library the host uses, a time matches when *every* field matches (day-of-month and
day-of-week are combined with AND, unlike Vixie cron). A TimeSpan such as ``00:05:00`` is an
interval schedule, as the host accepts on dedicated plans.

Times are UTC, the host's default when ``WEBSITE_TIME_ZONE`` is not set.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .config import parse_timespan

_MONTHS = {name: i for i, name in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1)}
_DAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
# (lowest, highest, names) per field, in the order they are written.
_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}), (0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, _MONTHS), (0, 7, _DAYS),
)
# No schedule matches nothing for longer than this (leap days need at most 8 years).
_SEARCH_LIMIT = dt.timedelta(days=366 * 9)


class InvalidSchedule(ValueError):
    """The schedule is neither a valid NCRONTAB expression nor a TimeSpan."""


def _value(text: str, low: int, high: int, names: dict[str, int]) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not text.isdigit():
        raise InvalidSchedule(f"bad value {text!r}")
    number = int(text)
    if not low <= number <= high:
        raise InvalidSchedule(f"value {number} outside {low}-{high}")
    return number


def parse_field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int]:
    """The set of values one cron field allows."""
    names = names or {}
    allowed: set[int] = set()
    for part in text.split(","):
        if not part:
            raise InvalidSchedule(f"empty list item in {text!r}")
        range_text, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise InvalidSchedule(f"bad step in {part!r}")
            step = int(step_text)
        if range_text == "*":
            start, end = low, high
        elif "-" in range_text:
            first, _, last = range_text.partition("-")
            start, end = _value(first, low, high, names), _value(last, low, high, names)
            if start > end:
                raise InvalidSchedule(f"range {part!r} runs backwards")
        else:
            start = _value(range_text, low, high, names)
            end = high if step_text else start
        allowed.update(range(start, end + 1, step))
    return frozenset(allowed)


@dataclass(frozen=True)
class CronSchedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        fields = expression.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise InvalidSchedule(f"expected 6 fields, got {len(fields)}: {expression!r}")
        sets = [parse_field(text, low, high, names) for text, (low, high, names) in zip(fields, _FIELDS, strict=True)]
        weekdays = frozenset(day % 7 for day in sets[5])
        return cls(sets[0], sets[1], sets[2], sets[3], sets[4], weekdays)

    def _day_matches(self, moment: dt.datetime) -> bool:
        # Python's weekday() is Monday=0; cron's is Sunday=0.
        return moment.day in self.days and (moment.weekday() + 1) % 7 in self.weekdays

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first matching whole second strictly after ``after``."""
        moment = after.replace(microsecond=0) + dt.timedelta(seconds=1)
        limit = after + _SEARCH_LIMIT
        while moment <= limit:
            if moment.month not in self.months:
                year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
                moment = moment.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
            elif not self._day_matches(moment):
                moment = (moment + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0)
            elif moment.hour not in self.hours:
                moment = (moment + dt.timedelta(hours=1)).replace(minute=0, second=0)
            elif moment.minute not in self.minutes:
                moment = (moment + dt.timedelta(minutes=1)).replace(second=0)
            elif moment.second not in self.seconds:
                moment += dt.timedelta(seconds=1)
            else:
                return moment
        raise InvalidSchedule("schedule never matches")


@dataclass(frozen=True)
class IntervalSchedule:
    interval: dt.timedelta

    def next_after(self, after: dt.datetime) -> dt.datetime:
        return after + self.interval


Schedule = CronSchedule | IntervalSchedule


def parse_schedule(expression: str) -> Schedule:
    """A cron expression, or a TimeSpan interval such as ``00:00:30``."""
    text = expression.strip()
    if " " not in text and ":" in text:
        try:
            seconds = parse_timespan(text)
        except ValueError as error:
            raise InvalidSchedule(str(error)) from error
        if seconds <= 0:
            raise InvalidSchedule(f"interval must be positive: {expression!r}")
        return IntervalSchedule(dt.timedelta(seconds=seconds))
    return CronSchedule.parse(text)
