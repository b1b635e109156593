"""The daemon: builds every part from the configuration, joins them, starts and stops
them in order, and reloads the routing settings without dropping a call. Open this first.

One call answered from the ICM database, from the AMI event to the action sent, in eight
files (client.py, daemon.py, entries/ami.py, snapshot.py, router.py, icmdb.py, model.py,
entries/base.py); the wire parsing beneath is icm/ami/frames.py, and a shared store
(Redis) adds the claim of icm/cluster.py::

    icm/ami/client.py     AmiClient: bytes -> Message (icm/ami/frames.py), link kept alive
    icm/daemon.py         Daemon._on_event: dispatch by event name
    icm/entries/ami.py    AmiEntry.on_user_event: UserEvent ICMRoute -> a RouteRequest with
                          the current Snapshot (icm/snapshot.py: router, timing), claimed
                          in a shared store first (Claims, icm/cluster.py)
    icm/router.py         Router.route: normalise the number, run the checks in [rules]
                          order (icm/rules.py: blocked, VIP, hours, deputies), ask the
                          sources, check the answer, the exceptions and the presence
    connectors/icmdb.py   IcmDbSource.lookup: the store's binding for this number
                          (CRM sources: connectors/amocrm.py ... behind GuardedSource,
                          icm/guard.py: cache, single-flight, circuit breaker)
    icm/model.py          the values passed along: RouteRequest, Answer, Decision, Timing
    icm/entries/ami.py    AmiEntry._deliver: one Setvar ICM_REPLY on the waiting channel,
                          never after the budget; icm/entries/base.py logs and counts it

Meanwhile: DeviceStateChange, ExtensionStatus -> PresenceTracker (icm/presence.py);
DialBegin, Bridge*, Hangup -> CallTracker (icm/calls.py) -> Learner (icm/learner.py)
-> store. The same Router serves ``GET /route`` (icm/entries/curl.py, for CURL()) and
FastAGI (icm/entries/agi.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from icm import __version__
from icm.ami.client import AmiActionError, AmiClient, AmiError
from icm.ami.frames import Message
from icm.calls import CallTracker
from icm.cluster import Claims
from icm.config import Config, ConfigError, load, split_host_port
from icm.connections import ConnectionBudget, quiet_out_of_fds
from icm.dialing import technology_warnings
from icm.entries.agi import AgiEntry
from icm.entries.ami import AmiEntry
from icm.entries.curl import HttpEntry
from icm.http_server import HttpServer
from icm.launch import release_sighup
from icm.learner import Learner, LearnSettings
from icm.logs import Throttled
from icm.metrics import Metrics
from icm.presence import PresenceTracker
from icm.router import now
from icm.snapshot import Snapshot
from icm.store import Store, StoreError, is_shared

log = logging.getLogger(__name__)

MAINTENANCE_S = 300.0  # how often stale calls are swept and old learned bindings purged
HEALTH_S = 2.0  # how often the store is checked
# Sections a reload cannot change in a running daemon (they need a restart).
RESTART_ONLY = ("ami", "store", "http", "agi")
RELOAD_INTERVAL_S = 2.0  # POST /-/reload at most this often
RELOAD_HEADER = "X-ICM-Reload"  # what `icm reload` sends; no browser sends it unasked
ABORT_S = 3.0  # how long a failed start-up waits for the parts already started to stop


class StartError(Exception):
    """A part could not start (a port in use, an address not local): one line naming it."""


def freeze_startup_heap() -> None:
    """Move what start-up allocated (phone number metadata, settings models, libraries)
    out of the garbage collector's sight: full collections then walk only what calls
    allocate, which keeps their pauses out of the decision latency's tail."""
    gc.collect()
    gc.freeze()


