"""Times of day and weekly schedules, as an administrator writes them.

``"09:00-18:00"`` is a range of a day (start included, end excluded; ``24:00`` ends the
day), ``"09:00-13:00, 14:00-18:00"`` several. A week is a table of days
(``{mon = "09:00-18:00", sat = "10:00-14:00"}``): a day left out, or given ``""``, has no
hours. A range never crosses midnight: write ``22:00-24:00`` and ``00:00-06:00``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _minutes(hours: str, minutes: str, *, end: bool) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and (m or not end)):
        raise ValueError(f"{hours}:{minutes} is not a time of day")
    return h * 60 + m


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Minutes since midnight: ``start`` included, ``end`` excluded."""

    start: int
    end: int

    def __contains__(self, moment: time) -> bool:
        return self.start <= moment.hour * 60 + moment.minute < self.end

    def __str__(self) -> str:
        return f"{self.start // 60:02}:{self.start % 60:02}-{self.end // 60:02}:{self.end % 60:02}"


def parse_ranges(text: str) -> tuple[TimeRange, ...]:
    """``"09:00-13:00, 14:00-18:00"`` as ranges; ``""`` is none. ValueError if malformed."""
    ranges = []
    for part in text.split(",") if text.strip() else []:
        match = _RANGE.match(part)
        if not match:
            raise ValueError(f"{part.strip()!r} is not a time range (expected e.g. '09:00-18:00')")
        start = _minutes(match[1], match[2], end=False)
        end = _minutes(match[3], match[4], end=True)
        if end <= start:
            raise ValueError(
                f"{part.strip()!r} ends before it starts (a range cannot cross midnight: "
                "expected e.g. '22:00-24:00' and '00:00-06:00')"
            )
        ranges.append(TimeRange(start, end))
    return tuple(ranges)


def within(ranges: tuple[TimeRange, ...], moment: time) -> TimeRange | None:
    """The range ``moment`` falls in, if any."""
    return next((r for r in ranges if moment in r), None)


@dataclass(frozen=True, slots=True)
class Week:
    """Working hours for each day of the week (Monday first)."""

    days: tuple[tuple[TimeRange, ...], ...]

    @classmethod
    def parse(cls, table: dict[str, str]) -> Week:
        return cls(tuple(parse_ranges(table.get(day, "")) for day in DAYS))

    def at(self, moment: datetime) -> tuple[TimeRange, ...]:
        return self.days[moment.weekday()]

    def describe(self, moment: datetime) -> str:
        ranges = self.at(moment)
        day = DAYS[moment.weekday()]
        return f"{day} {', '.join(map(str, ranges))}" if ranges else f"no hours on {day}"
