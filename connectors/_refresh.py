"""A CRM's user map, kept fresh in the background and never fetched on a call's path.

Like Home Assistant's update coordinator: the owner supplies ``fetch`` (which raises a
:class:`~icm.sources.SourceError` on failure); this class runs it at start and every
``interval_s``, retries a failed fetch with backoff (tenacity), and logs once when the
refresh starts failing and once when it recovers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from icm.metrics import Metrics
from icm.ratelimit import Priority, asking
from icm.sources import SourceError

log = logging.getLogger(__name__)


class Refresher:
    """:param what: for log lines ("user map").
    :param attempts: tries per refresh (waits 1, 2, 4... s between them, at most 30 s).
    """

    def __init__(
        self,
        source: str,
        what: str,
        interval_s: float,
        fetch: Callable[[], Awaitable[None]],
        *,
        metrics: Metrics | None = None,
        attempts: int = 3,
        first_wait_s: float = 1.0,
    ) -> None:
        self.source = source
        self.what = what
        self.interval_s = interval_s
        self.fetch = fetch
        self.metrics = metrics
        self.attempts = attempts
        self.first_wait_s = first_wait_s
        self.ready = asyncio.Event()  # set after the first successful refresh
        self.tried = asyncio.Event()  # set after the first attempt, whatever its result
        self.failing = False
        self.refreshes = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.source}-{self.what}")

    async def close(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def refresh_now(self) -> bool:
        """One refresh with retries; True if it worked."""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(SourceError),
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=self.first_wait_s, max=30),
                reraise=True,
            ):
                with attempt:
                    try:
                        await self.fetch()
                    finally:
                        self.tried.set()
        except SourceError as exc:
            self._count("error")
            if not self.failing:
                log.warning(
                    "%s: cannot refresh the %s (%s); will retry", self.source, self.what, exc
                )
            self.failing = True
            return False
        self._count("ok")
        self.refreshes += 1
        if self.failing:
            log.info("%s: the %s is refreshed again", self.source, self.what)
        self.failing = False
        self.ready.set()
        return True

    async def _run(self) -> None:
        # Calls come first: the refreshes take the request slots left over.
        with asking(priority=Priority.BACKGROUND, by=None):
            while True:
                await self.refresh_now()
                await asyncio.sleep(self.interval_s)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.map_refreshes.labels(self.source, result).inc()