class Daemon:
    """The running ICM: every part built from one configuration, started and stopped together.

    :param store: an already built store (tests); by default the one ``store.url`` names.
    :param environ: where secrets are read on reload (the process environment).
    """

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        store: Store | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.config = config  # as started: [ami], [store], [http], [agi] need a restart
        self.environ = environ if environ is not None else {}
        self.metrics = metrics or Metrics()
        self.store = store or config.store.open()
        self.shared = is_shared(config.store.url)
        self.clock = clock  # the moment the rules are checked at (tests give their own)
        self.claims = Claims(self.store, self.metrics) if self.shared else None
        self.presence = PresenceTracker(lambda ext: self.snapshot.dial.device(ext))
        # The one thing a reload replaces; each request keeps the one it started with.
        self.snapshot = self._build(config)
        self.ami = AmiClient(
            config.ami, self._on_event, on_login=self._after_login, metrics=self.metrics
        )
        current = self._current
        claim = self.claims.route if self.claims else None
        self.entry = AmiEntry(self.ami, current, metrics=self.metrics, claim=claim)
        self.connections = ConnectionBudget()
        self.http_entry = HttpEntry(
            current,
            metrics=self.metrics,
            connections=self.connections,
            key=config.http.token.get_secret_value(),
        )
        # HTTP and AGI connections share what the descriptor limit leaves beside AMI.
        self.agi = AgiEntry(config.agi, current, metrics=self.metrics, budget=self.connections)
        self.learner: Learner | None = None
        icmdb = config.source_settings("icmdb")
        if isinstance(icmdb, LearnSettings) and icmdb.learn:
            self.learner = Learner(
                icmdb,
                self.store,
                current,
                claim=self._claim_learning if self.claims else None,
                on_learned=self._learned,
                on_store_error=lambda: self.metrics.store_errors.labels("learn").inc(),
            )
        if self.learner is not None:
            self.entry.on_deputy = self.learner.note_deputy
            self.learner.on_deputy_skipped = self.metrics.deputy_not_learned.inc
        self.tracker = CallTracker(
            lambda channel: self.snapshot.dial.extension_of_channel(channel),
            self.learner.on_finished if self.learner is not None else _ignore,
        )
        self.http = HttpServer(config.http, self.metrics, self.readiness, budget=self.connections)
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
        self._stack = contextlib.AsyncExitStack()
        self._reloading = asyncio.Lock()
        self._reloads: set[asyncio.Task[list[str]]] = set()  # SIGHUP reloads under way
        self._next_http_reload = 0.0
        self.store_ok = False
        self.resyncs = 0  # completed presence resynchronisations (one per login)

    def _current(self) -> Snapshot:
        return self.snapshot

    def _build(self, config: Config) -> Snapshot:
        return Snapshot.build(config, self.store, self.metrics, self.presence.state, self.clock)

    async def _claim_learning(self, uniqueid: str) -> bool:
        assert self.claims is not None
        return await self.claims.learn(uniqueid, self.snapshot.timing.claim_timeout_s)

    # -- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store, start the sources, the learner, the HTTP and AGI sides and the
        AMI link. Each part started is registered to be stopped, in reverse order; if one
        fails to start, those already started are stopped and the error is raised."""
        log.info(
            "ICM %s starting: sources %s, %d managers, store %s%s",
            __version__,
            ", ".join(self.config.routing.sources) or "(none)",
            len(self.snapshot.managers),
            self.store,
            " (shared: per-call claims on)" if self.shared else "",
        )
        try:
            await self._start_parts()
        except BaseException:
            # A part that hangs while stopping must not keep a half-started daemon alive.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ABORT_S):
                    await self._stack.aclose()
            raise
        freeze_startup_heap()

    async def _start_parts(self) -> None:
        stack = self._stack
        stack.push_async_callback(self._unfreeze)
        await self.store.open()
        stack.push_async_callback(_carry_on, "the store", self.store.close)
        await self._check_store()
        await self.snapshot.start()
        stack.push_async_callback(_carry_on, "the sources", lambda: self.snapshot.close())
        if self.learner is not None:
            self.learner.start()
            stack.push_async_callback(_carry_on, "the learner", self.learner.close)
        if self.config.http.enabled:
            await _listen("http", self.config.http.listen, self.http.start)
            stack.push_async_callback(_carry_on, "HTTP", self.http.stop)
            log.info("HTTP: /metrics /healthz /readyz /route on %s", self.config.http.listen)
        if self.config.agi.enabled:
            await _listen("agi", self.config.agi.listen, self.agi.start)
            log.info("FastAGI: agi://%s/route", self.config.agi.listen)
        stack.push_async_callback(_carry_on, "FastAGI", self.agi.stop, 0.0)
        tasks = [
            self.ami.start(),
            asyncio.create_task(self._maintenance(), name="maintenance"),
            asyncio.create_task(self._health(), name="health"),
        ]
        stack.push_async_callback(_carry_on, "the background tasks", _cancel, tasks)
        stack.push_async_callback(_carry_on, "AMI", self.ami.close)

    async def stop(self) -> None:
        """Take no new calls, let those in flight finish within the lookup budget, then
        stop every part in the reverse order of its start (AMI, background tasks, AGI,
        HTTP, the learner writing what it holds, the sources, the store), carrying on past
        a part that fails to stop."""
        log.info("ICM stopping: %d calls in flight", self.entry.in_flight)
        grace = self.snapshot.timing.budget_s + 0.5
        self.http_entry.accepting = False
        await asyncio.gather(self.entry.drain(grace), self.agi.stop(grace))
        await _cancel(list(self._reloads))  # each closes the sources it replaced
        await self._stack.aclose()
        log.info("ICM stopped")

    async def _unfreeze(self) -> None:
        gc.unfreeze()  # what start-up froze may be collected again

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT (SIGHUP reloads), stop.

        A SIGHUP that came while the process started (``icm`` holds it back from its
        first line, see :mod:`icm.launch`) or while the daemon starts is a reload once
        it has started."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        started = False
        asked = False

        def sighup() -> None:
            nonlocal asked
            if started:
                self._reload_in_background()
            else:
                asked = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, sighup)
        release_sighup()
        quiet_out_of_fds(loop)
        try:
            await self.start()
            started = True
            if asked:
                self._reload_in_background()
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if started:
                await self.stop()

    def _reload_in_background(self) -> None:
        """A reload asked for by SIGHUP, as a task kept until it ends (the event loop
        keeps only a weak reference to a task)."""
        task = asyncio.create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

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
            snapshot = self._build(config)
            await snapshot.start()
            old, self.snapshot = self.snapshot, snapshot
            logging.getLogger().setLevel(config.log.level.upper())
            self.metrics.reloads.labels("applied").inc()
            log.info(
                "reloaded %s: sources %s, %d managers",
                config.path,
                ", ".join(config.routing.sources) or "(none)",
                len(snapshot.managers),
            )
            if self.ami.logged_in:
                with contextlib.suppress(AmiError):
                    await self._publish_wait()
        # Calls in flight may still be asking the old sources.
        try:
            await asyncio.sleep(old.timing.budget_s)
        finally:
            await old.close()
        return []

    async def _reload_over_http(self, request: web.Request) -> web.Response:
        """``POST /-/reload``, as ``icm reload`` sends it. A web page can make a browser
        send a "simple" request (form or text body, no header of its own) to any address:
        such requests, and any with an ``Origin``, are refused; reloads (each costs the
        CRMs a user-map request) are at most one per RELOAD_INTERVAL_S."""
        refusal = _reload_refusal(request)
        if refusal:
            return web.Response(status=403, text=refusal + "\n")
        now = time.monotonic()
        if now < self._next_http_reload:
            wait = self._next_http_reload - now
            return web.Response(
                status=429,
                text=f"reloaded less than {RELOAD_INTERVAL_S:.0f} s ago: try again\n",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        self._next_http_reload = now + RELOAD_INTERVAL_S
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
            "sources": list(self.snapshot.config.routing.sources),
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
        for line in technology_warnings(self.snapshot.config.dial, names):
            log.warning("%s", line)
        await self._publish_wait()
        self.resyncs += 1

    async def _publish_wait(self) -> None:
        """Globals the shipped dialplan reads: how long to wait, where the AGI and HTTP
        entries listen."""
        wait = self.snapshot.timing.dialplan_wait_s
        published = {"ICM_WAIT": f"{wait:.2f}"}
        if self.config.http.enabled:
            published["ICM_URL"] = f"http://{_reachable(self.config.http.listen, self.http.port)}"
            key = self.config.http.token.get_secret_value()
            if key:  # the shipped [icm-curl] context sends it as key=
                published["ICM_HTTP_KEY"] = key
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
            icmdb = self.snapshot.config.source_settings("icmdb")
            if not isinstance(icmdb, LearnSettings):
                continue
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


async def _listen(section: str, listen: str, start: Callable[[], Awaitable[None]]) -> None:
    """Start a server; a port in use (or any socket error) is one line naming the key."""
    try:
        await start()
    except OSError as exc:
        raise StartError(f"[{section}] listen = {listen!r}: {exc.strerror or exc}") from None


def _reload_refusal(request: web.Request) -> str:
    """Why a reload request may come from a web page rather than ``icm reload``."""
    if "Origin" in request.headers or request.headers.get("Sec-Fetch-Site", "none") != "none":
        return "refused: a request from a web page (Origin)"
    if request.content_type in _SIMPLE_TYPES or request.can_read_body:
        return "refused: a reload request has no body"
    if RELOAD_HEADER not in request.headers:
        return f"refused: no {RELOAD_HEADER} header (use `icm reload`)"
    return ""


_SIMPLE_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")


def _ignore(uniqueid: str, conversations: list[object]) -> None:
    """Learning is off: finished calls teach nothing."""


async def _carry_on(what: str, stop: Callable[..., Awaitable[object]], *args: object) -> None:
    """Stop one part; a failure is logged and the other parts still stop."""
    try:
        await stop(*args)
    except Exception:
        log.exception("stopping %s failed; stopping the rest", what)


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
