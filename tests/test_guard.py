"""What ICM puts around a CRM: cache (positive, negative, expiry), one request in flight
per number, the circuit breaker, and parallel lookups against two real fake CRMs."""

import asyncio
import time
from collections import Counter

import pytest

from icm.guard import CircuitBreaker, GuardedSource, RemoteSourceSettings, cache_key
from icm.model import Answer, Status
from icm.ratelimit import RateLimiter, asking
from icm.sources import SourceContext, SourceError, SourceSkipped, SourceThrottled
from icm.store import SqliteStore

from .crm_fakes import FakeAmoCrm, FakeBitrix24
from .crm_util import CLIENT, crm_config, route, running, serving, steps


@pytest.fixture
async def amo():
    fake = FakeAmoCrm()
    fake.add_user(5550001, "Anna", "anna@example.ru")
    fake.add_user(5550002, "Boris", "boris@example.ru")
    fake.add_contact(101, ["+79161234567"], 5550001)
    await fake.start()
    yield fake
    await fake.stop()


def config(tmp_path, amo, **section):
    return crm_config(str(tmp_path / "icm.db"), {"amocrm": amo}, sections={"amocrm": section})


async def test_100_concurrent_calls_from_one_number_make_one_request(tmp_path, amo, sqlite_store):
    amo.delay = 0.1
    async with running(config(tmp_path, amo), sqlite_store) as router:
        before = len(amo.requests)
        decisions = await asyncio.gather(*(route(router) for _ in range(100)))
        assert {d.manager for d in decisions} == {"101"}
        assert len(amo.requests) - before == 1
        # ...and the next call is served from the cache.
        assert (await route(router)).manager == "101"
        assert len(amo.requests) - before == 1


@pytest.fixture
def store_clock(monkeypatch):
    """The SQLite store's wall clock, moved by the test (cache entries expire on it):
    a TTL test that sleeps fails on a busy machine, where three calls can outlast it."""
    import types

    import icm.store.sqlite

    now = [time.time()]
    monkeypatch.setattr(icm.store.sqlite, "time", types.SimpleNamespace(time=lambda: now[0]))
    return now


async def written(store, number: str) -> None:
    """The cache entry written (off the call path, just after the decision)."""
    async with asyncio.timeout(10):
        while await store.get(cache_key("amocrm", number)) is None:
            await asyncio.sleep(0.01)


async def test_negative_answers_are_cached_for_their_own_ttl(
    tmp_path, amo, sqlite_store, store_clock
):
    cfg = config(tmp_path, amo, negative_ttl_s=60, cache_ttl_s=600, entities=["contacts"])
    async with running(cfg, sqlite_store) as router:
        before = len(amo.requests)
        assert (await route(router, "+79031234567")).status is Status.NOTFOUND
        await written(sqlite_store, "+79031234567")
        for _ in range(2):
            assert (await route(router, "+79031234567")).status is Status.NOTFOUND
        assert len(amo.requests) - before == 1
        store_clock[0] += 59  # inside the negative TTL
        await route(router, "+79031234567")
        assert len(amo.requests) - before == 1
        store_clock[0] += 2  # past it (and far inside the positive one)
        await route(router, "+79031234567")
        assert len(amo.requests) - before == 2


async def test_a_manager_changed_in_the_crm_is_picked_up_after_the_positive_ttl(
    tmp_path, amo, sqlite_store, store_clock
):
    async with running(config(tmp_path, amo, cache_ttl_s=60), sqlite_store) as router:
        assert (await route(router)).manager == "101"
        await written(sqlite_store, CLIENT)
        amo.contacts[0]["responsible_user_id"] = 5550002
        assert (await route(router)).manager == "101"  # cached
        store_clock[0] += 59
        assert (await route(router)).manager == "101"  # still
        store_clock[0] += 2
        assert (await route(router)).manager == "102"


