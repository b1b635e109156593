"""Decision latency under load: routing requests while 10,000 other events/s stream in, on
SQLite and on Redis.

The daemon runs in its own process (``icm run``) against the simulated Asterisk in this
process. Background: answered calls as Asterisk sends them through the shipped eventfilter
(bench/_traffic.py: device states, dials, bridges, hangups, hints, the dialplan's
ICMResult; every call from a new number, so the daemon also learns ~830 calls/s).
Requests: ``ICMRoute`` UserEvents for callers picked at random among 10,000 learned ones,
evenly spaced at ``--rate``, each on a channel of its own; latency is from the moment the
UserEvent is written to the moment ICM's ``Setvar ICM_REPLY`` for it is read (both on this
process's clock): AMI in, parse, route (icmdb on the store), presence, AMI out.

Stores: SQLite (a file in a temporary directory) and Redis: the URL given with ``--redis``,
else a redis-server of our own on a free port when the binary is on the PATH. Where the
Redis store is not in the build (``open_store`` refuses ``redis://``), its entry says so.

    python bench/load_latency.py [--seconds 20] [--rate 200] [--background 10000]
                                 [--redis redis://127.0.0.1:6390/0] [--stores sqlite,redis]
                                 [--profile daemon.svg]

Last line: {"p50_ms", "p99_ms", "p999_ms" (the worst store's), "sqlite": {...}, "redis": ...}
Target: p99 <= 5 ms on each store.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    Answers,
    attach_py_spy,
    cpu_seconds,
    forget_actions,
    free_port,
    learned_number,
    machine,
    report,
    rss_mb,
    scrape,
    seed_learned,
    start_daemon,
    start_pbx,
    summary,
    tempdir,
    write_config,
)
from _traffic import EVENTS_PER_CALL, MANAGERS, call, route_request

from simpbx.redis_server import RedisServer
from simpbx.redis_server import available as redis_available

LEARNED = 10_000
TICK_S = 0.005


async def measure(
    store_url: str, seconds: float, rate: float, background: float, profile: str | None
) -> dict[str, object]:
    pbx = await start_pbx(*MANAGERS)
    server = pbx.ami
    answers = Answers(pbx)
    with tempdir() as tmp:
        http_port = free_port()
        config = write_config(Path(tmp), pbx.port, http_port=http_port, store=store_url)
        daemon = start_daemon(config, Path(tmp) / "daemon.log")
        spy = attach_py_spy(daemon.pid, profile) if profile else None
        try:
            await server.wait_login(1, timeout=30)
            await asyncio.sleep(1.0)  # presence resynchronised
            pick = random.Random(7)
            calls = iter(range(1, 10**9))
            events = requests = 0
            loop = asyncio.get_running_loop()
            cpu0, rss_start = cpu_seconds(daemon.pid), rss_mb(daemon.pid)
            start = next_tick = loop.time()
            while (elapsed := loop.time() - start) < seconds:
                due = int(elapsed * background) - events
                if due > 0:
                    frames = []
                    while len(frames) < due:
                        frames += call(next(calls), at=time.time() - 60)
                    server.send_raw(b"".join(frames))
                    events += len(frames)
                for _ in range(int(elapsed * rate) - requests):
                    requests += 1
                    caller = learned_number(pick.randrange(LEARNED)).replace("+7", "8")
                    channel = pbx._channel("SIP/trunk", caller)
                    token = f"{requests:012d}"
                    answers.send(token, route_request(channel.snapshot(), token))
                    loop.call_later(3, pbx.channels.pop, channel.name, None)
                forget_actions(server)
                next_tick += TICK_S
                await asyncio.sleep(max(0.0, next_tick - loop.time()))
            duration = loop.time() - start
            cpu = cpu_seconds(daemon.pid) - cpu0
            await asyncio.sleep(2)  # late answers
            metrics = await scrape(http_port)
            rss_end = rss_mb(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(10)
            if spy is not None:
                spy.wait(30)
            await pbx.stop()
    decided = {
        key.split('status="')[1].split('"')[0]: int(value)
        for key, value in metrics.items()
        if key.startswith("icm_decisions_total{")
    }
    return {
        **summary(answers.latencies),
        "requests": requests,
        "answered": len(answers.latencies),
        "decisions": decided,
        "rate_rps": round(requests / duration, 1),
        "events_per_s": round(events / duration),
        "learned_per_s": round(metrics.get("icm_learned_total", 0) / duration),
        "seconds": round(duration, 1),
        "daemon_events_handled": int(metrics.get("icm_ami_events_total", 0)),
        "daemon_handler_errors": int(metrics.get("icm_event_handler_errors_total", 0)),
        "daemon_cpu_percent": round(100 * cpu / duration),
        "daemon_rss_mb": round(rss_end, 1),
        "daemon_rss_start_mb": round(rss_start, 1),
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    result: dict[str, object] = {"target_p99_ms": 5.0}
    measured: list[dict[str, object]] = []
    if "sqlite" in stores:
        with tempdir() as tmp:
            url = str(Path(tmp) / "icm.db")
            await seed_learned(url, LEARNED, MANAGERS)
            result["sqlite"] = await measure(
                url, args.seconds, args.rate, args.background, args.profile
            )
            measured.append(result["sqlite"])  # type: ignore[arg-type]
    if "redis" in stores:
        result["redis"] = await run_redis(args)
        if isinstance(result["redis"], dict):
            measured.append(result["redis"])
    for key in ("p50_ms", "p99_ms", "p999_ms"):
        result[key] = max((float(m[key]) for m in measured), default=float("nan"))  # type: ignore[arg-type]
    result["background_events_per_call"] = EVENTS_PER_CALL
    result["machine"] = machine()
    return result


async def run_redis(args: argparse.Namespace) -> dict[str, object] | str:
    url = args.redis
    if url is not None:
        await seed_learned(url, LEARNED, MANAGERS)
        return await measure(url, args.seconds, args.rate, args.background, None)
    if not redis_available():
        return "skipped: no redis-server on the PATH and no --redis URL"
    with tempfile.TemporaryDirectory(prefix="icm-bench-redis-") as tmp:
        own = RedisServer(Path(tmp))
        try:
            own.start()
            await seed_learned(own.url, LEARNED, MANAGERS)
            return await measure(own.url, args.seconds, args.rate, args.background, None)
        finally:
            own.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="per store")
    parser.add_argument("--rate", type=float, default=200, help="routing requests/s")
    parser.add_argument("--background", type=float, default=10_000, help="other events/s")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--redis", help="a Redis URL (default: a redis-server of our own)")
    parser.add_argument("--profile", help="py-spy the daemon (SQLite run) into this file")
    report(asyncio.run(main(parser.parse_args())))
