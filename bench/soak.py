"""Soak: half an hour of a busy PBX compressed into one million AMI events and 100,000
routing requests, against one daemon process; its memory at the start and the end, and
no task or file descriptor left behind.

The daemon runs as ``icm run`` does, through bench/_probe.py, which only adds a read-only
``/debug/stats`` (asyncio tasks, tracked calls, caches) to its HTTP port; RSS and open file
descriptors come from /proc. Traffic from the simulated Asterisk in this process:
answered calls as they pass the shipped eventfilter (bench/_traffic.py; each from a new
number, so each is learned into SQLite) and routing requests (80 % callers learned
beforehand, 15 % unknown, 5 % hidden), spread evenly over the run.

Memory is read at the start (logged in, presence loaded, 10,000 learned callers in the
store, no traffic yet), after the first 10 % of the traffic (caches warm), and at the end
(traffic over, in-flight work finished). The target is on end - start (<= 10 MB).

    python bench/soak.py            # the full run: 1,000,000 events, 100,000 requests
    python bench/soak.py --scale 0.2  # a fifth of it, proportionally

Last line: {"rss_start_mb", "rss_end_mb", "rss_growth_mb", "tasks_start", "tasks_end",
"fds_start", "fds_end", "requests", "answered", ...}
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    SECRET,
    Answers,
    attach_py_spy,
    cpu_seconds,
    fd_targets,
    forget_actions,
    free_port,
    machine,
    open_fds,
    report,
    rss_mb,
    scrape,
    seed_learned,
    start_pbx,
    summary,
    tempdir,
    write_config,
)
from _traffic import MANAGERS, call, route_request

PROBE = Path(__file__).resolve().parent / "_probe.py"
LEARNED = 10_000
TICK_S = 0.005
MAX_TICK_EVENTS = 1_200  # 240,000 events/s at most: 12 x the nominal rate
MAX_TICK_REQUESTS = 120


def start_probe(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(PROBE), str(config)],
        env={**os.environ, "ICM_BENCH_SECRET": SECRET},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=config.parent,
    )


async def stats(port: int) -> dict[str, object]:
    url = f"http://127.0.0.1:{port}/debug/stats"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return dict(await response.json())


def kinds(targets: list[str]) -> dict[str, int]:
    """Open descriptors by kind: socket, pipe, anon_inode (epoll...), or the file's name."""
    counted: collections.Counter[str] = collections.Counter(
        target.split(":", 1)[0] if ":" in target else Path(target).name for target in targets
    )
    return dict(counted)


def stamped(frame: bytes, when: float) -> bytes:
    """A frame with Asterisk's ``Timestamp:`` after its Privilege line."""
    head, _, rest = frame.partition(b"\r\n")
    privilege, _, rest = rest.partition(b"\r\n")
    return b"\r\n".join([head, privilege, f"Timestamp: {when:.6f}".encode(), rest])


def caller(pick: random.Random) -> str:
    roll = pick.random()
    if roll < 0.80:
        return f"8903{pick.randrange(LEARNED):07d}"  # learned beforehand
    if roll < 0.95:
        return f"8926{pick.randrange(10**7):07d}"  # nobody knows him
    return "anonymous"


