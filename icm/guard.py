"""What ICM puts around a remote source (a CRM): a cache in the store, one request in
flight per number, a circuit breaker and the source's own timeout.

:class:`GuardedSource` wraps any source with ``remote = True`` and has the same shape, so
the router cannot tell the difference except by the answers being faster:

* **Cache.** ``cache:<source>:<number>`` in the store holds the last answer (JSON) for
  ``cache_ttl_s``, or the fact that the source does not know the caller for
  ``negative_ttl_s``. Failures are never cached. A manager changed in the CRM takes
  effect within ``cache_ttl_s``; ``icm forget NUMBER`` drops the entries at once.
* **Single-flight.** However many calls from one number arrive together, one lookup is
  in flight; the others wait for its result. With a shared store (Redis) a claim in the
  store extends this to every instance.
* **Circuit breaker.** After ``breaker_failures`` failures of the CRM's own in a row (an
  error answer, no connection, no answer within its timeout) the source is skipped
  without waiting for ``breaker_cooldown_s``; then one probe lookup is let through:
  success closes the circuit, failure opens it again. What is not the CRM's doing counts
  neither way: a lookup never sent (its own back-off, or ICM's rate limit had no slot in
  time: :class:`~icm.sources.SourceThrottled`), or stopped at shutdown.
* **Timeout.** The lookup's own time (``timeout_ms``) runs on the router's clock: from
  when the router began asking the source. A lookup the router stopped waiting for
  earlier (budget spent, another source answered first) goes on until then, fills the
  cache for the next call, and counts by what the CRM did. At the end of its time the
  lookup has failed, counted before the router reports the timeout.
  A request is only sent while it leaves the CRM three times its usual answer time (at
  most a third of its timeout; :mod:`connectors._http_client`) before then, so a lookup
  that runs out of time had a request the CRM left unanswered: the CRM's failure, not
  ICM's queue.

The breaker is written here rather than taken from a library: see README's dependency
section (purgatory counts a cancelled call as a failure or a success, never neither).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from pydantic import Field

from icm.logs import Throttled
from icm.model import Answer
from icm.ratelimit import current
from icm.sources import (
    Source,
    SourceContext,
    SourceSettings,
    SourceSkipped,
    SourceThrottled,
    SourceTimeout,
)
from icm.store import StoreError

log = logging.getLogger(__name__)

_ANSWER_FIELDS = frozenset(f.name for f in fields(Answer))
_POLL_S = 0.02  # how often an instance waiting for another instance's lookup looks again
_TICK_S = 0.001  # a timer may fire this much before its time


class RemoteSourceSettings(SourceSettings):
    """Settings every remote source has (its own ``Settings`` extends these)."""

    cache_ttl_s: float = Field(default=300.0, ge=0, le=86_400)
    negative_ttl_s: float = Field(default=60.0, ge=0, le=86_400)
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_cooldown_s: float = Field(default=30.0, ge=0.1, le=3600)


def cache_key(source: str, number: str) -> str:
    return f"cache:{source}:{number}"


def is_remote(source: Source | type[Source]) -> bool:
    return bool(getattr(source, "remote", False))


class CircuitBreaker:
    """Closed, open for ``cooldown_s`` after ``failures`` failures in a row, then half-open
    with one probe at a time.

    :param clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.openings = 0  # how many times it opened
        self._probing = False

    def check(self) -> str | None:
        """None if a lookup may go out now, else why not (for the explanation)."""
        if self.state == "closed":
            return None
        now = self.clock()
        if self.state == "open":
            wait = self.opened_at + self.cooldown_s - now
            if wait > 0:
                return f"circuit open after {self.failures} failures; retry in {math.ceil(wait)} s"
            self.state = "half-open"
        if self._probing:
            return "circuit half-open: a probe lookup is in flight"
        self._probing = True
        return None

    def success(self) -> None:
        self.state, self.failures, self._probing = "closed", 0, False

    def failure(self) -> bool:
        """Count a failure; True if this one opened the circuit."""
        self._probing = False
        if self.state != "half-open":
            self.failures += 1
            if self.state != "closed" or self.failures < self.threshold:
                return False
        self.state, self.opened_at = "open", self.clock()
        self.openings += 1
        return True

    def release(self) -> None:
        """The lookup was cancelled: neither success nor failure."""
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self.state != "closed"


