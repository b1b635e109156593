"""The daemon: builds every part from the configuration, joins them, starts and stops
them in order, and reloads the routing settings without dropping a call. Open this first.

From an AMI event to the action sent::

    AmiClient (icm/ami/client.py)        bytes -> Message, keeps the link alive
      -> Daemon._on_event                 dispatch by event name
         UserEvent ICMRoute -> AmiEntry   (icm/entries/ami.py) builds a RouteRequest
            -> Claims.route               (icm/cluster.py) one instance per call (Redis)
            -> Router.route               (icm/router.py) asks the sources in order:
               IcmDbSource.lookup         (connectors/icmdb.py) and any other source;
               CRM sources (connectors/amocrm.py, bitrix24.py, megaplan.py) behind
               GuardedSource              (icm/guard.py): cache, single-flight, breaker
            -> AmiEntry._deliver          Setvar ICM_REPLY on the waiting channel
         DeviceStateChange, ExtensionStatus -> PresenceTracker (icm/presence.py)
         DialBegin, Bridge*, Hangup -> CallTracker (icm/calls.py) -> Learner (icm/learner.py) -> store

The same Router also serves ``GET /route`` (icm/entries/curl.py, for CURL()) and FastAGI
(icm/entries/agi.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from icm import __version__
from icm.ami.client import AmiActionError, AmiClient, AmiError
from icm.ami.frames import Message
from icm.calls import CallTracker
from icm.cluster import Claims
from icm.config import Config, ConfigError, load, split_host_port
from icm.dialing import DialStrings, technology_warnings
from icm.entries.agi import AgiEntry
from icm.entries.ami import AmiEntry
from icm.entries.curl import HttpEntry
from icm.guard import guard
from icm.http_server import HttpServer
from icm.learner import Learner, LearnSettings
from icm.logs import Throttled
from icm.managers import Managers
from icm.metrics import Metrics
from icm.numbers import Numbers
from icm.presence import PresenceTracker
from icm.router import Router
from icm.sources import Source, SourceContext, SourceSettings, installed_sources
from icm.store import Store, StoreError, is_shared

log = logging.getLogger(__name__)

MAINTENANCE_S = 300.0  # how often stale calls are swept and old learned bindings purged
HEALTH_S = 2.0  # how often the store is checked
# Sections a reload cannot change in a running daemon (they need a restart).
RESTART_ONLY = ("ami", "store", "http", "agi")


def dialplan_wait(budget_s: float) -> float:
    """How long the dialplan waits for an answer (global ICM_WAIT): the lookup budget
    itself, "the longest a caller waits". The daemon decides and answers inside it
    (``Entry.send_by``)."""
    return round(budget_s, 2)


def freeze_startup_heap() -> None:
    """Move what start-up allocated (phone number metadata, settings models, libraries)
    out of the garbage collector's sight: full collections then walk only what calls
    allocate, which keeps their pauses out of the decision latency's tail."""
    gc.collect()
    gc.freeze()


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
class Routing:
    """Everything a reload replaces: built whole from a configuration, then swapped in."""

    config: Config
    numbers: Numbers
    managers: Managers
    dial: DialStrings
    context: SourceContext
    sources: list[tuple[Source, SourceSettings]]
    router: Router

    @classmethod
    def build(
        cls, config: Config, store: Store, metrics: Metrics, presence: Callable[[str], object]
    ) -> Routing:
        numbers = config.numbers()
        managers = Managers.from_config(config, numbers)
        dial = DialStrings(config.dial, numbers)
        context = source_context(config, store, numbers, managers, metrics)
        sources = build_sources(config, context)
        router = Router(
            routing=config.routing,
            sources=sources,
            numbers=numbers,
            managers=managers,
            dial=dial,
            presence=presence,  # type: ignore[arg-type]
            metrics=metrics,
        )
        return cls(config, numbers, managers, dial, context, sources, router)

    @property
    def budget_s(self) -> float:
        return self.config.routing.lookup_budget_ms / 1000

    async def start(self) -> None:
        for source, _ in self.sources:
            await source.start()

    async def close(self) -> None:
        for source, _ in self.sources:
            try:
                await source.close()
            except Exception:
                log.exception("source %s failed to close", source.name)


