"""The daemon: builds every part from the configuration, joins them, starts and stops
them in order. Open this file first.

From an AMI event to the action sent::

    AmiClient (icm/ami/client.py)        bytes -> Message, keeps the link alive
      -> Daemon._on_event                 dispatch by event name
         UserEvent ICMRoute -> AmiEntry   (icm/entries/ami.py) builds a RouteRequest
            -> Router.route               (icm/router.py) asks the sources in order:
               IcmDbSource.lookup         (connectors/icmdb.py) and any other source;
               CRM sources (connectors/amocrm.py, bitrix24.py, megaplan.py) behind
               GuardedSource              (icm/sourcing.py): cache, single-flight, breaker
            -> AmiEntry._deliver          Setvar ICM_REPLY on the waiting channel
         DeviceStateChange, ExtensionStatus -> PresenceTracker (icm/presence.py)
         DialBegin, Bridge*, Hangup -> CallTracker (icm/calls.py) -> Learner -> store
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable

from connectors.icmdb import IcmDbSettings, Learner
from icm import __version__
from icm.ami.client import AmiActionError, AmiClient, AmiError
from icm.ami.frames import Message
from icm.calls import CallTracker, Conversation
from icm.config import Config
from icm.dialing import DialStrings
from icm.entries.ami import AmiEntry
from icm.http import HttpServer
from icm.logs import Throttled
from icm.managers import Managers
from icm.metrics import Metrics
from icm.numbers import Numbers
from icm.presence import PresenceTracker
from icm.router import Router
from icm.sources import Source, SourceContext, SourceSettings, installed_sources
from icm.sourcing import guard
from icm.store import REDIS_SCHEMES, Store, StoreError, open_store

log = logging.getLogger(__name__)

MAINTENANCE_S = 300.0  # how often stale calls are swept and old learned bindings purged


def dialplan_wait(budget_s: float) -> float:
    """How long the dialplan waits for an answer (global ICM_WAIT): the lookup budget plus
    a margin for the answer's way back."""
    return round(budget_s + max(0.3, budget_s * 0.2), 2)


def freeze_startup_heap() -> None:
    """Move what start-up allocated (phone number metadata, settings models, libraries)
    out of the garbage collector's sight: full collections then walk only what calls
    allocate, which keeps their pauses out of the decision latency's tail."""
    gc.collect()
    gc.freeze()


def _ignore(uniqueid: str, conversations: list[Conversation]) -> None:
    """Learning is off: finished calls teach nothing."""


def build_sources(config: Config, context: SourceContext) -> list[tuple[Source, SourceSettings]]:
    """The active sources, in order, each with its settings; remote ones (CRMs) behind a
    cache, single-flight and circuit breaker (:func:`icm.sourcing.guard`)."""
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
    shared = config.store.url.startswith(REDIS_SCHEMES)
    return SourceContext(store, numbers, managers, shared=shared, metrics=metrics)


