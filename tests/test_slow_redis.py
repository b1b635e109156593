"""A Redis that answers a claim after the client's socket timeout: redis-py sends the
command again, and the first attempt had already set the key. The retry finds its own
token and wins, so the call is answered (learned, looked up) exactly once.

A real redis-server behind a proxy (tests/slowproxy.py) that holds one reply back 0.6 s,
over the store's 0.5 s socket timeout."""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

import pytest

from icm.cluster import Claims
from icm.guard import GuardedSource, RemoteSourceSettings
from icm.metrics import Metrics
from icm.model import Answer, RouteRequest, Timing
from icm.sources import SourceContext
from icm.store.redis import RedisStore

from .slowproxy import SlowReplies

HELD_S = 0.6  # over the 0.5 s socket timeout, inside a 1.5 s budget's claim share


@pytest.fixture
async def slow(redis_server):
    redis_server.flush()
    proxy = SlowReplies("127.0.0.1", redis_server.port)
    await proxy.start()
    store = RedisStore(proxy.url, timeout_s=0.5)
    await store.open()
    await store.claim("warm-up", "x", 1)  # connected, the claim script loaded
    yield proxy, store
    await store.close()
    await proxy.stop()


@pytest.fixture
async def direct(redis_url):
    store = RedisStore(redis_url)
    await store.open()
    yield store
    await store.close()


async def test_a_retried_claim_finds_its_own_token_and_wins(slow, direct):
    proxy, store = slow
    proxy.hold(b"EVAL", HELD_S)
    assert await store.claim("claim:route:1", "instance-A:1", 30)
    assert proxy.delayed == 1  # the answer did come late, and the command was sent again
    assert not await direct.claim("claim:route:1", "instance-B:1", 30)
    assert await direct.get("claim:route:1") == "instance-A:1"


@pytest.mark.parametrize("kind", ["route", "learn"])
async def test_one_instance_wins_the_call_when_its_claim_is_answered_late(slow, direct, kind):
    proxy, store = slow
    metrics_a, metrics_b = Metrics(), Metrics()
    a = Claims(store, metrics_a, instance="instance-A")
    b = Claims(direct, metrics_b, instance="instance-B")
    request = RouteRequest("000000000001", "+79161234567", timing=Timing(1.5, 20))

    async def claim(claims: Claims) -> bool:
        if kind == "route":
            return await claims.route(request)
        return await claims.learn("1700000000.1", request.timing.claim_timeout_s)

    proxy.hold(b"EVAL", HELD_S)
    won = [await claim(a), await claim(b)]
    assert proxy.delayed == 1
    assert won == [True, False]  # exactly one acts on it; before: both lost
    assert metrics_a.claims.labels(kind, "unavailable")._value.get() == 0
    # One instance asked twice (a repeated event) still acts once.
    assert not await claim(a)


class Crm:
    """A remote source that knows one client."""

    name: ClassVar[str] = "crm"
    Settings: ClassVar[type[RemoteSourceSettings]] = RemoteSourceSettings
    remote: ClassVar[bool] = True

    def __init__(self) -> None:
        self.asked = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def lookup(self, number: str) -> Answer | None:
        self.asked += 1
        return Answer(extension="101")


async def test_a_crm_lookup_claimed_late_is_not_taken_for_another_instances(slow):
    """Before: the retried claim saw the key held (by itself), waited for "the other
    instance" to fill the cache until the source's timeout, and failed the lookup."""
    proxy, store = slow
    crm = Crm()
    context = SourceContext(store=store, numbers=None, managers=None, shared=True)  # type: ignore[arg-type]
    guarded = GuardedSource(crm, RemoteSourceSettings(timeout_ms=5000), context)
    proxy.hold(b"EVAL", HELD_S)
    assert await guarded.lookup("+79161234567") == Answer(extension="101")
    assert proxy.delayed == 1 and crm.asked == 1
    await guarded.close()


async def test_a_claim_slowed_by_a_busy_process_is_not_granted_as_if_redis_were_down(redis_url):
    """Two instances claim 60 calls; this process then stalls longer than a claim may
    take (a busy CPU). Redis answered every claim meanwhile: its answers decide, exactly
    one instance wins each call, and nothing counts as "unavailable"."""
    stores = [RedisStore(redis_url, timeout_s=2.0) for _ in range(2)]
    for store in stores:
        await store.open()
    metrics = [Metrics(), Metrics()]
    instances = [Claims(stores[n], metrics[n], instance=f"i{n}") for n in range(2)]
    timing = Timing(0.5, 20)  # a claim may take 333 ms
    requests = [RouteRequest(f"{t:012d}", "+79161234567", timing=timing) for t in range(60)]

    claims = [asyncio.gather(*(c.route(r) for c in instances)) for r in requests]
    # Once every claim is on its way (the tasks run first), the process stalls.
    asyncio.get_running_loop().call_soon(time.sleep, timing.claim_timeout_s + 0.3)
    won = await asyncio.gather(*claims)
    assert [sorted(w) for w in won] == [[False, True]] * len(requests)
    assert sum(m.claims.labels("route", "unavailable")._value.get() for m in metrics) == 0
    for store in stores:
        await store.close()


async def test_a_burst_of_claims_and_lookups_costs_a_round_trip_not_one_each(slow):
    """200 calls at once: their claims go to Redis as one pipeline, their lookups as
    another (each claim still has its own answer)."""
    proxy, store = slow
    await store.learn("+79160000001", "101", time.time())
    before = proxy.reads
    won = await asyncio.gather(*(store.claim(f"claim:route:{i}", f"A:{i}", 30) for i in range(200)))
    assert won == [True] * 200
    claims_reads = proxy.reads - before
    found = await asyncio.gather(*(store.binding(f"+7916000{i:04d}") for i in range(200)))
    assert [b.target if b else None for b in found] == [None, "101"] + [None] * 198
    lookups_reads = proxy.reads - before - claims_reads
    assert claims_reads <= 4 and lookups_reads <= 4, (claims_reads, lookups_reads)  # not 200
    assert not await store.claim("claim:route:7", "B:7", 30)  # taken: still one winner
