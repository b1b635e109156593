"""The rules an administrator sets, ready to ask: who is blocked, who is a VIP, whether a
manager is at work at a given moment, and who stands in for him.

Built once from the configuration (and rebuilt on reload, inside the Snapshot). The
router runs the checks in ``[rules] order``; this module only answers questions about
one moment, which the router takes from its clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, tzinfo

from icm.config import EXTENSION, Config
from icm.numbers import Numbers
from icm.rules_config import Leave
from icm.schedule import TimeRange, Week, parse_ranges, within


@dataclass(frozen=True, slots=True)
class Callers:
    """Numbers (E.164) and prefixes (``+7495*`` as ``+7495``) to match a caller against."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    @classmethod
    def parse(cls, items: Iterable[str], numbers: Numbers) -> Callers:
        exact, prefixes = set(), []
        for item in items:
            if item.endswith("*"):
                prefixes.append(item[:-1])
            else:
                exact.add(numbers.parse(item))
        return cls(frozenset(exact), tuple(prefixes))

    def match(self, number: str) -> str | None:
        """What matched ``number`` (itself, or ``prefix*``), if anything."""
        if number in self.exact:
            return number
        prefix = next((p for p in self.prefixes if number.startswith(p)), None)
        return f"{prefix}*" if prefix is not None else None


@dataclass(frozen=True, slots=True)
class Vip:
    """A VIP entry: its callers and where they go (``extension`` or ``number``; neither:
    the lookup finds their manager)."""

    callers: Callers
    name: str
    extension: str = ""
    number: str = ""


@dataclass(frozen=True, slots=True)
class VipMatch:
    vip: Vip
    matched: str

    def describe(self) -> str:
        name = f" {self.vip.name!r}" if self.vip.name else ""
        return f"VIP{name} ({self.matched})"


@dataclass(frozen=True, slots=True)
class Away:
    """Why a manager cannot take calls now: ``kind`` is ``away`` or ``leave``."""

    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class ManagerRules:
    own_week: bool  # his own ``hours`` (else the default week)
    week: Week | None  # his own week; None with own_week: at work at any hour
    quiet: tuple[TimeRange, ...]
    leave: tuple[Leave, ...]
    deputies: tuple[str, ...]
    when: frozenset[str]


class Rules:
    """The rules of one configuration."""

    def __init__(
        self,
        *,
        order: Iterable[str] = ("blocked", "vip", "lookup", "hours", "presence", "deputy"),
        zone: tzinfo | None = None,
        holidays: Iterable[date] = (),
        week: Week | None = None,
        vips: Iterable[Vip] = (),
        blocked: Callers = Callers(frozenset(), ()),
        managers: dict[str, ManagerRules] | None = None,
        deputy_learns: bool = False,
    ) -> None:
        self.order = tuple(order)
        self.zone = zone
        self.holidays = frozenset(holidays)
        self.week = week
        self.vips = tuple(vips)
        self.blocked = blocked
        self.managers = managers or {}
        self.deputy_learns = deputy_learns

    @classmethod
    def from_config(cls, config: Config, numbers: Numbers | None = None) -> Rules:
        numbers = numbers or config.numbers()
        rules = config.rules
        vips = []
        for entry in rules.vip:
            extension = entry.to if EXTENSION.match(entry.to) else ""
            number = numbers.parse(entry.to) if entry.to and not extension else ""
            vips.append(Vip(Callers.parse(entry.numbers, numbers), entry.name, extension, number))
        managers = {
            ext: ManagerRules(
                own_week=m.hours is not None,
                week=Week.parse(m.hours) if m.hours else None,
                quiet=tuple(r for item in m.quiet for r in parse_ranges(item)),
                leave=tuple(m.leave),
                deputies=tuple(m.deputies),
                when=frozenset(m.deputy_when),
            )
            for ext, m in config.managers.items()
        }
        return cls(
            order=rules.order,
            zone=rules.zone(),
            holidays=rules.holidays,
            week=Week.parse(rules.hours) if rules.hours else None,
            vips=vips,
            blocked=Callers.parse(rules.blocked, numbers),
            managers=managers,
            deputy_learns=rules.deputy_learns,
        )

    def local(self, moment: datetime) -> datetime:
        """``moment`` in the rules' time zone (the machine's own when none is set)."""
        return moment.astimezone(self.zone)

    def is_blocked(self, number: str) -> str | None:
        return self.blocked.match(number)

    def vip(self, number: str) -> VipMatch | None:
        for vip in self.vips:
            matched = vip.callers.match(number)
            if matched is not None:
                return VipMatch(vip, matched)
        return None

    def company_hours(self, moment: datetime) -> Away | None:
        """Whether the default week (and the holidays) has the company closed now."""
        return self._hours(self.week, moment, "the company's hours")

    def away(self, extension: str, moment: datetime, vip: VipMatch | None = None) -> Away | None:
        """Why the manager at ``extension`` is not at work at ``moment``, if he is not:
        on leave, a holiday, outside his week, or his quiet hours (unless ``vip`` is a VIP
        of his, or a VIP with no manager named)."""
        own = self.managers.get(extension)
        day = moment.date()
        if own is not None:
            leave = next((p for p in own.leave if p.covers(day)), None)
            if leave is not None:
                return Away("leave", f"on leave {leave.start}..{leave.end}")
        mine = own is not None and own.own_week
        week = own.week if own is not None and mine else self.week
        whose = "his hours" if mine else "the default hours"
        closed = self._hours(week, moment, whose)
        if closed is not None:
            return closed
        if own is not None:
            quiet = within(own.quiet, moment.time())
            if quiet is not None:
                if vip is not None and vip.vip.extension in ("", extension):
                    return None
                return Away("away", f"quiet hours {quiet}")
        return None

    def _hours(self, week: Week | None, moment: datetime, whose: str) -> Away | None:
        if moment.date() in self.holidays:
            return Away("away", f"holiday {moment.date()}")
        if week is None:
            return None
        if within(week.at(moment), moment.time()) is None:
            return Away("away", f"outside {whose} ({week.describe(moment)})")
        return None

    def deputies(self, extension: str) -> list[str]:
        """His deputies in order, each followed by his own (the config refuses loops)."""
        seen = {extension}
        chain: list[str] = []

        def walk(ext: str) -> None:
            own = self.managers.get(ext)
            for deputy in own.deputies if own is not None else ():
                if deputy not in seen:
                    seen.add(deputy)
                    chain.append(deputy)
                    walk(deputy)

        walk(extension)
        return chain

    def deputy_when(self, extension: str) -> frozenset[str]:
        own = self.managers.get(extension)
        return own.when if own is not None else frozenset()