class GuardedSource:
    """A remote source behind a cache, single-flight and a circuit breaker (see above)."""

    remote: ClassVar[bool] = True

    def __init__(
        self, source: Source, settings: RemoteSourceSettings, context: SourceContext
    ) -> None:
        self.inner = source
        self.name = source.name
        self.Settings = source.Settings
        self.settings = settings
        self.store = context.store
        self.shared = context.shared
        self.metrics = context.metrics
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)
        # number -> the lookup on its way (callers wait on it), until it is in the cache
        self._inflight: dict[str, _Flight] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._instance = uuid.uuid4().hex[:12]
        self._store_log = Throttled(log, 30.0)

    def __repr__(self) -> str:
        return f"GuardedSource({self.name})"

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.inner.close()

    async def wait_ready(self, timeout_s: float) -> None:
        ready = getattr(self.inner, "wait_ready", None)
        if ready is not None:
            await ready(timeout_s)

    async def lookup(self, number: str) -> Answer | None:
        hit, answer = await self._cached(number)
        if hit:
            return answer
        flight = self._inflight.get(number)
        try:
            return await self._join(number, flight or self._take_off(number))
        except SourceThrottled:
            # A lookup begun for an earlier call had no request slot in that call's
            # time; this call may have more: its own lookup, once.
            mine = current().by
            if flight is None or flight.by is None or (mine is not None and mine <= flight.by):
                raise
            return await self._join(number, self._inflight.get(number) or self._take_off(number))

    def _take_off(self, number: str) -> _Flight:
        reason = self.breaker.check()
        if reason is not None:
            raise SourceSkipped(self.name, reason)
        loop = asyncio.get_running_loop()
        asker = current()
        until = asker.timeout_at or loop.time() + self.settings.timeout_ms / 1000
        flight = _Flight(loop.create_future(), until, asker.by)
        flight.waiter.add_done_callback(_retrieve)
        self._inflight[number] = flight
        task = asyncio.create_task(self._fetch(number, flight), name=f"{self.name}-lookup")
        flight.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return flight

    async def _join(self, number: str, flight: _Flight) -> Answer | None:
        try:
            return await asyncio.shield(flight.waiter)
        except asyncio.CancelledError:
            # The router stopped waiting. At the source's own timeout (the router's clock
            # and the lookup's are one), the lookup has failed: count it now, before the
            # router says "timeout", not a moment after.
            if asyncio.get_running_loop().time() + _TICK_S >= flight.until:
                self._expire(flight)
            raise

    async def _fetch(self, number: str, flight: _Flight) -> None:
        """Ask the source, hand the answer to every waiting call, then cache it (the calls
        do not wait for the store; later calls still find this lookup until then)."""
        waiter = flight.waiter
        try:
            try:
                answer = await self._ask(number, flight)
            except asyncio.CancelledError:
                if not waiter.done():
                    waiter.cancel()
                raise
            except Exception as exc:
                if not waiter.done():
                    waiter.set_exception(exc)
                return
            if not waiter.done():
                waiter.set_result(answer)
            await self._remember(number, answer)
        finally:
            self._forget_flight(number, flight)
            if self.shared:  # after the cache write: the other instances find it there
                await self._unclaim(number)

    def _forget_flight(self, number: str, flight: _Flight) -> None:
        if self._inflight.get(number) is flight:
            del self._inflight[number]

    def _expire(self, flight: _Flight) -> None:
        """The lookup's own time is over: a failure (counted once), and it stops."""
        if flight.settled or flight.waiter.done():
            return
        flight.settled = True
        self._failed()
        flight.waiter.set_exception(self._timeout())
        if flight.task is not None:
            flight.task.cancel()

    def _timeout(self) -> SourceTimeout:
        return SourceTimeout(self.name, f"no answer within {self.settings.timeout_ms} ms")

    async def _ask(self, number: str, flight: _Flight) -> Answer | None:
        """The source's answer within its own time. Counted by the breaker: its errors
        and a timeout; not counted: nothing asked (its own back-off, ICM's rate limit),
        or a lookup stopped by the daemon."""
        timeout_s = self.settings.timeout_ms / 1000
        try:
            async with asyncio.timeout_at(flight.until):
                if self.shared:
                    hit, answer = await self._other_instance(number, timeout_s)
                    if hit:
                        self.breaker.release()
                        return answer
                answer = await self.inner.lookup(number)
        except TimeoutError:
            if not flight.settled:
                flight.settled = True
                self._failed()
            raise self._timeout() from None
        except SourceSkipped:
            self.breaker.release()  # nothing was asked: the CRM is not to blame
            raise
        except asyncio.CancelledError:
            if not flight.settled:
                self.breaker.release()
            raise
        except Exception:
            self._failed()
            raise
        if self.breaker.is_open:
            log.info("source %s answers again: circuit closed", self.name)
            if self.metrics is not None:
                self.metrics.circuit_open.labels(self.name).set(0)
        self.breaker.success()
        return answer

    def _failed(self) -> None:
        if self.breaker.failure():
            log.warning(
                "source %s: circuit open after %d failures; skipped for %.0f s",
                self.name,
                self.breaker.failures,
                self.breaker.cooldown_s,
            )
            if self.metrics is not None:
                self.metrics.circuit_open.labels(self.name).set(1)

    async def _cached(self, number: str) -> tuple[bool, Answer | None]:
        if not (self.settings.cache_ttl_s or self.settings.negative_ttl_s):
            return False, None
        try:
            raw = await self.store.get(cache_key(self.name, number))
        except StoreError as exc:
            self._store_log.warning("source %s: cache unavailable (%s)", self.name, exc)
            return False, None
        hit, answer = _decode(raw)
        if self.metrics is not None:
            result = "miss" if not hit else ("hit" if answer is not None else "negative")
            self.metrics.source_cache.labels(self.name, result).inc()
        return hit, answer

    async def _remember(self, number: str, answer: Answer | None) -> None:
        known = answer is not None and answer.responsible
        ttl = self.settings.cache_ttl_s if known else self.settings.negative_ttl_s
        if ttl <= 0:
            return
        value = json.dumps(
            {"answer": None if answer is None else asdict(answer), "at": round(time.time(), 3)},
            ensure_ascii=False,
        )
        try:
            await self.store.set(cache_key(self.name, number), value, ttl_s=ttl)
        except StoreError as exc:
            self._store_log.warning("source %s: cannot cache an answer (%s)", self.name, exc)

    # Several instances on one shared store: one of them asks the CRM, the others wait
    # for its answer to appear in the cache.

    def _claim_key(self, number: str) -> str:
        return f"flight:{self.name}:{number}"

    async def _other_instance(self, number: str, timeout_s: float) -> tuple[bool, Answer | None]:
        """(True, answer) if another instance looked ``number`` up meanwhile; (False,
        None) once this instance holds the claim and must ask the source itself."""
        key = self._claim_key(number)
        while True:
            try:
                if await self.store.claim(key, self._instance, ttl_s=timeout_s):
                    return False, None
                holder = await self.store.get(key)
            except StoreError:
                return False, None  # no coordination without a store: ask anyway
            while holder is not None:
                await asyncio.sleep(_POLL_S)
                hit, answer = await self._cached(number)
                if hit:
                    return True, answer
                with contextlib.suppress(StoreError):
                    holder = await self.store.get(key)

    async def _unclaim(self, number: str) -> None:
        with contextlib.suppress(StoreError):
            if await self.store.get(self._claim_key(number)) == self._instance:
                await self.store.delete(self._claim_key(number))


