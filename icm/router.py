"""The router: a routing request in, a decision out. It never sees AMI.

1. The number is normalised; hidden or junk caller IDs go back (ANONYMOUS). A call from
   one of the managers' own mobiles, or from an exception number, is not a client's call
   (EXCEPTION).
2. The active sources are asked in order within the lookup budget; the first acceptable
   answer wins. A source that errs, times out or is cut by the budget is skipped. An
   answer naming an exception, an extension that is not a manager's, or something that
   is not a phone number counts as no answer: ICM never dials what a source sent without
   checking it. Every step goes into the decision's explanation.
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
from icm.sources import Source, SourceError, SourceSettings, SourceTimeout

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Found:
    source: str
    answer: Answer
    manager: Manager | None  # None: an external number, or a manager not on this PBX
    number: str | None  # an external E.164 number to dial


class Router:
    """:param presence: the presence of an extension (``PresenceTracker.state``)."""

    def __init__(
        self,
        *,
        routing: RoutingSettings,
        sources: Sequence[tuple[Source, SourceSettings]],
        numbers: Numbers,
        managers: Managers,
        dial: DialStrings,
        presence: Callable[[str], Presence],
        metrics: Metrics | None = None,
    ) -> None:
        self.routing = routing
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
            return Decision(Status.ANONYMOUS, reason=f"{number.reason}: {request.number!r}")
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
        """Ask the sources in order; (first acceptable answer, whether the budget cut)."""
        loop = asyncio.get_running_loop()
        for index, (source, settings) in enumerate(self.sources):
            remaining = deadline - loop.time() if deadline else float("inf")
            if remaining <= 0:
                self._cut(index, steps)
                return None, True
            own = settings.timeout_ms / 1000
            limit = min(own, remaining)
            started = time.perf_counter()
            outcome, detail, answer = "no-answer", "", None
            try:
                async with asyncio.timeout(limit):
                    answer = await source.lookup(number)
            except (TimeoutError, SourceTimeout):
                cut = limit < own
                outcome = "cut" if cut else "timeout"
                detail = f"no answer within {limit * 1000:.0f} ms" + (
                    " (lookup budget)" if cut else ""
                )
            except SourceError as exc:
                outcome, detail = "error", exc.reason
            except Exception as exc:  # a bug in a connector must not cost the call
                log.exception("source %s failed unexpectedly", source.name)
                outcome, detail = "error", f"unexpected {type(exc).__name__}"
            ms = (time.perf_counter() - started) * 1000
            self.metrics.source_seconds.labels(source.name).observe(ms / 1000)
            if answer is not None:
                found, outcome, detail = self._accept(source.name, answer)
                steps.append(Step(source.name, outcome, ms, detail))
                self.metrics.source_lookups.labels(source.name, outcome).inc()
                if found is not None:
                    return found, False
                continue
            steps.append(Step(source.name, outcome, ms, detail))
            self.metrics.source_lookups.labels(source.name, outcome).inc()
            if outcome == "cut":
                self._cut(index + 1, steps)
                return None, True
        return None, False

    def _cut(self, first: int, steps: list[Step]) -> None:
        """Record the sources from ``first`` on as never asked: the budget is spent."""
        for source, _ in self.sources[first:]:
            steps.append(Step(source.name, "cut", 0.0, "lookup budget spent"))
            self.metrics.source_lookups.labels(source.name, "cut").inc()

    def _accept(self, source: str, answer: Answer) -> tuple[_Found | None, str, str]:
        """Check an answer before trusting it: (found or None, outcome, explanation)."""
        detail = f" ({answer.detail})" if answer.detail else ""
        if answer.extension is not None:
            ext = answer.extension
            if self.managers.is_exception(ext):
                return None, "exception", f"extension {ext} is an exception{detail}"
            manager = self.managers.get(ext)
            if manager is None:
                return None, "invalid", f"extension {ext!r} is not a manager's{detail}"
            if answer.name and not manager.name:
                manager = Manager(manager.extension, answer.name, manager.mobiles)
            return _Found(source, answer, manager, None), "answered", f"manager {ext}{detail}"
        if answer.number is not None:
            number = self.numbers.normalise(answer.number)
            if isinstance(number, Skip):
                return None, "invalid", f"{answer.number!r} is not a phone number{detail}"
            if self.managers.is_exception(number):
                return None, "exception", f"number {number} is an exception{detail}"
            return _Found(source, answer, None, number), "answered", f"number {number}{detail}"
        who = answer.name or answer.user or "a manager"
        return (
            _Found(source, answer, None, None),
            "answered",
            f"{who} has no extension on this PBX{detail}",
        )

    def _decide(self, number: str, found: _Found | None, cut: bool) -> Decision:
        routing = self.routing
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
        target = self.routing.default_number
        if target:
            decision.dial = self.dial.default(target)
            decision.reason += f"; ringing the default number {target}"
        return decision