class Daemon:
    """:param store: an already built store (tests); by default the one ``store.url`` names."""

    def __init__(
        self, config: Config, *, metrics: Metrics | None = None, store: Store | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.numbers = numbers = config.numbers()
        self.managers = Managers.from_config(config, numbers)
        self.dial = DialStrings(config.dial, numbers)
        self.store = store or open_store(config.store.url)
        self.presence = PresenceTracker(self.dial.device)
        self.context = source_context(config, self.store, numbers, self.managers, self.metrics)
        self.sources = build_sources(config, self.context)
        self.router = Router(
            routing=config.routing,
            sources=self.sources,
            numbers=numbers,
            managers=self.managers,
            dial=self.dial,
            presence=self.presence.state,
            metrics=self.metrics,
        )
        self.ami = AmiClient(
            config.ami, self._on_event, on_login=self._after_login, metrics=self.metrics
        )
        self.entry = AmiEntry(
            self.ami,
            self.router,
            budget_s=config.routing.lookup_budget_ms / 1000,
            dial_timeout_s=config.routing.dial_timeout_s,
            metrics=self.metrics,
        )
        icmdb = config.source_settings("icmdb")
        assert isinstance(icmdb, IcmDbSettings)
        self.learner: Learner | None = None
        if icmdb.learn:
            self.learner = Learner(
                icmdb,
                self.store,
                numbers,
                self.managers,
                on_learned=self._learned,
            )
        self.tracker = CallTracker(
            self.dial.extension_of_channel,
            self.learner.on_finished if self.learner is not None else _ignore,
        )
        self.http = HttpServer(config.http, self.metrics, self.readiness)
        self._handlers: dict[str, list[Callable[[Message], None]]] = {
            "UserEvent": [self.entry.on_user_event],
            "DeviceStateChange": [self.presence.on_device_state],
            "ExtensionStatus": [self.presence.on_extension_status],
            "DialBegin": [self.tracker.on_dial_begin],
            "BridgeEnter": [self.tracker.on_bridge_enter],
            "BridgeLeave": [self.tracker.on_bridge_leave],
            "Hangup": [self.tracker.on_hangup],
        }
        self._handler_log = Throttled(log)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self.store_ok = False
        self.resyncs = 0  # completed presence resynchronisations (one per login)

    async def start(self) -> None:
        """Open the store, start the sources, the HTTP side and the AMI link."""
        log.info(
            "ICM %s starting: sources %s, %d managers, store %s",
            __version__,
            ", ".join(self.config.routing.sources) or "(none)",
            len(self.managers),
            self.store,
        )
        await self.store.open()
        self.store_ok = True
        for source, _ in self.sources:
            await source.start()
        if self.learner is not None:
            self.learner.start()
        if self.config.http.enabled:
            await self.http.start()
            log.info("HTTP: /metrics, /healthz, /readyz on %s", self.config.http.listen)
        self._tasks.append(self.ami.start())
        self._tasks.append(asyncio.create_task(self._maintenance(), name="maintenance"))
        freeze_startup_heap()

    async def stop(self) -> None:
        """Take no new calls, let those in flight finish within the lookup budget, write
        what was learned, then close AMI, sources, HTTP and the store."""
        log.info("ICM stopping: %d calls in flight", self.entry.in_flight)
        await self.entry.drain(self.entry.budget_s + 0.5)
        await self.ami.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.learner is not None:
            await self.learner.close()
        for source, _ in self.sources:
            try:
                await source.close()
            except Exception:
                log.exception("source %s failed to close", source.name)
        await self.http.stop()
        await self.store.close()
        gc.unfreeze()  # what start-up froze may be collected again
        self._stopped.set()
        log.info("ICM stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, stop. A second signal forces the exit."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()

    def readiness(self) -> dict[str, object]:
        ready = self.ami.logged_in and self.store_ok
        return {
            "ready": ready,
            "ami": "logged in" if self.ami.logged_in else "not connected",
            "store": "ok" if self.store_ok else "unavailable",
            "sources": list(self.config.routing.sources),
            "in_flight": self.entry.in_flight,
            "devices": self.presence.counts(),
        }

    def _on_event(self, message: Message) -> None:
        for handler in self._handlers.get(message.name, ()):
            try:
                handler(message)
            except Exception:
                self.metrics.handler_errors.inc()
                self._handler_log.exception("handler failed on AMI event %s", message.name)

    async def _after_login(self) -> None:
        """After every (re)connect: resynchronise presence, tell the dialplan how long to
        wait for answers."""
        self.presence.resync_started()
        try:
            devices = await self.ami.list_action("DeviceStateList", timeout=10)
            try:
                hints = await self.ami.list_action("ExtensionStateList", timeout=10)
            except AmiActionError as exc:
                log.warning("AMI: no extension states (%s); using device states only", exc)
                hints = []
        except AmiError:
            self.presence.replace([], [])
            raise
        self.presence.replace(devices, hints)
        log.info("presence resynchronised: %d devices, %d hints", len(devices), len(hints))
        wait = dialplan_wait(self.entry.budget_s)
        await self.ami.action("Setvar", {"Variable": "ICM_WAIT", "Value": f"{wait:.2f}"})
        self.resyncs += 1

    def _learned(self, number: str, extension: str) -> None:
        self.metrics.learned.inc()
        log.debug("learned %s -> %s", number, extension)

    async def _maintenance(self) -> None:
        icmdb = self.config.source_settings("icmdb")
        assert isinstance(icmdb, IcmDbSettings)
        while True:
            await asyncio.sleep(MAINTENANCE_S)
            dropped = self.tracker.sweep()
            if dropped:
                log.info("forgot %d calls whose end was never seen", dropped)
            with contextlib.suppress(StoreError):
                purged = await self.store.purge_learned(time.time() - icmdb.retention_days * 86400)
                if purged:
                    log.info("purged %d learned bindings older than the retention", purged)
