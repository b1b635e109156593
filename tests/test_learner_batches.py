"""The learner writes what is queued in batches (one store round trip each), keeps their
order across a store failure, and learns only the calls its claim allows."""

from __future__ import annotations

import time
from types import SimpleNamespace

from icm.calls import Conversation
from icm.learner import Learner, LearnSettings
from icm.managers import Manager, Managers
from icm.numbers import Numbers
from icm.store import SqliteStore, StoreError

from .conftest import until


class FlakyStore:
    """A SQLite store whose first ``failures`` learn_many calls fail."""

    def __init__(self, store: SqliteStore, failures: int) -> None:
        self.store, self.failures, self.batches = store, failures, []

    async def learn_many(self, rows):
        if self.failures:
            self.failures -= 1
            raise StoreError("store briefly away")
        self.batches.append(len(rows))
        return await self.store.learn_many(rows)


def learner(store, **kwargs) -> tuple[Learner, list[tuple[str, str]]]:
    learned: list[tuple[str, str]] = []
    made = Learner(
        LearnSettings(min_talk_s=0),
        store,
        lambda: SimpleNamespace(
            numbers=Numbers("RU", "495"), managers=Managers([Manager("101"), Manager("102")])
        ),
        on_learned=lambda number, ext: learned.append((number, ext)),
        **kwargs,
    )
    return made, learned


def finish(made: Learner, n: int, extension: str, at: float) -> None:
    talk = Conversation(f"+7916{n:07d}", extension, at - 60, at, outbound=False)
    made.on_finished(f"1.{n}", [talk])


async def test_batches_survive_a_store_failure_in_order(sqlite_store):
    flaky = FlakyStore(sqlite_store, failures=1)
    made, learned = learner(flaky)
    now = time.time()
    for n in range(3000):
        finish(made, n % 2000, "101" if n < 2000 else "102", now + n)  # 1,000 learned twice
    made.start()
    await until(lambda: made.pending == 0, timeout=5)
    await made.close()
    assert sum(flaky.batches) == 3000 and max(flaky.batches) <= 1000
    assert len(flaky.batches) <= 4  # batches, not a round trip a call
    assert len(learned) == 3000
    # The later conversation of each twice-learned number won: order was kept.
    assert (await sqlite_store.binding("+79160000001")).target == "102"
    assert (await sqlite_store.binding("+79160001999")).target == "101"


async def test_only_claimed_calls_are_learned(sqlite_store):
    async def claim(uniqueid: str) -> bool:
        return int(uniqueid.split(".")[1]) % 2 == 0

    made, learned = learner(sqlite_store, claim=claim)
    made.start()
    for n in range(10):
        finish(made, n, "101", time.time())
    await until(lambda: made.pending == 0, timeout=5)
    await made.close()
    assert [number for number, _ in learned] == [f"+7916{n:07d}" for n in range(0, 10, 2)]
    assert await sqlite_store.binding("+79160000001") is None
