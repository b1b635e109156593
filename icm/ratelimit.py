"""Client-side rate limits: each CRM account stays under its published limit, so ICM
never sees the CRM's own throttling (amoCRM bans an IP that keeps flooding it), and the
slots go first to the calls that are ringing.

* :class:`Slots` says when the next request may go: a leaky bucket (``burst`` at once,
  refilled at the rate) kept ``margin_s`` per second under the CRM's limit, because the
  CRM counts requests as they arrive and the network moves them closer together; and,
  for a CRM that counts requests per second (amoCRM), at most ``floor(rate)`` in any
  ``1 s + margin``. It is plain arithmetic on the times given to it (tests pass theirs).
* :class:`RateLimiter` hands the slots out: live calls first, then ``icm lookup``, then
  background refreshes (:class:`Priority`); among live calls, the entries in turn (a
  flood on one cannot starve the others), each entry's requests in order. A request that
  cannot have a slot by the time its caller gives it (:func:`asking`) is refused at once
  with :class:`~icm.sources.SourceThrottled`: nothing was asked of the CRM.
* With a shared store (Redis), a one-second window counted in the store (``incr``) also
  bounds every instance together; requests that are not for a live call leave the last
  quarter of each window to the live ones.
* After the CRM says "too many requests" anyway, :meth:`RateLimiter.pause` stops requests
  to it (or to one of its methods) for a while: they fail at once instead of provoking
  it further.

Written here, not taken from aiolimiter: see README's dependency section.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

from icm.sources import SourceSkipped, SourceThrottled
from icm.store import Store, StoreError


class Priority(enum.IntEnum):
    """Who is waiting for a request: the lower, the sooner it is served."""

    LIVE = 0  # a call is ringing (any entry)
    LOOKUP = 1  # `icm lookup`
    BACKGROUND = 2  # user maps and other refreshes


@dataclass(frozen=True, slots=True)
class Asker:
    """Who the requests made in this context are for.

    :param lane: the entry a live call came by (served in turn with the other entries).
    :param by: loop time after which a request is of no use to the caller: one that
        cannot have its slot by then is refused at once (None: wait as long as needed).
    :param timeout_at: loop time the source's own timeout ends, counted from when the
        router began asking it (the guard's lookup ends then too).
    """

    priority: Priority = Priority.LIVE
    lane: str = ""
    by: float | None = None
    timeout_at: float | None = None


_ASKER: ContextVar[Asker | None] = ContextVar("icm_asker", default=None)
_ANYONE = Asker()


def current() -> Asker:
    """Who the requests made now are for (a live call unless said otherwise)."""
    return _ASKER.get() or _ANYONE


@contextlib.contextmanager
def asking(**changes: Any) -> Iterator[Asker]:
    """Set who the requests made inside are for (``priority``, ``lane``, ``by``...)."""
    asker = replace(current(), **changes)
    token = _ASKER.set(asker)
    try:
        yield asker
    finally:
        _ASKER.reset(token)


class Plan:
    """How many requests one lookup makes (as its source expects), and what each limiter
    still owes it."""

    def __init__(self, requests: int) -> None:
        self.requests = requests
        self.owed: dict[RateLimiter, int] = {}


_PLAN: ContextVar[Plan | None] = ContextVar("icm_plan", default=None)


@contextlib.contextmanager
def planning(requests: int) -> Iterator[Plan]:
    """One lookup of ``requests`` requests: its first is let go only when the others can
    go in time as well (a burst then finishes lookups rather than starting them all)."""
    plan = Plan(requests)
    token = _PLAN.set(plan)
    try:
        yield plan
    finally:
        _PLAN.reset(token)
        for limiter, owed in plan.owed.items():
            limiter._promised -= owed  # released by the lookup's end


class Slots:
    """When requests may go, as arithmetic on the times given (seconds, any clock).

    :param rate_per_s: the CRM's published rate; ``burst``: how many may go at once.
    :param margin_s: per second of the CRM's limit, how much longer ICM takes (the room
        left for network jitter): ``rate_per_s`` requests take ``1 + margin_s`` seconds,
        and a large burst keeps the same share free (50 → 43 with 0.15).
    :param per_second: the CRM counts requests in any second (amoCRM): never more than
        ``floor(rate_per_s)`` in any ``1 + margin_s`` seconds, whatever ``burst`` is.
    """

    def __init__(
        self, rate_per_s: float, burst: int = 1, *, margin_s: float = 0.0, per_second: bool = False
    ) -> None:
        self.interval = (1 + margin_s) / rate_per_s
        self.burst = max(1, burst - math.floor(burst * margin_s))
        self.window_s = 1 + margin_s
        count = max(1, math.floor(rate_per_s)) if per_second else 0
        self._tat = -math.inf  # GCRA: the bucket's theoretical arrival time
        self._sent: deque[float] | None = deque(maxlen=count) if count else None

    def next_at(self, now: float) -> float:
        """The earliest time, not before ``now``, the next request may go."""
        return self._next(now, self._tat, self._sent)

    def take(self, at: float) -> None:
        """A request goes at ``at`` (not before :meth:`next_at`)."""
        self._tat = max(self._tat, at) + self.interval
        if self._sent is not None:
            self._sent.append(at)

    def eta(self, now: float, ahead: int) -> float:
        """When a request would go with ``ahead`` requests served before it."""
        tat, sent = self._tat, None if self._sent is None else deque(self._sent, self._sent.maxlen)
        at = now
        for _ in range(ahead + 1):
            at = self._next(now, tat, sent)
            tat = max(tat, at) + self.interval
            if sent is not None:
                sent.append(at)
        return at

    def _next(self, now: float, tat: float, sent: deque[float] | None) -> float:
        at = max(now, tat - (self.burst - 1) * self.interval)
        if sent is not None and len(sent) == sent.maxlen:
            at = max(at, sent[0] + self.window_s)
        return at


@dataclass(order=True)
class _Waiter:
    """A request waiting for its slot; a lane serves the most urgent first (the earliest
    ``by``: a lookup begun earlier finishes before later ones begin), then in order."""

    by: float
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class RateLimiter:
    """Keeps one CRM account under its request limit, across instances when shared.

    :param name: the source's name (errors name it); ``key`` names the account.
    :param rate_per_s: sustained requests per second; ``burst``: how many may go at once;
        ``margin_s`` and ``per_second``: see :class:`Slots`.
    :param store: counts a window shared by every instance when ``shared``.
    """

    def __init__(
        self,
        name: str,
        rate_per_s: float,
        burst: int = 1,
        *,
        margin_s: float = 0.0,
        per_second: bool = False,
        store: Store | None = None,
        shared: bool = False,
        key: str = "",
    ) -> None:
        self.name = name
        self.rate_per_s = rate_per_s
        self.slots = Slots(rate_per_s, burst, margin_s=margin_s, per_second=per_second)
        self._store = store if shared else None
        self._key = key or name
        self._window_s = max(1.0, 1 / rate_per_s)
        self._per_window = max(1, math.floor(rate_per_s * self._window_s))
        self._paused: dict[str, tuple[float, str]] = {}
        # priority -> lane -> its waiters (a heap); lanes of a priority take turns
        self._queues: dict[Priority, dict[str, list[_Waiter]]] = {p: {} for p in Priority}
        self._turns: dict[Priority, deque[str]] = {p: deque() for p in Priority}
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self.granted = 0
        self.refused = 0
        self._promised = 0  # later requests of the lookups admitted, not yet asked for

    async def acquire(
        self, scope: str = "", *, by: float | None = None, last: float | None = None
    ) -> None:
        """Wait for a request's slot.

        :param by: loop time the slot must come by (else the :func:`current` asker's).
        :param last: a slot free at once may still be taken until then (default ``by``).
        :raises SourceSkipped: while paused after the CRM's own "too many requests".
        :raises SourceThrottled: no slot by then (nothing was sent).
        """
        self.check(scope)
        asker = current()
        by = asker.by if by is None else by
        loop = asyncio.get_running_loop()
        now = loop.time()
        queue = self._queues[asker.priority].setdefault(asker.lane, [])
        key = math.inf if by is None else by
        plan = _PLAN.get()
        owed = None if plan is None else plan.owed.get(self)
        ahead = self._ahead(asker, key)
        more = 0
        if owed is None and plan is not None:
            # A lookup's first request here: admitted only if its later ones, and those
            # promised to the lookups admitted before it, can go in time too.
            more = max(0, plan.requests - 1)
            ahead += self._promised + more
        eta = self.slots.eta(now, ahead)
        if eta <= now and by is not None and last is not None and now <= last:
            by = max(by, now)  # free now, and still of use: no reason to refuse it
        if by is not None and eta > by:
            self._drop_empty(asker)
            self.refused += 1
            raise self._throttled(eta - now, by - now)
        if plan is not None:
            if owed is None:
                plan.owed[self] = more
                self._promised += more
            elif owed > 0:
                plan.owed[self] = owed - 1
                self._promised -= 1
        waiter = _Waiter(key, next(self._seq), loop.create_future())
        heapq.heappush(queue, waiter)
        if len(queue) == 1:
            self._turns[asker.priority].append(asker.lane)
        self._pump()
        try:
            if by is None:
                await waiter.future
            else:
                async with asyncio.timeout_at(by):
                    await waiter.future
        except TimeoutError:
            self.refused += 1
            raise self._throttled(None, by - now if by is not None else 0) from None
        finally:
            if not waiter.future.done():
                waiter.future.cancel()  # skipped when its turn comes
        if self._store is not None:
            await self._shared_window(asker, by)

    def check(self, scope: str = "") -> None:
        for key in ("", scope) if scope else ("",):
            until, reason = self._paused.get(key, (0.0, ""))
            left = until - time.monotonic()
            if left > 0:
                what = f"{scope} " if key else ""
                raise SourceSkipped(
                    self.name, f"{what}paused after {reason}; {math.ceil(left)} s left"
                )

    def pause(self, seconds: float, reason: str, scope: str = "") -> None:
        """Send nothing (to ``scope``, a method, or to the whole account) for ``seconds``."""
        until = time.monotonic() + seconds
        if self._paused.get(scope, (0.0, ""))[0] < until:
            self._paused[scope] = (until, reason)

    @property
    def waiting(self) -> int:
        return sum(_live(q) for lanes in self._queues.values() for q in lanes.values())

    # Handing the slots out.

    def _ahead(self, asker: Asker, key: float) -> int:
        """How many waiting requests would be served before a new one of ``asker``'s,
        needed by ``key``: every one of a higher priority; of its own priority, the more
        urgent ones of its lane, and as many of each other lane's as the lanes' turns
        give before it."""
        count = 0
        for priority, lanes in self._queues.items():
            if priority < asker.priority:
                count += sum(_live(q) for q in lanes.values())
            elif priority == asker.priority:
                mine = _live(lanes.get(asker.lane, []), key)
                others = (_live(q) for lane, q in lanes.items() if lane != asker.lane)
                count += mine + sum(min(n, mine + 1) for n in others)
        return count

    def _next_waiter(self) -> _Waiter | None:
        for priority in Priority:
            turns, lanes = self._turns[priority], self._queues[priority]
            while turns:
                lane = turns.popleft()
                queue = lanes.get(lane, [])
                while queue and queue[0].future.done():
                    heapq.heappop(queue)
                if not queue:
                    lanes.pop(lane, None)
                    continue
                waiter = heapq.heappop(queue)
                if queue:
                    turns.append(lane)
                else:
                    lanes.pop(lane, None)
                return waiter
        return None

    def _pump(self) -> None:
        """Give every slot that is due to the next waiter; come back when the next one is."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            at = self.slots.next_at(now)
            if at > now:
                if self.waiting:
                    self._timer = loop.call_at(at, self._pump)
                return
            waiter = self._next_waiter()
            if waiter is None:
                return
            self.slots.take(now)
            self.granted += 1
            waiter.future.set_result(None)

    def _drop_empty(self, asker: Asker) -> None:
        lanes = self._queues[asker.priority]
        if not lanes.get(asker.lane):
            lanes.pop(asker.lane, None)

    def _throttled(self, wait_s: float | None, left_s: float) -> SourceThrottled:
        if wait_s is None:
            why = f"no request slot within {max(left_s, 0) * 1000:.0f} ms"
        else:
            left = max(left_s, 0) * 1000
            why = f"next request slot in {wait_s * 1000:.0f} ms, {left:.0f} ms left"
        return SourceThrottled(self.name, f"rate-limited locally: {why}")

    # Every instance together, through the store.

    async def _shared_window(self, asker: Asker, by: float | None) -> None:
        assert self._store is not None
        allowed = self._per_window
        if asker.priority is not Priority.LIVE:
            allowed -= max(1, self._per_window // 4) if self._per_window > 1 else 0
        loop = asyncio.get_running_loop()
        while True:
            now = time.time()
            window = math.floor(now / self._window_s)
            key = f"rate:{self._key}:{window}"
            try:
                count = await self._store.incr(key, ttl_s=self._window_s * 2)
            except StoreError:
                return  # the in-process limit still holds
            if count <= allowed:
                return
            wait = (window + 1) * self._window_s - now
            if by is not None and loop.time() + wait > by:
                self.refused += 1
                raise self._throttled(wait, by - loop.time())
            await asyncio.sleep(wait)


def _live(queue: list[_Waiter], key: float = math.inf) -> int:
    """The requests of ``queue`` still waiting, needed by ``key`` or sooner."""
    return sum(not w.future.done() and w.by <= key for w in queue)
