"""Client-side rate limits: in-process, and shared by instances through the store."""

import asyncio
import time
from collections import Counter

import pytest

from icm.ratelimit import RateLimiter
from icm.sources import SourceSkipped
from icm.store import SqliteStore


async def test_leaky_bucket_allows_the_burst_then_the_rate():
    limiter = RateLimiter("crm", rate_per_s=20, burst=5)
    started = time.perf_counter()
    await asyncio.gather(*(limiter.acquire() for _ in range(5)))
    assert time.perf_counter() - started < 0.05
    await asyncio.gather(*(limiter.acquire() for _ in range(10)))
    assert 0.4 < time.perf_counter() - started < 0.7


async def test_instances_sharing_a_store_share_the_limit(tmp_path):
    stores = [SqliteStore(tmp_path / "shared.db") for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        limiters = [
            RateLimiter("crm", rate_per_s=10, burst=100, store=s, shared=True) for s in stores
        ]
        sent: list[float] = []

        async def send(limiter):
            await limiter.acquire()
            sent.append(time.time())

        await asyncio.gather(*(send(limiters[i % 2]) for i in range(15)))
        per_second = Counter(int(t) for t in sent)
        assert max(per_second.values()) <= 10, per_second
        assert len(sent) == 15
    finally:
        for store in stores:
            await store.close()


async def test_pause_after_the_crms_own_limit():
    limiter = RateLimiter("crm", rate_per_s=100)
    limiter.pause(0.2, "429 too many requests")
    with pytest.raises(SourceSkipped, match="paused after 429 too many requests; 1 s left"):
        await limiter.acquire()
    await asyncio.sleep(0.25)
    limiter.pause(10, "OPERATION_TIME_LIMIT", scope="crm.contact.get")
    with pytest.raises(SourceSkipped, match=r"crm\.contact\.get paused after OPERATION_TIME"):
        await limiter.acquire("crm.contact.get")
    await limiter.acquire("user.get")  # other methods still go
