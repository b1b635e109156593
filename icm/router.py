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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from icm.config import RoutingSettings
from icm.dialing import DialStrings
from icm.managers import Manager, Managers
from icm.metrics import Metrics
from icm.model import Answer, Decision, Presence, RouteRequest, Status, Step
from icm.numbers import Numbers, Skip
from icm.ratelimit import asking
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
    ) -> None:
        self.settings = settings
        self.sources = list(sources)
        self.numbers = numbers
        self.managers = managers
        self.dial = dial
        self.presence = presence
        self.metrics = metrics or Metrics()

    async def route(self, request: RouteRequest) -> Decision:
        """Decide where the call goes. Never raises for a source's failure; finishes
        before ``request.deadline`` (loop time) when one is given."""
        started = time.perf_counter()
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
        steps: list[Step] = []
        found, cut = await self._ask(number, request.deadline, steps)
        lookup_ms = (time.perf_counter() - started) * 1000
        self.metrics.lookup_seconds.observe(lookup_ms / 1000)
        decision = self._decide(number, found, cut)
        decision.steps = steps
        decision.lookup_ms = lookup_ms
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

    def _decide(self, number: str, found: _Found | None, cut: bool) -> Decision:
        routing = self.settings
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
        mobiles = [
            m
            for m in dict.fromkeys((*manager.mobiles, *found.answer.mobiles))
            if not self.managers.is_exception(m)
        ]
        ring_mobiles = routing.ring_mobiles and bool(mobiles)
        extension = self.dial.extension(manager.extension)
        presence = self.presence(manager.extension)
        if presence is Presence.OFFLINE:
            if not ring_mobiles:
                base.status, base.reason = Status.OFFLINE, "the manager's phone is offline"
                return base
            base.dial = self.dial.join([self.dial.external(m) for m in mobiles])
            base.reason = "phone offline: ringing his mobiles"
            return base
        if presence is Presence.BUSY:
            base.status, base.reason = Status.BUSY, "the manager is on another call"
            return base
        targets = [extension]
        if ring_mobiles:
            targets += [self.dial.external(m) for m in mobiles]
        base.dial = self.dial.join(targets)
        base.reason = f"phone {presence.value}" + (" + mobiles" if ring_mobiles else "")
        return base

    def _default(self, decision: Decision) -> Decision:
        target = self.settings.default_number
        if target:
            decision.dial = self.dial.default(target)
            decision.reason += f"; ringing the default number {target}"
        return decision
