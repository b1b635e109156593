"""The settings of the rules an administrator sets: ``[rules]`` and the per-manager keys
(hours, quiet hours, leave, deputies). Checked here one key at a time; what needs the
whole file (a deputy who is no manager, a loop of deputies, numbers in the country's
form) is checked by :func:`icm.config.from_dict` after these.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, ConfigDict, Field, Strict, field_validator, model_validator

from icm.schedule import DAYS, parse_ranges
from icm.secrets import WithSecrets

RULES = ("blocked", "vip", "lookup", "hours", "presence", "deputy")
DEFAULT_ORDER = list(RULES)
Rule = Literal["blocked", "vip", "lookup", "hours", "presence", "deputy"]
# When a deputy takes the call: the manager is away (outside his hours, in quiet hours,
# Bitrix24's work day closed), on leave, offline, busy, or does not answer.
DeputyWhen = Literal["away", "leave", "offline", "busy", "noanswer"]
DEPUTY_WHEN: tuple[DeputyWhen, ...] = ("away", "leave", "offline", "busy", "noanswer")
PREFIX = re.compile(r"^\+\d{1,15}\*\Z")
LooseDate = Annotated[date, Strict(False)]  # a TOML date, or "2026-12-31"


_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _week(table: dict[str, str]) -> dict[str, str]:
    """The week with its days named ``mon`` .. ``sun`` (``Monday``, ``MON`` are taken)."""
    week: dict[str, str] = {}
    for day, ranges in table.items():
        name = day.strip().lower()
        name = DAYS[_FULL_DAYS.index(name)] if name in _FULL_DAYS else name
        if name not in DAYS:
            raise ValueError(f"unknown day {day!r} (expected one of: {', '.join(DAYS)})")
        if name in week:
            raise ValueError(f"{day}: the day is given twice")
        try:
            parse_ranges(ranges)
        except ValueError as exc:
            raise ValueError(f"{day}: {exc}") from None
        week[name] = ranges
    return week


def _ranges(items: list[str]) -> list[str]:
    for item in items:
        parse_ranges(item)
    return items


Hours = Annotated[dict[str, str], AfterValidator(_week)]
Ranges = Annotated[list[str], AfterValidator(_ranges)]


class _Table(WithSecrets):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Leave(_Table):
    """``{ from = 2026-12-01, to = 2026-12-14 }``: both days included."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)

    start: LooseDate = Field(alias="from")
    end: LooseDate = Field(alias="to")

    @model_validator(mode="after")
    def _ordered(self) -> Leave:
        if self.end < self.start:
            raise ValueError(f"the leave ends ({self.end}) before it starts ({self.start})")
        return self

    def covers(self, day: date) -> bool:
        return self.start <= day <= self.end


class Vip(_Table):
    """``{ numbers = ["+74951234567", "+7495765*"], to = "101", name = "Gazprom" }``: these
    callers pass quiet hours, and go to ``to`` (a manager's extension or a phone number)
    before any lookup; without ``to`` the lookup finds their manager."""

    numbers: list[str] = Field(min_length=1)
    to: str = ""
    name: str = ""


class RulesSettings(_Table):
    """``[rules]``: the order of the checks and the rules for every manager."""

    order: list[Rule] = DEFAULT_ORDER
    timezone: str = ""  # "": the machine's own
    holidays: list[LooseDate] = []
    hours: Hours = {}  # {}: every manager is at work at any hour
    vip: list[Vip] = []
    blocked: list[str] = []
    deputy_learns: bool = False

    @field_validator("order")
    @classmethod
    def _order(cls, order: list[str]) -> list[str]:
        if len(set(order)) != len(order):
            raise ValueError("a check is listed twice (expected each check once)")
        if "lookup" not in order:
            raise ValueError("the order lacks 'lookup' (expected it among the checks)")
        return order

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str) -> str:
        if name:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown time zone {name!r} (expected an IANA name such as 'Europe/Moscow')"
                ) from None
        return name

    def zone(self) -> ZoneInfo | None:
        return ZoneInfo(self.timezone) if self.timezone else None