class Daemon:
    """:param store: an already built store (tests); by default the one ``store.url`` names.
    :param environ: where secrets are read on reload (the process environment).
    """

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        store: Store | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.environ = environ if environ is not None else {}
        self.metrics = metrics or Metrics()
        self.store = store or config.store.open()
        self.shared = is_shared(config.store.url)
        budget_s = config.routing.lookup_budget_ms / 1000
        self.claims = (
            Claims(self.store, self.metrics, timeout_s=budget_s * 2 / 3) if self.shared else None
        )
        self.presence = PresenceTracker(lambda ext: self.routing.dial.device(ext))
        self.routing = Routing.build(config, self.store, self.metrics, self.presence.state)
        self.ami = AmiClient(
            config.ami, self._on_event, on_login=self._after_login, metrics=self.metrics
        )
        router, budget_s = self.routing.router, self.routing.budget_s
        dial_timeout_s = config.routing.dial_timeout_s
        self.entry = AmiEntry(
            self.ami,
            router,
            budget_s=budget_s,
            dial_timeout_s=dial_timeout_s,
            metrics=self.metrics,
            claim=self.claims.route if self.claims else None,
        )
        self.http_entry = HttpEntry(
            router, budget_s=budget_s, dial_timeout_s=dial_timeout_s, metrics=self.metrics
        )
        self.agi = AgiEntry(
            config.agi,
            router,
            budget_s=budget_s,
            dial_timeout_s=dial_timeout_s,
            metrics=self.metrics,
        )
        self.learner: Learner | None = None
        icmdb = config.source_settings("icmdb")
        assert isinstance(icmdb, LearnSettings)
        if icmdb.learn:
            self.learner = Learner(
                icmdb,
                self.store,
                self.routing.numbers,
                self.routing.managers,
                claim=self.claims.learn if self.claims else None,
                on_learned=self._learned,
                on_store_error=lambda: self.metrics.store_errors.labels("learn").inc(),
            )
        self.tracker = CallTracker(
            lambda channel: self.routing.dial.extension_of_channel(channel),
            self.learner.on_finished if self.learner is not None else _ignore,
        )
        self.http = HttpServer(config.http, self.metrics, self.readiness)
        self.http.app.router.add_get("/route", self.http_entry.route)
        self.http.app.router.add_post("/-/reload", self._reload_over_http)
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
        self._reloading = asyncio.Lock()
        self.store_ok = False
        self.resyncs = 0  # completed presence resynchronisations (one per login)

    # -- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store, start the sources, the HTTP and AGI sides and the AMI link."""
        routing = self.config.routing
        log.info(
            "ICM %s starting: sources %s, %d managers, store %s%s",
            __version__,
            ", ".join(routing.sources) or "(none)",
            len(self.routing.managers),
            self.store,
            " (shared: per-call claims on)" if self.shared else "",
        )
        await self.store.open()
        await self._check_store()
        await self.routing.start()
        if self.learner is not None:
            self.learner.start()
        if self.config.http.enabled:
            await self.http.start()
            log.info("HTTP: /metrics /healthz /readyz /route on %s", self.config.http.listen)
        if self.config.agi.enabled:
            await self.agi.start()
            log.info("FastAGI: agi://%s/route", self.config.agi.listen)
        self._tasks.append(self.ami.start())
        self._tasks.append(asyncio.create_task(self._maintenance(), name="maintenance"))
        self._tasks.append(asyncio.create_task(self._health(), name="health"))
        freeze_startup_heap()

    async def stop(self) -> None:
        """Take no new calls, let those in flight finish within the lookup budget, write
        what was learned, then close AMI, sources, HTTP and the store."""
        log.info("ICM stopping: %d calls in flight", self.entry.in_flight)
        grace = self.routing.budget_s + 0.5
        self.http_entry.accepting = False
        await asyncio.gather(self.entry.drain(grace), self.agi.stop(grace))
        await self.ami.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.learner is not None:
            await self.learner.close()
        await self.routing.close()
        await self.http.stop()
        await self.store.close()
        gc.unfreeze()  # what start-up froze may be collected again
        log.info("ICM stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT (SIGHUP reloads), stop."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        await self.start()
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()

    # -- reload ---------------------------------------------------------------------------
    async def reload(self) -> list[str]:
        """Re-read the configuration file. Routing settings (sources and their order,
        exceptions, managers, region, default number, dial templates, budget, timeouts)
        change for the next call; calls in flight finish with the old ones. An invalid
        file is refused with the same lines as at start-up, and the old settings stay.

        :returns: the problems ([] when the new settings are in force).
        """
        async with self._reloading:
            try:
                config = load(self.config.path, self.environ)
            except ConfigError as exc:
                self.metrics.reloads.labels("refused").inc()
                for line in exc.lines:
                    log.error("reload refused: %s", line)
                return exc.lines
            for section in RESTART_ONLY:
                if getattr(config, section) != getattr(self.config, section):
                    log.warning("reload: [%s] changed; it takes effect after a restart", section)
            routing = Routing.build(config, self.store, self.metrics, self.presence.state)
            await routing.start()
            old, self.routing = self.routing, routing
            self.config = config.model_copy(
                update={section: getattr(self.config, section) for section in RESTART_ONLY}
            )
            budget_s, dial_timeout_s = routing.budget_s, config.routing.dial_timeout_s
            for entry in (self.entry, self.http_entry, self.agi):
                entry.router = routing.router
                entry.budget_s = budget_s
                entry.dial_timeout_s = dial_timeout_s
            if self.learner is not None:
                self.learner.numbers, self.learner.managers = routing.numbers, routing.managers
            logging.getLogger().setLevel(config.log.level.upper())
            self.metrics.reloads.labels("applied").inc()
            log.info(
                "reloaded %s: sources %s, %d managers",
                config.path,
                ", ".join(config.routing.sources) or "(none)",
                len(routing.managers),
            )
            if self.ami.logged_in:
                with contextlib.suppress(AmiError):
                    await self._publish_wait()
        # Calls in flight may still be asking the old sources.
        await asyncio.sleep(old.budget_s)
        await old.close()
        return []

    async def _reload_over_http(self, request: object) -> object:
        from aiohttp import web

        problems = await self.reload()
        if problems:
            return web.Response(status=400, text="\n".join(problems) + "\n")
        return web.Response(text="reloaded\n")

    # -- health ---------------------------------------------------------------------------
    def readiness(self) -> dict[str, object]:
        """Ready while logged in to AMI. A store that is down leaves the daemon ready but
        degraded: calls are routed with the sources that do not need it."""
        ready = self.ami.logged_in
        status = "ready" if ready and self.store_ok else ("degraded" if ready else "not ready")
        return {
            "ready": ready,
            "status": status,
            "ami": "logged in" if self.ami.logged_in else "not connected",
            "store": "ok" if self.store_ok else "unavailable",
            "learn_buffer": self.learner.pending if self.learner else 0,
            "sources": list(self.config.routing.sources),
            "in_flight": self.entry.in_flight + self.agi.in_flight,
            "devices": self.presence.counts(),
            "pid": os.getpid(),
        }

    async def _check_store(self) -> None:
        try:
            await self.store.ping()
        except StoreError as exc:
            if self.store_ok or not self.resyncs:
                log.warning("store unavailable: %s (routing goes on without it)", exc)
            self.store_ok = False
        else:
            if not self.store_ok and self.resyncs:
                log.info("store available again")
            self.store_ok = True
        self.metrics.store_up.set(1 if self.store_ok else 0)
        self.metrics.learn_buffer.set(self.learner.pending if self.learner else 0)

    async def _health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_S)
            await self._check_store()

    # -- AMI ------------------------------------------------------------------------------
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
        names = [m.get("device") for m in devices] + [m.get("hint") for m in hints]
        for line in technology_warnings(self.routing.config.dial, names):
            log.warning("%s", line)
        await self._publish_wait()
        self.resyncs += 1

    async def _publish_wait(self) -> None:
        """Globals the shipped dialplan reads: how long to wait, where the AGI and HTTP
        entries listen."""
        wait = dialplan_wait(self.routing.budget_s)
        published = {"ICM_WAIT": f"{wait:.2f}"}
        if self.config.http.enabled:
            published["ICM_URL"] = f"http://{_reachable(self.config.http.listen, self.http.port)}"
        if self.config.agi.enabled:
            published["ICM_AGI_URL"] = (
                f"agi://{_reachable(self.config.agi.listen, self.agi.port)}/route"
            )
        for name, value in published.items():
            await self.ami.action("Setvar", {"Variable": name, "Value": value})

    # -- learning -------------------------------------------------------------------------
    def _learned(self, number: str, extension: str) -> None:
        self.metrics.learned.inc()
        log.debug("learned %s -> %s", number, extension)

    async def _maintenance(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_S)
            dropped = self.tracker.sweep()
            if dropped:
                log.info("forgot %d calls whose end was never seen", dropped)
            icmdb = self.config.source_settings("icmdb")
            assert isinstance(icmdb, LearnSettings)
            try:
                purged = await self.store.purge_learned(time.time() - icmdb.retention_days * 86400)
            except StoreError as exc:
                self.metrics.store_errors.labels("purge").inc()
                log.warning("cannot purge old learned bindings: %s", exc)
                continue
            if purged:
                log.info("purged %d learned bindings older than the retention", purged)


def _reachable(listen: str, bound_port: int) -> str:
    """``host:port`` Asterisk can reach: the wildcard address becomes loopback, port 0 the
    port actually bound."""
    host, port = split_host_port(listen)
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{bound_port or port}"


def _ignore(uniqueid: str, conversations: list[object]) -> None:
    """Learning is off: finished calls teach nothing."""