async def main(scale: float, seconds: float, profile: str | None) -> dict[str, object]:
    total_events, total_requests = round(1_000_000 * scale), round(100_000 * scale)
    pbx = await start_pbx(*MANAGERS)
    server = pbx.ami
    answers = Answers(pbx)
    with tempdir() as tmp:
        await seed_learned(str(Path(tmp) / "icm.db"), LEARNED, MANAGERS)
        http_port = free_port()
        config = write_config(Path(tmp), pbx.port, http_port=http_port)
        daemon = start_probe(config, Path(tmp) / "daemon.log")
        spy = attach_py_spy(daemon.pid, profile) if profile else None
        try:
            await server.wait_login(1, timeout=30)
            await asyncio.sleep(1.0)  # presence resynchronised, ICM_WAIT set
            begin = await stats(http_port)
            await asyncio.sleep(0.5)  # our HTTP connection closed on the daemon's side too
            rss_start, fds_start = rss_mb(daemon.pid), fd_targets(daemon.pid)
            pick = random.Random(11)
            numbers = iter(range(1, 10**9))
            events = requests = 0
            warm: dict[str, float] = {}
            loop = asyncio.get_running_loop()
            cpu0 = cpu_seconds(daemon.pid)
            start = next_tick = loop.time()
            while events < total_events or requests < total_requests:
                share = min(1.0, (loop.time() - start) / seconds)
                frames: list[bytes] = []
                # A bounded share a tick: a simulated Asterisk that fell behind (a busy
                # machine) catches up over several ticks, never silent for seconds while
                # it renders a backlog (a real one never is).
                while (
                    events + len(frames) < round(share * total_events)
                    and len(frames) < MAX_TICK_EVENTS
                ):
                    frames += call(next(numbers), at=time.time() - 60)
                if frames:
                    server.send_raw(b"".join(frames))
                    events += len(frames)
                for _ in range(min(MAX_TICK_REQUESTS, round(share * total_requests) - requests)):
                    requests += 1
                    channel = pbx._channel("SIP/trunk", caller(pick))
                    token = f"{requests:012d}"
                    # Stamped as Asterisk does with timestampevents = yes, like the calls.
                    request = stamped(route_request(channel.snapshot(), token), time.time())
                    answers.send(token, request)
                    loop.call_later(3, pbx.channels.pop, channel.name, None)
                if not warm and share >= 0.1:
                    warm = {"rss_mb": rss_mb(daemon.pid), "fds": open_fds(daemon.pid)}
                forget_actions(server)
                next_tick += TICK_S
                await asyncio.sleep(max(0.0, next_tick - loop.time()))
            duration = loop.time() - start
            # Let the daemon finish: every event handled, every call learned, no request
            # in flight.
            try:
                async with asyncio.timeout(120):
                    while True:
                        metrics = await scrape(http_port)
                        end = await stats(http_port)
                        if (
                            metrics.get("icm_ami_events_total", 0) >= events + requests
                            and end["learner_pending"] == 0
                            and end["in_flight"] == 0
                        ):
                            break
                        await asyncio.sleep(0.2)
            except TimeoutError:
                handled = metrics.get("icm_ami_events_total", 0)
                log_text = (Path(tmp) / "daemon.log").read_text(errors="replace")
                kept = Path(tempfile.mkstemp(prefix="icm-soak-daemon-", suffix=".log")[1])
                shutil.copyfile(Path(tmp) / "daemon.log", kept)
                raise RuntimeError(
                    f"the daemon did not settle within 120 s after the traffic: "
                    f"{handled:.0f} of {events + requests} events handled, "
                    f"learner_pending {end['learner_pending']}, in_flight {end['in_flight']}, "
                    f"reconnects {metrics.get('icm_ami_reconnects_total', 0):.0f}; "
                    f"its log (whole in {kept}) ends:\n{log_text[-3000:]}"
                ) from None
            await asyncio.sleep(1.0)
            cpu = cpu_seconds(daemon.pid) - cpu0
            rss_end, fds_end = rss_mb(daemon.pid), fd_targets(daemon.pid)
            end = await stats(http_port)
            metrics = await scrape(http_port)
            daemon.terminate()
            code = daemon.wait(15)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(10)
            if spy is not None:
                spy.wait(30)
            await pbx.stop()
        log = (Path(tmp) / "daemon.log").read_text(encoding="utf-8", errors="replace")
        with contextlib.closing(sqlite3.connect(Path(tmp) / "icm.db")) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            rows = db.execute("SELECT count(*) FROM learned").fetchone()[0]
    return {
        "rss_start_mb": round(rss_start, 1),
        "rss_warm_mb": round(warm.get("rss_mb", float("nan")), 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_mb": round(rss_end - rss_start, 1),
        "rss_growth_after_warmup_mb": round(rss_end - warm.get("rss_mb", rss_start), 1),
        "target_rss_growth_mb": 10,
        "tasks_start": begin["tasks"],
        "tasks_end": end["tasks"],
        "task_names_end": end["task_names"],
        "fds_start": len(fds_start),
        "fds_warm": warm.get("fds"),
        "fds_end": len(fds_end),
        "fds_kinds_end": kinds(fds_end),
        "events": events,
        "events_handled": int(metrics.get("icm_ami_events_total", 0)),
        "requests": requests,
        "answered": len(answers.latencies),
        "statuses": dict(answers.statuses),
        "latency": summary(answers.latencies),
        "learned": int(metrics.get("icm_learned_total", 0)),
        "learned_rows": rows,
        "store_integrity": integrity,
        "learner_dropped": end["learner_dropped"],
        "tracked_calls_end": end["tracked_calls"],
        "numbers_cached_end": end["numbers_cached"],
        "gc_objects_start": begin["gc_objects"],
        "gc_objects_end": end["gc_objects"],
        "handler_errors": int(metrics.get("icm_event_handler_errors_total", 0)),
        "seconds": round(duration, 1),
        "events_per_s": round(events / duration),
        "requests_per_s": round(requests / duration),
        "daemon_cpu_percent": round(100 * cpu / (duration + 1)),
        "daemon_exit_code": code,
        "daemon_log_tracebacks": log.count("Traceback"),
        "scale": scale,
        "machine": machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="share of the full run")
    parser.add_argument(
        "--seconds", type=float, default=None, help="spread over (default: 50 s x scale)"
    )
    parser.add_argument("--profile", help="py-spy the daemon into this file")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else 50 * args.scale
    report(asyncio.run(main(args.scale, seconds, args.profile)))
