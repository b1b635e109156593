"""A burst of distinct callers on each CRM: how many get their manager, and whether the
CRM's own limit or the circuit breaker ever says no (issue 14).

For each CRM (amoCRM, Bitrix24, Megaplan) and N = 10, 30, 100: N distinct callers, every
one of them a client of the CRM with a responsible manager, call at once. The fake CRM
(tests/crm_fakes.py, in a process of its own) answers in ``--crm-ms`` (50 ms) and
enforces the CRM's published limit as the CRM does: amoCRM 7 requests in any second
(429, then the flood ban), Bitrix24 a leaky bucket of 50 draining 2 a second (503
QUERY_LIMIT_EXCEEDED), Megaplan 5 in any second (429; it publishes no figure, a client
library keeps to 5). Each (CRM, N) round has a fresh fake and a fresh router with that
CRM's default settings (limit, timeout), the default lookup budget (1.5 s), the CRM
first and the call history (empty) second, and an empty cache. ``amocrm_mirror`` is
amoCRM with ``mirror = true``: its contacts' phones loaded in the background first.

Reported per CRM and N: callers routed (got their manager), skipped because ICM's own
limiter had no request slot in time ("rate-limited locally", the next source would be
asked), timed out, and, which must stay 0: the CRM's own refusals (429/503) and circuit
breaker openings.

    python bench/crm_burst.py [--sizes 10,30,100] [--crm-ms 50] [--lookup chain]

Last line: {"<crm>_<N>_routed": ..., "throttled_429_total": 0, "breaker_openings_total": 0,
"targets_met": true, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from _harness import report, tempdir  # noqa: E402

from icm.config import Config, from_dict  # noqa: E402
from icm.guard import GuardedSource  # noqa: E402
from icm.model import Decision, RouteRequest, Timing  # noqa: E402
from icm.ratelimit import asking  # noqa: E402
from icm.router import Router  # noqa: E402
from icm.store import SqliteStore, Store  # noqa: E402
from tests.crm_fakes import FakeAmoCrm, FakeBitrix24, FakeMegaplan, FakeServer  # noqa: E402
from tests.crm_util import make_router  # noqa: E402

# amocrm_mirror: amoCRM with `mirror = true` (its phones kept in memory, issue 14.8).
CRMS = ("amocrm", "bitrix24", "megaplan", "amocrm_mirror")
MANAGER = "101"


def callers(n: int) -> list[str]:
    return [f"+7916{n:03d}{i:04d}" for i in range(n)]


def fake(crm: str, numbers: list[str]) -> FakeServer:
    """A fake CRM knowing every one of ``numbers`` as a client of manager 101."""
    if crm.startswith("amocrm"):
        amo = FakeAmoCrm()  # 7 in any second
        amo.add_user(5550001, "Anna", "anna@example.ru")
        for i, number in enumerate(numbers):
            amo.add_contact(1000 + i, [number], 5550001)
        return amo
    if crm == "bitrix24":
        b24 = FakeBitrix24()  # 50, draining 2 a second
        b24.add_user("7", "Anna", inner=MANAGER)
        for i, number in enumerate(numbers):
            b24.add_entity("contact", 1000 + i, [number], "7")
        return b24
    mp = FakeMegaplan(rate_per_s=5)
    mp.add_employee(1000005, "Anna", email="anna@example.ru")
    for i, number in enumerate(numbers):
        mp.add_client("ContractorHuman", 1000 + i, [number], [("Employee", 1000005)])
    return mp


def serve(sizes: list[int], crm_ms: float, ready: Any) -> None:
    """The child process: a fake per CRM and N, until killed."""

    async def run() -> None:
        found: dict[str, dict[str, str]] = {}
        for crm in CRMS:
            for n in sizes:
                server = fake(crm, callers(n))
                server.delay = crm_ms / 1000
                await server.start()
                secret = ""
                if isinstance(server, FakeAmoCrm):
                    secret = server.long_lived
                elif isinstance(server, FakeBitrix24):
                    secret = server.webhook
                found[f"{crm}_{n}"] = {"url": server.url, "secret": secret}
        ready.put(found)
        await asyncio.Event().wait()

    asyncio.run(run())


def config(variant: str, fake_at: dict[str, str], store_url: str, lookup: str) -> Config:
    crm = variant.split("_")[0]
    section: dict[str, Any] = {"mirror": True} if variant.endswith("_mirror") else {}
    env: dict[str, str] = {}
    if crm == "amocrm":
        section["base_url"] = fake_at["url"]
        env["ICM_AMOCRM_TOKEN"] = fake_at["secret"]
    elif crm == "bitrix24":
        env["ICM_BITRIX24_WEBHOOK"] = fake_at["secret"]
    else:
        section |= {"base_url": fake_at["url"], "username": FakeMegaplan.USERNAME}
        env["ICM_MEGAPLAN_PASSWORD"] = FakeMegaplan.PASSWORD
    raw = {
        "routing": {"area_code": "495", "sources": [crm, "icmdb"], "lookup": lookup},
        "managers": {
            MANAGER: {"name": "Anna", "ids": {"amocrm": 5550001, "megaplan": 1000005}},
        },
        "sources": {crm: section},
        "store": {"url": store_url},
    }
    return from_dict(raw, "bench.toml", env, ami_secret=False)


async def started(cfg: Config, store: Store) -> tuple[Router, list[Any]]:
    """The router as the tests build it, its sources started and their user maps in."""
    router, sources = make_router(cfg, store)
    for source, _ in sources:
        await source.start()
        if hasattr(source, "wait_ready"):
            await source.wait_ready(5)
    return router, sources


async def call(router: Router, number: str, timing: Timing) -> Decision:
    """One live call, as an entry asks (the deadline keeps the answer's margin)."""
    now = asyncio.get_running_loop().time()
    with asking(lane="ami"):
        return await router.route(RouteRequest("1", number, deadline=timing.deadline(now)))


async def throttled(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/_fake/requests?since=999999") as response:
        return int((await response.json())["throttled"])


async def burst(
    crm: str, n: int, fake_at: dict[str, str], store: Store, args: argparse.Namespace
) -> dict[str, Any]:
    cfg = config(crm, fake_at, str(store.path), args.lookup)
    timing = Timing(cfg.routing.lookup_budget_ms / 1000, cfg.routing.dial_timeout_s)
    router, sources = await started(cfg, store)
    guard = next(s for s, _ in sources if isinstance(s, GuardedSource))
    mirror = getattr(guard.inner, "mirror", None)
    while mirror is not None and not mirror.ready:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.2)  # the user map's request: its slot back, as at any moment
    started_at = time.perf_counter()
    decisions = await asyncio.gather(*(call(router, number, timing) for number in callers(n)))
    wall_ms = (time.perf_counter() - started_at) * 1000
    await asyncio.sleep(timing.budget_s)  # lookups the router left run out their time
    for source, _ in sources:
        await source.close()
    outcomes = Counter(d.steps[0].outcome if d.steps else "none" for d in decisions)
    locally = sum(
        1 for d in decisions if d.steps and d.steps[0].detail.startswith("rate-limited locally")
    )
    async with aiohttp.ClientSession() as session:
        refused = await throttled(session, fake_at["url"])
    return {
        "routed": sum(d.manager == MANAGER for d in decisions),
        "rate_limited_locally": locally,
        "timeout": outcomes["timeout"] + outcomes["cut"],
        "errors": outcomes["error"],
        "throttled_429": refused,
        "breaker_openings": guard.breaker.openings,
        "wall_ms": round(wall_ms, 1),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.ERROR)
    sizes = [int(s) for s in args.sizes.split(",")]
    ready: Any = multiprocessing.Queue()
    child = multiprocessing.Process(target=serve, args=(sizes, args.crm_ms, ready), daemon=True)
    child.start()
    fakes = ready.get(timeout=60)
    result: dict[str, Any] = {"crm_latency_ms": args.crm_ms, "lookup": args.lookup}
    try:
        with tempdir() as tmp:
            for crm in CRMS:
                for n in sizes:
                    store = SqliteStore(Path(tmp) / f"{crm}-{n}.db")
                    await store.open()
                    try:
                        measured = await burst(crm, n, fakes[f"{crm}_{n}"], store, args)
                    finally:
                        await store.close()
                    print(f"{crm:9} N={n:3}: {measured}", file=sys.stderr)
                    for key, value in measured.items():
                        result[f"{crm}_{n}_{key}"] = value
    finally:
        child.kill()
    result["throttled_429_total"] = sum(
        v for k, v in result.items() if k.endswith("_throttled_429")
    )
    result["breaker_openings_total"] = sum(
        v for k, v in result.items() if k.endswith("_breaker_openings")
    )
    result["routed_total"] = sum(v for k, v in result.items() if k.endswith("_routed"))
    result["callers_total"] = sum(sizes) * len(CRMS)
    result["targets_met"] = (
        result["throttled_429_total"] == 0 and result["breaker_openings_total"] == 0
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,30,100", help="callers at once, per round")
    parser.add_argument("--crm-ms", type=float, default=50.0, help="the fake CRMs' latency")
    parser.add_argument("--lookup", default="chain", choices=["chain", "parallel"])
    report(asyncio.run(main(parser.parse_args())))
