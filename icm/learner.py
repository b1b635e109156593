"""Learning: finished calls become bindings in the store (the ICM database source reads
them back).

The :class:`Learner` receives each finished call's conversations (from
:class:`icm.calls.CallTracker`) and keeps the last one that lasted ``min_talk_s`` with a
manager's extension that is not an exception, from a caller that is a real number and
not one of the managers' own mobiles, and not a deputy's conversation in a call ICM gave
him (the dialplan reports ``ICMDeputy``; ``[rules] deputy_learns`` lets them count).
Writes go through a bounded buffer, so a store
that is briefly away loses nothing (up to ``buffer`` calls) and never slows the events.

Its settings are the ``[sources.icmdb]`` section (:class:`LearnSettings`), the source
that answers from what is learned.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import ClassVar, Protocol

from pydantic import Field

from icm.calls import Conversation
from icm.logs import Throttled
from icm.managers import Managers
from icm.numbers import Numbers, Skip
from icm.sources import SourceSettings
from icm.store import Store, StoreError

log = logging.getLogger(__name__)

WRITE_BATCH = 1000  # learned calls written in one store round trip, at most
MAX_DEPUTY_CALLS = 10_000  # calls remembered as given to a deputy, until they end
_Queued = tuple[str, str, str, float, str]  # uniqueid, number, extension, at, note


class LearnSettings(SourceSettings):
    """``[sources.icmdb]``: how the ICM database answers, and what it learns."""

    default_timeout_ms: ClassVar[int] = 300
    learn: bool = True
    min_talk_s: float = Field(default=5.0, ge=0, le=3600)
    retention_days: float = Field(default=180.0, gt=0, le=36_500)
    buffer: int = Field(default=10_000, ge=10, le=1_000_000)


Learned = Callable[[str, str], None]


class Directory(Protocol):
    """Who the managers are and how numbers are read (the daemon's current snapshot)."""

    @property
    def numbers(self) -> Numbers: ...

    @property
    def managers(self) -> Managers: ...


class Learner:
    """Turns finished calls into learned bindings.

    :param directory: the current managers and number rules (they change on reload).
    :param claim: called with the call's uniqueid before writing; False means another
        instance learns this call (several instances watching one Asterisk).
    :param on_learned: called with (number, extension) after each write (metrics, logs).
    """

    def __init__(
        self,
        settings: LearnSettings,
        store: Store,
        directory: Callable[[], Directory],
        *,
        claim: Callable[[str], Awaitable[bool]] | None = None,
        on_learned: Learned | None = None,
        on_store_error: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._directory = directory
        self._claim = claim
        self._on_learned = on_learned
        self._on_store_error = on_store_error
        self._queue: collections.deque[_Queued] = collections.deque(maxlen=settings.buffer)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._full_log = Throttled(log)
        self._won: set[str] = set()  # calls claimed by this instance, not yet written
        # uniqueid -> the deputy ICM gave the call to (from ICMResult, before its Hangup)
        self._deputies: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.dropped = 0
        self.deputy_skipped = 0
        self.on_deputy_skipped: Callable[[], None] | None = None  # metrics

    @property
    def pending(self) -> int:
        return len(self._queue)

    def note_deputy(self, uniqueid: str, extension: str) -> None:
        """The dialplan dialled ``extension`` as a deputy in call ``uniqueid``."""
        if not uniqueid or not extension:
            return
        self._deputies[uniqueid] = extension
        self._deputies.move_to_end(uniqueid)
        if len(self._deputies) > MAX_DEPUTY_CALLS:
            self._deputies.popitem(last=False)

    def choose(
        self, conversations: list[Conversation], uniqueid: str = ""
    ) -> tuple[str, str, float, str] | None:
        """(number, extension, when, note) to learn from a finished call, or None."""
        directory = self._directory()
        managers, numbers = directory.managers, directory.numbers
        deputy = self._deputies.pop(uniqueid, None) if uniqueid else None
        rules = getattr(directory, "rules", None)
        if deputy is not None and rules is not None and rules.deputy_learns:
            deputy = None
        for talk in reversed(conversations):
            if talk.seconds < self.settings.min_talk_s:
                continue
            if talk.extension == deputy:
                self.deputy_skipped += 1
                if self.on_deputy_skipped is not None:
                    self.on_deputy_skipped()
                log.debug("not learned: %s stood in as a deputy in call %s", deputy, uniqueid)
                return None
            if managers.is_exception(talk.extension):
                continue
            if managers.get(talk.extension) is None:
                continue
            number = numbers.normalise(talk.number)
            if isinstance(number, Skip) or managers.owner_of_mobile(number):
                return None
            if managers.is_exception(number):
                return None
            note = f"{'outbound' if talk.outbound else 'inbound'} call, {talk.seconds:.0f} s"
            return number, talk.extension, talk.ended, note
        return None

    def on_finished(self, uniqueid: str, conversations: list[Conversation]) -> None:
        """CallTracker callback: queue what this call teaches."""
        chosen = self.choose(conversations, uniqueid)
        if chosen is None:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            self._full_log.warning(
                "learning buffer full (%d calls): the oldest is dropped", self.pending
            )
        self._queue.append((uniqueid, *chosen))
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_loop(), name="icmdb-learner")

    async def close(self, flush_timeout: float = 2.0) -> None:
        """Write what is buffered (for at most ``flush_timeout``), then stop."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(flush_timeout):
                while self._queue and not self._task.done():
                    self._wake.set()
                    await asyncio.sleep(0.01)
        except TimeoutError:
            log.warning("stopping with %d learned calls not written", self.pending)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _write_loop(self) -> None:
        delay = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                # Whatever is queued, in one store round trip (up to WRITE_BATCH): one call
                # a round trip left a busy daemon learning ~2,700 calls/s (bench/ingest.py).
                batch = list(itertools.islice(self._queue, WRITE_BATCH))
                try:
                    learned = await self._write(batch)
                except StoreError as exc:
                    if self._on_store_error is not None:
                        self._on_store_error()
                    log.warning(
                        "cannot write %d learned calls (%s); retrying in %.1f s",
                        len(batch),
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay = 0.1
                for item, done in zip(batch, learned, strict=True):
                    if self._queue and self._queue[0] is item:  # unless pushed out meanwhile
                        self._queue.popleft()
                    if done and self._on_learned is not None:
                        self._on_learned(item[1], item[2])

    async def _write(self, batch: list[_Queued]) -> list[bool]:
        """Write the calls of ``batch`` this instance may learn; which changed a binding.
        A claim won before a failed write is remembered: asked again, the store would say
        the call is taken (by this very instance) and it would never be learned."""
        if self._claim is None:
            mine = [True] * len(batch)
        else:
            unclaimed = [item[0] for item in batch if item[0] not in self._won]
            results = await asyncio.gather(*(self._claim(uniqueid) for uniqueid in unclaimed))
            self._won.update(u for u, won in zip(unclaimed, results, strict=True) if won)
            mine = [item[0] in self._won for item in batch]
        rows = [item[1:] for item, ok in zip(batch, mine, strict=True) if ok]
        changed = iter(await self.store.learn_many(rows) if rows else [])
        self._won.difference_update(item[0] for item in batch)
        return [ok and next(changed) for ok in mine]
