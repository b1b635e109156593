"""The router: a routing request in, a decision out. It never sees AMI.

1. The number is normalised; hidden or junk caller IDs go back (ANONYMOUS). A call from
   one of the managers' own mobiles, or from an exception number, is not a client's call
   (EXCEPTION).
2. The active sources are asked in order within the lookup budget; the first acceptable
   answer wins. A source that errs, times out or is cut by the budget is skipped. An
   answer naming an exception, an extension that is not a manager's, or something that
   is not a phone number counts as no answer: ICM never dials what a source sent without
   checking it; so does a CRM user the CRM says is inactive, and a record with no usable
   responsible (none set, a user the CRM no longer knows). A CRM user is mapped to his
   extension through ``[managers]``. Every step goes into the decision's explanation.

   ``lookup = "chain"`` asks one source after another. ``lookup = "parallel"`` asks them
   all at once and decides as soon as the first source in order with an acceptable answer
   has every source above it settled: the wait is the slowest needed source's, not the
   sum. The sources not needed any more are cancelled.
3. The manager's presence decides the rest: offline or busy sends the call back (OFFLINE,
   BUSY) unless ``ring_mobiles`` lets his mobiles ring; no manager means the default
   number or back (NOTFOUND); a manager with no extension here means the default number
   (NOTCONNECTED).

Steps 2 and 3 are checks among the administrator's rules (icm/rules.py), run in
``[rules] order`` (default: blocked, vip, lookup, hours, presence, deputy) at the moment
the router's clock gives. A check either decides (BLOCKED; OFFHOURS when the company is
closed and no manager is known yet), names the target (vip, lookup), or marks the
manager (hours: away or on leave; presence: offline or busy); the deputy check puts a
free deputy in for a manager marked before it, and names the fallback deputy the
dialplan rings when the manager is busy or does not answer. What is left after the last
check is decided by :meth:`Router._finish`. Each check leaves a :class:`Check` in the
decision (``icm lookup --explain``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from icm.config import RoutingSettings
from icm.dialing import DialStrings
from icm.managers import Manager, Managers
from icm.metrics import Metrics
from icm.model import Answer, Check, Decision, Fallback, Presence, RouteRequest, Status, Step
from icm.numbers import Numbers, Skip
from icm.ratelimit import asking
from icm.rules import Away, Rules, VipMatch
from icm.safetext import shown
from icm.sources import Source, SourceError, SourceSettings, SourceSkipped, SourceTimeout

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Found:
    """An acceptable answer: the source, its answer, and who or what to dial."""

    source: str
    answer: Answer
    manager: Manager | None  # None: an external number, or a manager not on this PBX
    number: str | None  # an external E.164 number to dial


@dataclass(frozen=True, slots=True)
class _Asked:
    """One source's part in a lookup."""

    step: Step
    found: _Found | None = None


# DIALSTATUS values that fall to the fallback deputy, by deputy_when.
_FALLBACK_ON = (("busy", "BUSY"), ("noanswer", "NOANSWER"), ("offline", "CHANUNAVAIL"))


def now() -> datetime:
    """The real clock (the rules convert it to their time zone)."""
    return datetime.now(UTC)


@dataclass(slots=True)
class _Call:
    """What the checks found out so far about one call."""

    number: str
    moment: datetime
    checks: list[Check] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    decision: Decision | None = None  # set by a check that settles the call
    vip: VipMatch | None = None
    found: _Found | None = None
    named_by: str = ""  # the rule that named the target (vip, lookup)
    looked: bool = False
    cut: bool = False
    lookup_ms: float = 0.0
    away: Away | None = None
    presence: Presence | None = None  # OFFLINE or BUSY when the presence check marked it
    mobiles_only: bool = False
    mobiles: list[str] = field(default_factory=list)
    deputy: str = ""
    fallback: Fallback | None = None


