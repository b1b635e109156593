"""What a reload replaces, built whole from one configuration, and the time limits a
request keeps for its whole life.

A running daemon holds one :class:`Snapshot` (numbers, managers, dial strings, sources,
the administrator's rules, router and :class:`Timing`). An entry takes the current one
when a request arrives and uses it until the answer is sent: a reload swaps the daemon's
snapshot in one assignment, and a call in flight finishes with the one it started with.
Every time limit derived from the lookup budget is derived here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from icm.config import Config
from icm.dialing import DialStrings
from icm.guard import guard
from icm.managers import Managers
from icm.metrics import Metrics
from icm.model import Presence, Timing
from icm.numbers import Numbers
from icm.router import Router, now
from icm.rules import Rules
from icm.sources import Source, SourceContext, SourceSettings, installed_sources
from icm.store import Store, is_shared

log = logging.getLogger(__name__)


def build_sources(config: Config, context: SourceContext) -> list[tuple[Source, SourceSettings]]:
    """The active sources, in order, each with its settings; remote ones (CRMs) behind a
    cache, single-flight and circuit breaker (:func:`icm.guard.guard`)."""
    known = installed_sources()
    chain = []
    for name in config.routing.sources:
        settings = config.source_settings(name)
        chain.append((guard(known[name](settings, context), settings, context), settings))
    return chain


def source_context(
    config: Config, store: Store, numbers: Numbers, managers: Managers, metrics: Metrics | None
) -> SourceContext:
    """What the sources get: the store (shared by instances when it is Redis) and the rest."""
    shared = is_shared(config.store.url)
    return SourceContext(store, numbers, managers, shared=shared, metrics=metrics)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a reload replaces, built whole from one configuration, then swapped in."""

    config: Config
    numbers: Numbers
    managers: Managers
    dial: DialStrings
    context: SourceContext
    sources: list[tuple[Source, SourceSettings]]
    router: Router
    timing: Timing
    rules: Rules

    @classmethod
    def build(
        cls,
        config: Config,
        store: Store,
        metrics: Metrics,
        presence: Callable[[str], Presence],
        clock: Callable[[], datetime] = now,
    ) -> Snapshot:
        """:param clock: the moment the rules are checked at (tests and ``icm lookup --at``
        give their own)."""
        numbers = config.numbers()
        managers = Managers.from_config(config, numbers)
        dial = DialStrings(config.dial, numbers)
        context = source_context(config, store, numbers, managers, metrics)
        sources = build_sources(config, context)
        rules = Rules.from_config(config, numbers)
        router = Router(
            settings=config.routing,
            sources=sources,
            numbers=numbers,
            managers=managers,
            dial=dial,
            presence=presence,
            metrics=metrics,
            rules=rules,
            clock=clock,
        )
        timing = Timing(config.routing.lookup_budget_ms / 1000, config.routing.dial_timeout_s)
        return cls(config, numbers, managers, dial, context, sources, router, timing, rules)

    async def start(self) -> None:
        for source, _ in self.sources:
            await source.start()

    async def close(self) -> None:
        for source, _ in self.sources:
            try:
                await source.close()
            except Exception:
                log.exception("source %s failed to close", source.name)
