"""The CRM path: what ICM adds on top of a CRM's own latency, in the same process as the
router (the AMI side is bench/route_latency.py's).

A fake amoCRM (tests/crm_fakes.py, answering as API v4 does) takes ``--crm-ms`` (50 ms)
per request. Measured:

* decision latency of cache misses (router.route, RouteRequest in, Decision out) minus
  the CRM's own time for that lookup (from request received to response ready, as the
  fake server measured it): ICM's overhead, its HTTP client included;
* decision latency of cache hits;
* how many CRM requests 100 concurrent calls from one number make;
* chain vs parallel with two sources each answering in ``--crm-ms``: amoCRM does not know
  the caller, Bitrix24 does.

The fake CRMs run in a process of their own, as a remote CRM does not share ICM's
interpreter. Misses are paced under amoCRM's 7 requests/s (the client-side limit would
otherwise queue them, which is not overhead). Store: SQLite in a temporary directory.

    python bench/crm_path.py [--misses 150] [--hits 2000] [--crm-ms 50]

Last line: {"overhead_p99_ms", "cache_hit_p99_ms", "crm_requests_for_100_concurrent",
"chain_p50_ms", "parallel_p50_ms", ...}
Targets: overhead p99 <= 5 ms, cache hit p99 <= 2 ms, 1 request, parallel ~ max not sum.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from _harness import percentile, report, tempdir  # noqa: E402

from icm.config import Config, from_dict  # noqa: E402
from icm.daemon import freeze_startup_heap  # noqa: E402
from icm.dialing import DialStrings  # noqa: E402
from icm.managers import Managers  # noqa: E402
from icm.model import Presence, RouteRequest  # noqa: E402
from icm.router import Router  # noqa: E402
from icm.snapshot import build_sources, source_context  # noqa: E402
from icm.store import SqliteStore, Store  # noqa: E402
from tests.crm_fakes import FakeAmoCrm, FakeBitrix24  # noqa: E402

AMO_PACE_S = 1.2 / 7  # just under amoCRM's 7 requests/s as ICM keeps it (7 in 1.15 s)
KNOWN = "+79031234567"  # Bitrix24 knows him, amoCRM does not


@dataclass
class Remote:
    """A fake CRM in the other process, steered over HTTP."""

    url: str
    session: aiohttp.ClientSession

    async def delay(self, seconds: float) -> None:
        async with self.session.post(f"{self.url}/_fake/delay", json={"s": seconds}):
            pass

    async def requests(self, since: int = 0) -> tuple[int, list[list[Any]]]:
        async with self.session.get(f"{self.url}/_fake/requests?since={since}") as response:
            data = await response.json()
        return data["count"], data["requests"]

    async def crm_ms(self, since: int) -> float:
        """The CRM's own time for the requests since ``since``: their union on the clock."""
        _, done = await self.requests(since)
        spans = sorted((start, end) for _, start, end in done)
        total, last = 0.0, float("-inf")
        for start, end in spans:
            if end > last:
                total += end - max(start, last)
                last = end
        return total * 1000


def serve(numbers: list[str], ready: Any) -> None:
    """The child process: both fakes, until killed."""

    async def run() -> None:
        amo, b24 = FakeAmoCrm(), FakeBitrix24()
        amo.add_user(5550001, "Anna", "anna@example.ru")
        b24.add_user("7", "Anna", inner="101")
        for i, number in enumerate(numbers):
            amo.add_contact(1000 + i, [number], 5550001)
        b24.add_entity("contact", 1, [KNOWN], "7")
        await amo.start()
        await b24.start()
        ready.put((amo.url, amo.long_lived, b24.url, b24.webhook))
        await asyncio.Event().wait()

    asyncio.run(run())


def config(store_url: str, fakes: tuple[str, ...], *, pair: bool, **routing: Any) -> Config:
    amo_url, token, _, webhook = fakes
    sources: dict[str, Any] = {"amocrm": {"base_url": amo_url, "timeout_ms": 1000}}
    names = ["amocrm"]
    env = {"ICM_AMOCRM_TOKEN": token}
    if pair:
        names.append("bitrix24")
        env["ICM_BITRIX24_WEBHOOK"] = webhook
        uncached = {"cache_ttl_s": 0.0, "negative_ttl_s": 0.0}
        sources["amocrm"] |= uncached | {"entities": ["contacts"]}
        sources["bitrix24"] = uncached
    raw = {
        "routing": {"area_code": "495", "sources": names, **routing},
        "managers": {"101": {"name": "Anna", "ids": {"amocrm": 5550001}}},
        "sources": sources,
        "store": {"url": store_url},
    }
    return from_dict(raw, "bench.toml", env, ami_secret=False)