class Router:
    """Turns a routing request into a decision: who serves this caller, and can he take
    the call.

    :param presence: the presence of an extension (``PresenceTracker.state``).
    """

    def __init__(
        self,
        *,
        settings: RoutingSettings,
        sources: Sequence[tuple[Source, SourceSettings]],
        numbers: Numbers,
        managers: Managers,
        dial: DialStrings,
        presence: Callable[[str], Presence],
        metrics: Metrics | None = None,
        rules: Rules | None = None,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.settings = settings
        self.sources = list(sources)
        self.numbers = numbers
        self.managers = managers
        self.dial = dial
        self.presence = presence
        self.metrics = metrics or Metrics()
        self.rules = rules or Rules()
        self.clock = clock

    async def route(self, request: RouteRequest) -> Decision:
        """Decide where the call goes. Never raises for a source's failure; finishes
        before ``request.deadline`` (loop time) when one is given."""
        number = self.numbers.normalise(request.number)
        if isinstance(number, Skip):
            return Decision(
                Status.ANONYMOUS, reason=f"{number.reason}: {shown(repr(request.number))}"
            )
        owner = self.managers.owner_of_mobile(number)
        if owner is not None:
            return Decision(
                Status.EXCEPTION,
                number=number,
                reason=f"the caller is the mobile of manager {owner.extension}",
            )
        if self.managers.is_exception(number):
            return Decision(Status.EXCEPTION, number=number, reason="the caller is an exception")
        call = _Call(number, self.rules.local(self.clock()))
        for rule in self.rules.order:
            check = await self._checks[rule](self, call, request)
            call.checks.append(check)
            if call.decision is not None:
                break
        decision = call.decision or self._finish(call)
        decision.steps = call.steps
        decision.checks = call.checks
        decision.lookup_ms = call.lookup_ms
        if call.looked:
            self.metrics.lookup_seconds.observe(call.lookup_ms / 1000)
        return decision

    # -- the checks, each run in [rules] order -------------------------------------------

    async def _check_blocked(self, call: _Call, request: RouteRequest) -> Check:
        matched = self.rules.is_blocked(call.number)
        if matched is None:
            return Check("blocked", "passed", "not a blocked caller")
        if call.vip is not None:
            return Check("blocked", "passed", f"blocked ({matched}), but {call.vip.describe()}")
        call.decision = Decision(
            Status.BLOCKED, call.number, rule="blocked", reason=f"blocked caller ({matched})"
        )
        return Check("blocked", "decided", f"blocked caller ({matched})")

    async def _check_vip(self, call: _Call, request: RouteRequest) -> Check:
        match = self.rules.vip(call.number)
        if match is None:
            return Check("vip", "passed", "not a VIP")
        call.vip = match
        vip = match.vip
        if call.found is not None or not (vip.extension or vip.number):
            whom = "the lookup named the manager" if call.found else "no target named"
            return Check("vip", "matched", f"{match.describe()}: passes quiet hours; {whom}")
        manager = self.managers.get(vip.extension) if vip.extension else None
        answer = Answer(extension=vip.extension or None, number=vip.number or None)
        call.found = _Found("vip", answer, manager, vip.number or None)
        call.named_by = "vip"
        return Check("vip", "matched", f"{match.describe()}: to {vip.extension or vip.number}")

    async def _check_lookup(self, call: _Call, request: RouteRequest) -> Check:
        if call.found is not None:
            return Check("lookup", "skipped", f"the {call.named_by} rule named the target")
        started = time.perf_counter()
        call.found, call.cut = await self._ask(call.number, request.deadline, call.steps)
        call.lookup_ms = (time.perf_counter() - started) * 1000
        call.looked = True
        if call.found is None:
            why = "lookup budget spent" if call.cut else "no source knows the caller"
            return Check("lookup", "passed", why)
        call.named_by = "lookup"
        found = call.found
        target = found.number or (found.manager.extension if found.manager else "no extension")
        return Check("lookup", "found", f"{found.source}: {target}")

    async def _check_hours(self, call: _Call, request: RouteRequest) -> Check:
        found = call.found
        if found is not None and found.number is not None:
            return Check("hours", "skipped", "an external number keeps no hours")
        if found is None or found.manager is None:
            closed = self.rules.company_hours(call.moment)
            if closed is None:
                return Check("hours", "passed", f"{self._when(call)}: the company is open")
            reason = f"no manager known; {closed.reason}"
            call.decision = Decision(Status.OFFHOURS, call.number, rule="hours", reason=reason)
            return Check("hours", "decided", f"{self._when(call)}: {reason}")
        ext = found.manager.extension
        away = self.rules.away(ext, call.moment, call.vip)
        if away is None and found.answer.away:
            away = Away("away", f"{found.source}: {found.answer.away}")
        if away is None:
            return Check("hours", "passed", f"{self._when(call)}: manager {ext} is at work")
        call.away = away
        return Check("hours", away.kind, f"{self._when(call)}: manager {ext} {away.reason}")

    async def _check_presence(self, call: _Call, request: RouteRequest) -> Check:
        found = call.found
        if found is None or found.manager is None:
            return Check("presence", "skipped", "no manager on this PBX to check")
        manager = found.manager
        call.mobiles = [
            m
            for m in dict.fromkeys((*manager.mobiles, *found.answer.mobiles))
            if not self.managers.is_exception(m)
        ]
        presence = self.presence(manager.extension)
        if presence is Presence.OFFLINE:
            if self.settings.ring_mobiles and call.mobiles:
                call.mobiles_only = True
                return Check("presence", "passed", "phone offline: his mobiles will ring")
            call.presence = presence
            return Check("presence", "offline", "the manager's phone is offline")
        if presence is Presence.BUSY:
            call.presence = presence
            return Check("presence", "busy", "the manager is on another call")
        return Check("presence", "passed", f"phone {presence.value}")

    async def _check_deputy(self, call: _Call, request: RouteRequest) -> Check:
        found = call.found
        if found is None or found.manager is None:
            return Check("deputy", "skipped", "no manager to stand in for")
        ext = found.manager.extension
        chain = self.rules.deputies(ext)
        if not chain:
            return Check("deputy", "passed", f"manager {ext} has no deputies")
        when = self.rules.deputy_when(ext)
        marks = []
        if call.away is not None:
            marks.append(call.away.kind)
        if call.presence is not None:
            marks.append(call.presence.value)
        needed = [mark for mark in marks if mark in when]
        on = tuple(status for key, status in _FALLBACK_ON if key in when)
        if needed:
            deputy, skipped = self._free_deputy(chain, call)
            if deputy is None:
                return Check("deputy", "none", f"{needed[0]}: no deputy is free ({skipped})")
            call.deputy = deputy
            return Check("deputy", "deputy", f"{needed[0]}: deputy {deputy} takes the call")
        if marks:
            return Check("deputy", "passed", f"{', '.join(marks)} is not in his deputy_when")
        if not on:
            return Check("deputy", "passed", "the manager is free")
        deputy, skipped = self._free_deputy(chain, call)
        if deputy is None:
            return Check("deputy", "passed", f"no deputy is free for a fallback ({skipped})")
        call.fallback = Fallback(deputy, self.dial.extension(deputy), on)
        return Check("deputy", "passed", f"deputy {deputy} if the manager is {'/'.join(on)}")

    _checks = {
        "blocked": _check_blocked,
        "vip": _check_vip,
        "lookup": _check_lookup,
        "hours": _check_hours,
        "presence": _check_presence,
        "deputy": _check_deputy,
    }

    def _free_deputy(self, chain: list[str], call: _Call) -> tuple[str | None, str]:
        """The first deputy at work and not offline or busy; else why none is."""
        why = []
        for deputy in chain:
            away = self.rules.away(deputy, call.moment, call.vip)
            presence = self.presence(deputy)
            if away is not None:
                why.append(f"{deputy} {away.reason}")
            elif presence in (Presence.OFFLINE, Presence.BUSY):
                why.append(f"{deputy} {presence.value}")
            else:
                return deputy, ""
        return None, "; ".join(why)

    @staticmethod
    def _when(call: _Call) -> str:
        return call.moment.strftime("%a %Y-%m-%d %H:%M")

    def _finish(self, call: _Call) -> Decision:
        """The decision once every check has run and none settled the call."""
        decision = self._decide(call.number, call.found, call.cut, call)
        if not decision.rule:
            decision.rule = call.named_by or "lookup"
        return decision

    async def _ask(
        self, number: str, deadline: float, steps: list[Step]
    ) -> tuple[_Found | None, bool]:
        """Ask the sources; (first acceptable answer, whether the budget cut)."""
        if self.settings.lookup == "parallel" and len(self.sources) > 1:
            return await self._ask_parallel(number, deadline, steps)
        for index, (source, settings) in enumerate(self.sources):
            asked = await self._ask_one(source, settings, number, deadline)
            if asked is None:
                self._cut(index, steps)
                return None, True
            self._record(asked.step, steps)
            if asked.found is not None:
                return asked.found, False
            if asked.step.outcome == "cut":
                self._cut(index + 1, steps)
                return None, True
        return None, False

    async def _ask_parallel(
        self, number: str, deadline: float, steps: list[Step]
    ) -> tuple[_Found | None, bool]:
        """Every source at once; the first in order wins once those above it settled."""
        started = time.perf_counter()
        tasks = [
            asyncio.create_task(self._ask_one(source, settings, number, deadline))
            for source, settings in self.sources
        ]
        cut = False
        try:
            for index, task in enumerate(tasks):
                asked = await task  # each is bounded by its own timeout and the budget
                if asked is None:
                    self._cut(index, steps)
                    return None, True
                self._record(asked.step, steps)
                if asked.found is not None:
                    self._not_needed(index + 1, tasks, started, steps)
                    return asked.found, False
                cut = cut or asked.step.outcome == "cut"
            return None, cut
        finally:
            for task in tasks:
                task.cancel()

    def _not_needed(
        self,
        first: int,
        tasks: list[asyncio.Task[_Asked | None]],
        started: float,
        steps: list[Step],
    ) -> None:
        """Record the sources below the winner: cancelled, or done but not needed."""
        now_ms = (time.perf_counter() - started) * 1000
        for (source, _), task in zip(self.sources[first:], tasks[first:], strict=True):
            asked = task.result() if task.done() and not task.cancelled() else None
            if asked is not None:
                step = Step(
                    source.name,
                    "not-needed",
                    asked.step.ms,
                    f"a source above answered first; it had said: {asked.step.outcome}",
                )
            else:
                step = Step(source.name, "not-needed", now_ms, "a source above answered first")
            self._record(step, steps)

    async def _ask_one(
        self, source: Source, settings: SourceSettings, number: str, deadline: float
    ) -> _Asked | None:
        """Ask one source within its timeout and the budget; None if no time is left.
        Never raises for the source's failure."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        remaining = deadline - now if deadline else float("inf")
        if remaining <= 0:
            return None
        own = settings.timeout_ms / 1000
        limit = min(own, remaining)
        started = time.perf_counter()
        outcome, detail, answer = "no-answer", "", None
        try:
            # One clock for the router's wait and the source's own timeout (the guard's).
            with asking(by=now + limit, timeout_at=now + own):
                async with asyncio.timeout_at(now + limit):
                    answer = await source.lookup(number)
        except (TimeoutError, SourceTimeout):
            cut = limit < own
            outcome = "cut" if cut else "timeout"
            detail = f"no answer within {limit * 1000:.0f} ms" + (" (lookup budget)" if cut else "")
        except SourceSkipped as exc:
            outcome, detail = "skipped", exc.reason
        except SourceError as exc:
            outcome, detail = "error", exc.reason
        except Exception as exc:  # a bug in a connector must not cost the call
            log.exception("source %s failed unexpectedly", source.name)
            outcome, detail = "error", f"unexpected {type(exc).__name__}"
        ms = (time.perf_counter() - started) * 1000
        self.metrics.source_seconds.labels(source.name).observe(ms / 1000)
        if answer is None:
            return _Asked(Step(source.name, outcome, ms, detail))
        found, outcome, detail = self._accept(source.name, answer)
        return _Asked(Step(source.name, outcome, ms, detail), found)

    def _record(self, step: Step, steps: list[Step]) -> None:
        steps.append(step)
        self.metrics.source_lookups.labels(step.source, step.outcome).inc()

    def _cut(self, first: int, steps: list[Step]) -> None:
        """Record the sources from ``first`` on as never asked: the budget is spent."""
        for source, _ in self.sources[first:]:
            steps.append(Step(source.name, "cut", 0.0, "lookup budget spent"))
            self.metrics.source_lookups.labels(source.name, "cut").inc()

    def _accept(self, source: str, answer: Answer) -> tuple[_Found | None, str, str]:
        """Check an answer before trusting it: (found or None, outcome, explanation)."""
        detail = f" ({answer.detail})" if answer.detail else ""
        if not answer.responsible:
            return None, "no-answer", answer.detail
        if not answer.active:
            who = answer.name or answer.user or "the manager"
            return None, "inactive", f"{who} is inactive or fired in {source}{detail}"
        mapped = None
        if answer.user is not None or answer.email:
            mapped = self.managers.by_user(source, answer.user, answer.email)
        if answer.extension is not None or mapped is not None:
            return self._accept_extension(source, answer, mapped, detail)
        if answer.number is not None:
            return self._accept_number(source, answer, answer.number, detail)
        who = answer.name or answer.user or "a manager"
        unconnected = _Found(source, answer, None, None)
        return unconnected, "answered", f"{who} has no extension on this PBX{detail}"

    def _accept_extension(
        self, source: str, answer: Answer, mapped: Manager | None, detail: str
    ) -> tuple[_Found | None, str, str]:
        """An answer naming an extension, or a CRM user mapped to one."""
        ext = answer.extension if answer.extension is not None else ""
        manager = self.managers.get(ext) if ext else None
        if manager is None and mapped is not None:
            manager, ext = mapped, mapped.extension
        if self.managers.is_exception(ext):
            return None, "exception", f"extension {ext} is an exception{detail}"
        if manager is None:
            return None, "invalid", f"extension {ext!r} is not a manager's{detail}"
        if answer.name and not manager.name:
            manager = Manager(manager.extension, answer.name, manager.mobiles)
        return _Found(source, answer, manager, None), "answered", f"manager {ext}{detail}"

    def _accept_number(
        self, source: str, answer: Answer, raw: str, detail: str
    ) -> tuple[_Found | None, str, str]:
        """An answer naming an external phone number."""
        number = self.numbers.normalise(raw)
        if isinstance(number, Skip):
            return None, "invalid", f"{raw!r} is not a phone number{detail}"
        if self.managers.is_exception(number):
            return None, "exception", f"number {number} is an exception{detail}"
        return _Found(source, answer, None, number), "answered", f"number {number}{detail}"

    def _decide(self, number: str, found: _Found | None, cut: bool, call: _Call) -> Decision:
        if found is None:
            if cut:
                return Decision(Status.TIMEOUT, number=number, reason="lookup budget spent")
            return self._default(Decision(Status.NOTFOUND, number, reason="no source knows"))
        base = Decision(Status.DIAL, number, source=found.source)
        if found.number is not None:
            base.manager = found.number
            base.dial = self.dial.external(found.number)
            base.reason = "bound to an external number"
            return base
        manager = found.manager
        if manager is None:
            base.status = Status.NOTCONNECTED
            base.manager = found.answer.user or ""
            base.manager_name = found.answer.name
            base.reason = "the manager has no extension on this PBX"
            return self._default(base)
        base.manager, base.manager_name = manager.extension, manager.name
        if call.deputy:
            base.deputy, base.rule = call.deputy, "deputy"
            base.dial = self.dial.extension(call.deputy)
            why = call.away.reason if call.away else f"phone {call.presence}"
            base.reason = f"manager {manager.extension}: {why}; ringing deputy {call.deputy}"
            return base
        if call.away is not None:
            base.status, base.rule = Status.OFFHOURS, "hours"
            base.reason = f"the manager is not at work: {call.away.reason}"
            return base
        if call.presence is Presence.OFFLINE:
            base.status, base.rule = Status.OFFLINE, "presence"
            base.reason = "the manager's phone is offline"
            return base
        if call.presence is Presence.BUSY:
            base.status, base.rule = Status.BUSY, "presence"
            base.reason = "the manager is on another call"
            return base
        base.fallback = call.fallback
        mobiles = [self.dial.external(m) for m in call.mobiles]
        if call.mobiles_only:
            base.dial = self.dial.join(mobiles)
            base.reason = "phone offline: ringing his mobiles"
            return base
        ring_mobiles = self.settings.ring_mobiles and bool(mobiles)
        targets = [self.dial.extension(manager.extension), *(mobiles if ring_mobiles else [])]
        base.dial = self.dial.join(targets)
        presence = self.presence(manager.extension) if "presence" in self.rules.order else None
        base.reason = (f"phone {presence.value}" if presence else "presence not checked") + (
            " + mobiles" if ring_mobiles else ""
        )
        return base

    def _default(self, decision: Decision) -> Decision:
        target = self.settings.default_number
        if target:
            decision.dial = self.dial.default(target)
            decision.reason += f"; ringing the default number {target}"
        return decision