async def test_forget_drops_the_cached_answer(tmp_path, amo, sqlite_store, capsys):
    from icm import cli

    async with running(config(tmp_path, amo), sqlite_store) as router:
        await route(router)
        # The answer is cached off the call path, just after the decision.
        async with asyncio.timeout(2):
            while await sqlite_store.get(cache_key("amocrm", CLIENT)) is None:
                await asyncio.sleep(0.01)
    path = tmp_path / "icm.toml"
    path.write_text(
        f'[store]\nurl = "{tmp_path / "icm.db"}"\n[managers.101]\nname = "Anna"\n',
        encoding="utf-8",
    )
    assert await asyncio.to_thread(cli.main, ["forget", "8 916 123-45-67", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == "+79161234567: nothing learned; cached answers dropped: amocrm\n"
    assert await sqlite_store.get(cache_key("amocrm", CLIENT)) is None


async def test_circuit_opens_skips_without_waiting_then_closes(tmp_path, amo, sqlite_store):
    """The third routed timeout has opened the circuit by the time the router says so
    (issue 12.7): the router's wait and the lookup's own time are one clock."""
    section = {
        "breaker_failures": 3,
        "breaker_cooldown_s": 30,
        "timeout_ms": 300,
        "entities": ["contacts"],
    }
    async with running(config(tmp_path, amo, **section), sqlite_store) as router:
        [(guard, _)] = router.sources
        now = [0.0]
        guard.breaker.clock = lambda: now[0]
        amo.fault("hang", count=3, path="/contacts")
        for i in range(3):
            assert steps(await route(router, f"+7903123456{i}")) == [("amocrm", "timeout")]
            assert guard.breaker.failures == i + 1
        sent = len(amo.requests)
        skipped = await route(router, "+79031234569")
        # Skipped without waiting: nothing was sent, so there was nothing to wait for.
        assert steps(skipped) == [("amocrm", "skipped")]
        assert skipped.steps[0].detail == "circuit open after 3 failures; retry in 30 s"
        assert len(amo.requests) == sent
        now[0] = 30.5
        assert (await route(router)).manager == "101"  # the probe: closed again
        assert steps(await route(router, "+79031234568")) == [("amocrm", "no-answer")]


async def test_local_throttling_never_opens_the_circuit(tmp_path, amo, sqlite_store):
    """Issue 14.7: 30 distinct callers at once against a healthy amoCRM (50 ms). The
    lookups that cannot have a request slot in time are skipped at once, say so, and do
    not count against the CRM."""
    amo.rate_per_s = 1000  # the fake's own limit is not what this test is about
    amo.delay = 0.05
    for i in range(30):
        amo.add_contact(1000 + i, [f"+7917000{i:04d}"], 5550001)
    cfg = config(tmp_path, amo, entities=["contacts"])
    async with running(cfg, sqlite_store) as router:
        [(guard, _)] = router.sources
        decisions = await asyncio.gather(
            *(route(router, f"+7917000{i:04d}", budget=1.5) for i in range(30))
        )
        assert guard.breaker.state == "closed" and guard.breaker.failures == 0
    outcomes = Counter(d.steps[0].outcome for d in decisions)
    assert set(outcomes) == {"answered", "skipped"}, outcomes
    assert outcomes["answered"] >= 3
    for decision in decisions:
        if decision.steps[0].outcome == "skipped":
            assert decision.steps[0].detail.startswith("rate-limited locally: ")
            assert decision.status is Status.NOTFOUND
        else:
            assert decision.manager == "101"


def test_breaker_half_open_lets_one_probe_and_reopens_on_failure():
    now = [0.0]
    breaker = CircuitBreaker(2, 10, clock=lambda: now[0])
    assert breaker.check() is None
    breaker.failure()
    assert not breaker.is_open
    breaker.release()  # a cancelled lookup is neither
    assert breaker.failure() and breaker.check() == "circuit open after 2 failures; retry in 10 s"
    now[0] = 10.5
    assert breaker.check() is None  # the probe
    assert breaker.check() == "circuit half-open: a probe lookup is in flight"
    assert breaker.failure()
    assert breaker.check() == "circuit open after 2 failures; retry in 10 s"
    now[0] = 21
    assert breaker.check() is None
    breaker.success()
    assert breaker.check() is None and not breaker.is_open


class Scripted:
    """A remote source answering from a script, for the guard alone."""

    name = "scripted"
    remote = True
    Settings = RemoteSourceSettings

    def __init__(self, *results, delay=0.0):
        self.results = list(results)
        self.delay = delay
        self.asked = 0

    async def start(self):
        pass

    async def close(self):
        pass

    async def lookup(self, number):
        self.asked += 1
        await asyncio.sleep(self.delay)
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, Exception):
            raise result
        return result


def guarded(source, store, shared=False, **settings):
    context = SourceContext(store, None, None, shared=shared)
    return GuardedSource(source, RemoteSourceSettings(**settings), context)


async def test_cancelled_lookups_do_not_count_as_failures(sqlite_store):
    source = Scripted(Answer(extension="101"), delay=0.2)
    guard = guarded(source, sqlite_store, breaker_failures=1, timeout_ms=5000)
    for i in range(3):
        task = asyncio.create_task(guard.lookup(f"+7903123450{i}"))
        await asyncio.sleep(0.01)
        task.cancel()  # the router stopped waiting (budget, a source above answered)
    assert guard.breaker.check() is None
    await guard.close()


async def test_errors_are_not_cached_and_own_timeout_counts(sqlite_store):
    source = Scripted(SourceError("scripted", "HTTP 500"), Answer(extension="101"))
    guard = guarded(source, sqlite_store)
    with pytest.raises(SourceError):
        await guard.lookup(CLIENT)
    assert await sqlite_store.get(cache_key("scripted", CLIENT)) is None
    assert (await guard.lookup(CLIENT)).extension == "101"
    slow = guarded(Scripted(None, delay=1), sqlite_store, timeout_ms=50, breaker_failures=1)
    with pytest.raises(SourceError, match="no answer within 50 ms"):
        await slow.lookup("+79031234567")
    with pytest.raises(SourceSkipped, match="circuit open after 1 failures"):
        await slow.lookup("+79031234567")
    assert (await slow.lookup(CLIENT)).extension == "101"  # the cache still answers
    await slow.close()


async def test_instances_sharing_a_store_ask_once(tmp_path):
    """With a shared store (Redis in production), the claim in the store makes the second
    instance wait for the first one's answer instead of asking the CRM too."""
    stores = [SqliteStore(tmp_path / "shared.db") for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        sources = [Scripted(Answer(extension="101"), delay=0.1) for _ in stores]
        guards = [guarded(s, st, shared=True) for s, st in zip(sources, stores, strict=True)]
        answers = await asyncio.gather(*(g.lookup(CLIENT) for g in guards for _ in range(5)))
        assert {a.extension for a in answers} == {"101"}
        assert sum(s.asked for s in sources) == 1
    finally:
        for store in stores:
            await store.close()


async def test_parallel_waits_for_the_slowest_needed_not_the_sum(tmp_path, sqlite_store):
    """amoCRM does not know the caller, Bitrix24 does; each answers in 200 ms."""
    amo, b24 = FakeAmoCrm(), FakeBitrix24()
    b24.add_user("7", "Anna", inner="101")
    b24.add_entity("contact", 1, ["+79161234567"], "7")
    async with serving(amo, b24):
        timings = {}
        for mode in ("chain", "parallel"):
            await sqlite_store.delete(cache_key("amocrm", CLIENT), cache_key("bitrix24", CLIENT))
            cfg = crm_config(
                str(tmp_path / "icm.db"),
                {"amocrm": amo, "bitrix24": b24},
                sections={"amocrm": {"entities": ["contacts"]}},
                routing={"lookup": mode},
            )
            async with running(cfg, sqlite_store) as router:
                amo.delay = b24.delay = 0.2
                started = time.perf_counter()
                decision = await route(router)
                timings[mode] = time.perf_counter() - started
                amo.delay = b24.delay = 0
            assert decision.manager == "101" and decision.source == "bitrix24"
            assert steps(decision) == [("amocrm", "no-answer"), ("bitrix24", "answered")]
    assert timings["chain"] > 0.38  # 200 ms + 200 ms
    assert timings["parallel"] > 0.18  # 200 ms...
    # ...and not the sum: saving most of one source's delay, whatever the machine's load.
    assert timings["parallel"] < timings["chain"] - 0.15


async def test_parallel_cancels_what_is_not_needed(tmp_path, sqlite_store):
    amo, b24 = FakeAmoCrm(), FakeBitrix24()
    amo.add_user(5550001, "Anna", "anna@example.ru")
    amo.add_contact(101, ["+79161234567"], 5550001)
    async with serving(amo, b24):
        cfg = crm_config(
            str(tmp_path / "icm.db"),
            {"amocrm": amo, "bitrix24": b24},
            routing={"lookup": "parallel"},
        )
        async with running(cfg, sqlite_store) as router:
            b24.fault("hang", path="/batch")
            started = time.perf_counter()
            decision = await route(router)
            assert time.perf_counter() - started < 0.3
    assert steps(decision) == [("amocrm", "answered"), ("bitrix24", "not-needed")]
    assert decision.steps[1].detail == "a source above answered first"


async def test_a_call_joining_a_lookup_throttled_for_an_earlier_call_gets_its_own(
    sqlite_store,
):
    """One lookup in flight per number, begun for the first call: it had no request slot
    within that call's time. A second call waiting on it, with more time, is not told
    "rate-limited" for the first one's sake: it gets a lookup of its own."""
    limiter = RateLimiter("scripted", rate_per_s=2)

    class Limited(Scripted):
        async def lookup(self, number):
            self.asked += 1
            await limiter.acquire()  # by when the call that began the lookup stops waiting
            return Answer(extension="101")

    source = Limited(None)
    guard = guarded(source, sqlite_store)
    await limiter.acquire()  # the next slot is half a second away
    now = asyncio.get_running_loop().time()
    with asking(by=now + 0.1):
        first = asyncio.create_task(guard.lookup(CLIENT))
    with asking(by=now + 5):
        second = asyncio.create_task(guard.lookup(CLIENT))
    with pytest.raises(SourceThrottled, match="rate-limited locally"):
        await first
    assert (await second).extension == "101"
    assert source.asked == 2 and guard.breaker.failures == 0
    await guard.close()