@dataclass(slots=True)
class _Flight:
    """One lookup in flight: the answer its callers wait for, and when its time is up
    (loop time)."""

    waiter: asyncio.Future[Answer | None]
    until: float
    by: float | None  # when the call it began for stops waiting
    task: asyncio.Task[None] | None = None
    settled: bool = False  # counted by the breaker already


def _retrieve(future: asyncio.Future[Answer | None]) -> None:
    """Mark a failed lookup's exception as seen: every call may have stopped waiting."""
    if not future.cancelled():
        future.exception()


def _decode(raw: str | None) -> tuple[bool, Answer | None]:
    """A cache entry as (hit, answer); anything unreadable is a miss."""
    if raw is None:
        return False, None
    try:
        entry = json.loads(raw)
        stored: Any = entry["answer"]
        if stored is None:
            return True, None
        values = {k: v for k, v in stored.items() if k in _ANSWER_FIELDS}
        values["mobiles"] = tuple(values.get("mobiles", ()))
        age = max(0, round(time.time() - float(entry.get("at", time.time()))))
        cached = f"cached {age} s ago"
        values["detail"] = f"{values['detail']}; {cached}" if values.get("detail") else cached
        return True, Answer(**values)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False, None


def guard(source: Source, settings: SourceSettings, context: SourceContext) -> Source:
    """The source as the router should ask it: guarded if it is remote."""
    if is_remote(source) and isinstance(settings, RemoteSourceSettings):
        return GuardedSource(source, settings, context)
    return source
