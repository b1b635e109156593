"""Commands asked for in the same turn of the event loop, sent together: one Redis
pipeline (one round trip) instead of one command each.

A burst of calls (hundreds of routing requests read from one AMI read) makes each
instance claim every call and look up every caller at once. One at a time, those wait
for a connection of the pool and a round trip each; batched, a whole burst's claims
cost one round trip, and a lone call costs what it did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")

MAX_BATCH = 500  # commands in one pipeline, at most


class Batcher(Generic[A, R]):
    """Collects calls made during one turn of the loop and runs them with ``run_many``.

    :param run_many: the results for a list of arguments, in order (one round trip); an
        exception fails every call of the batch.
    """

    def __init__(self, run_many: Callable[[Sequence[A]], Awaitable[Sequence[R]]]) -> None:
        self._run_many = run_many
        self._waiting: list[tuple[A, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, args: A) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((args, future))
        return future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), MAX_BATCH):
            task = asyncio.create_task(self._send(waiting[start : start + MAX_BATCH]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[A, asyncio.Future[R]]]) -> None:
        live = [(args, future) for args, future in batch if not future.done()]
        if not live:
            return
        try:
            results = await self._run_many([args for args, _ in live])
        except asyncio.CancelledError:
            for _, future in live:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
