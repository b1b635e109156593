"""Client-side rate limits: each CRM account stays under its published limit, so ICM
never sees the CRM's own throttling (amoCRM bans an IP that keeps flooding it).

An in-process leaky bucket (aiolimiter) always applies; when several instances share a
store (Redis), a fixed one-second window counted in the store (``incr``) also bounds all
of them together. After the CRM says "too many requests" anyway, :meth:`RateLimiter.pause`
stops requests to it (or to one of its methods) for a while: they fail at once instead of
provoking it further.
"""

from __future__ import annotations

import asyncio
import math
import time

from aiolimiter import AsyncLimiter

from icm.sources import SourceSkipped
from icm.store import Store, StoreError


class RateLimiter:
    """Keeps one CRM account under its request limit, across instances when shared.

    :param name: the source's name (errors name it); ``key`` names the account.
    :param rate_per_s: sustained requests per second; ``burst``: how many may go at once.
    :param store: counts a window shared by every instance when ``shared``.
    """

    def __init__(
        self,
        name: str,
        rate_per_s: float,
        burst: int = 1,
        *,
        store: Store | None = None,
        shared: bool = False,
        key: str = "",
    ) -> None:
        self.name = name
        self.rate_per_s = rate_per_s
        burst = max(1, burst)
        self._bucket = AsyncLimiter(burst, burst / rate_per_s)
        self._store = store if shared else None
        self._key = key or name
        self._window_s = max(1.0, 1 / rate_per_s)
        self._per_window = max(1, math.floor(rate_per_s * self._window_s))
        self._paused: dict[str, tuple[float, str]] = {}

    async def acquire(self, scope: str = "") -> None:
        """Wait until a request may go (callers bound the wait with their timeout).

        :raises SourceSkipped: while paused after the CRM's own "too many requests".
        """
        self.check(scope)
        await self._bucket.acquire()
        if self._store is not None:
            await self._shared_window()

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

    async def _shared_window(self) -> None:
        assert self._store is not None
        while True:
            now = time.time()
            window = math.floor(now / self._window_s)
            key = f"rate:{self._key}:{window}"
            try:
                count = await self._store.incr(key, ttl_s=self._window_s * 2)
            except StoreError:
                return  # the in-process bucket still holds
            if count <= self._per_window:
                return
            await asyncio.sleep((window + 1) * self._window_s - now)