async def started_router(cfg: Config, store: Store) -> tuple[Router, list[Any]]:
    numbers = cfg.numbers()
    managers = Managers.from_config(cfg, numbers)
    sources = build_sources(cfg, source_context(cfg, store, numbers, managers, None))
    for source, _ in sources:
        await source.start()
        await source.wait_ready(5)
    router = Router(
        settings=cfg.routing,
        sources=sources,
        numbers=numbers,
        managers=managers,
        dial=DialStrings(cfg.dial, numbers),
        presence=lambda ext: Presence.AVAILABLE,
    )
    freeze_startup_heap()  # as the daemon does once started
    return router, sources


async def timed(router: Router, number: str) -> float:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    decision = await router.route(RouteRequest("1", number, deadline=loop.time() + 2))
    elapsed = (time.perf_counter() - started) * 1000
    assert decision.manager == "101", decision.as_dict()
    return elapsed


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    numbers = [f"+7916{i:07d}" for i in range(args.misses + 10)]
    ready: Any = multiprocessing.Queue()
    child = multiprocessing.Process(target=serve, args=(numbers, ready), daemon=True)
    child.start()
    fakes = ready.get(timeout=20)
    result: dict[str, Any] = {"crm_latency_ms": args.crm_ms}
    session = aiohttp.ClientSession()
    amo, b24 = Remote(fakes[0], session), Remote(fakes[2], session)
    with tempdir() as tmp:
        store = SqliteStore(Path(tmp) / "icm.db")
        await store.open()
        try:
            cfg = config(str(store.path), fakes, pair=False)
            router, sources = await started_router(cfg, store)
            await amo.delay(args.crm_ms / 1000)
            await asyncio.sleep(AMO_PACE_S)  # the user map's request took the first slot
            overhead, decisions = [], []
            for number in numbers[: args.misses]:
                first, _ = await amo.requests()
                elapsed = await timed(router, number)
                decisions.append(elapsed)
                overhead.append(elapsed - await amo.crm_ms(first))
                await asyncio.sleep(AMO_PACE_S)
            hits = [await timed(router, numbers[i % args.misses]) for i in range(args.hits)]
            # 100 calls at once from a number nobody asked about yet.
            before, _ = await amo.requests()
            await asyncio.gather(*(timed(router, numbers[args.misses]) for _ in range(100)))
            concurrent_requests = (await amo.requests())[0] - before
            for source, _ in sources:
                await source.close()
            modes = {}
            await b24.delay(args.crm_ms / 1000)
            for mode in ("chain", "parallel"):
                cfg = config(str(store.path), fakes, pair=True, lookup=mode)
                router, sources = await started_router(cfg, store)
                runs = []
                for _ in range(args.pairs):
                    runs.append(await timed(router, KNOWN))
                    await asyncio.sleep(AMO_PACE_S)
                modes[mode] = runs
                for source, _ in sources:
                    await source.close()
        finally:
            await store.close()
            await session.close()
            child.kill()
    result |= {
        "misses": len(decisions),
        "decision_p50_ms": round(percentile(decisions, 0.5), 3),
        "decision_p99_ms": round(percentile(decisions, 0.99), 3),
        "overhead_p50_ms": round(percentile(overhead, 0.5), 3),
        "overhead_p99_ms": round(percentile(overhead, 0.99), 3),
        "overhead_max_ms": round(max(overhead), 3),
        "hits": len(hits),
        "cache_hit_p50_ms": round(percentile(hits, 0.5), 3),
        "cache_hit_p99_ms": round(percentile(hits, 0.99), 3),
        "crm_requests_for_100_concurrent": concurrent_requests,
        "chain_p50_ms": round(percentile(modes["chain"], 0.5), 3),
        "parallel_p50_ms": round(percentile(modes["parallel"], 0.5), 3),
    }
    result["targets_met"] = (
        result["overhead_p99_ms"] <= 5
        and result["cache_hit_p99_ms"] <= 2
        and concurrent_requests == 1
        and result["parallel_p50_ms"] < result["chain_p50_ms"] * 0.65
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--misses", type=int, default=150, help="cache-miss lookups timed")
    parser.add_argument("--hits", type=int, default=2000, help="cache-hit lookups timed")
    parser.add_argument("--pairs", type=int, default=30, help="chain/parallel runs each")
    parser.add_argument("--crm-ms", type=float, default=50.0, help="the fake CRM's latency")
    outcome = asyncio.run(main(parser.parse_args()))
    print(
        f"overhead p99 {outcome['overhead_p99_ms']} ms over a {outcome['crm_latency_ms']} ms "
        f"CRM; cache hit p99 {outcome['cache_hit_p99_ms']} ms; "
        f"{outcome['crm_requests_for_100_concurrent']} request(s) for 100 concurrent calls; "
        f"chain {outcome['chain_p50_ms']} ms vs parallel {outcome['parallel_p50_ms']} ms",
        file=sys.stderr,
    )
    report(outcome)
