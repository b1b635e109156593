"""AMI ingest: events/s through the whole daemon (parse, presence, call tracking, learning
into SQLite) against the rate at which bare panoramisk 1.4 parses the same stream, in the
same run, on the same machine.

The stream: ``--events`` events of answered inbound calls (bench/_traffic.py: twelve
events a call as they pass the shipped eventfilter, full channel snapshots, ``Timestamp``
headers; every call from a new number, so every call is one SQLite write), rendered once;
the very same bytes go to each receiver, in 64 KiB writes with flow control, over loopback
TCP from an AMI server in this process, after the receiver has logged in.

The receivers, each in its own process, one after the other, alternating for ``--rounds``:

* ICM: the daemon as deployed (``icm run``). Its rate comes from its own counters:
  ``icm_ami_events_total`` and ``icm_learned_total`` from /metrics, polled every 50 ms.
  ``events_per_s`` is the whole stream over the time until every event was handled *and*
  every call learned, or, if the learner's buffer overflowed (``learning_dropped``: every
  call teaches one binding), the learning rate times twelve events a call: the rate at
  which it does all its work without losing any. ``dispatch_events_per_s`` is the event
  counter's rate between 10 % and 90 % of the stream (learning may lag it).
* panoramisk: a bare ``Manager`` logged in as the same AMI user with one no-op ``*``
  callback (bench/_panoramisk_sink.py); nothing else in its process. Its rate comes from
  marks it takes every 5 % of the stream.

The best round of each is compared: ``ratio`` = ICM events_per_s / panoramisk
events_per_s (target >= 0.8). ``parse_only`` compares the two parsers alone in this process
on the same bytes (ICM's FrameReader against panoramisk's AMIProtocol + dispatch).

    python bench/ingest.py [--events 200000] [--rounds 2] [--profile daemon.svg]

Last line: {"ratio", "icm": {...}, "panoramisk": {...}, "parse_only": {...}, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    SECRET,
    at_fraction,
    attach_py_spy,
    cpu_seconds,
    free_port,
    machine,
    report,
    rss_mb,
    scrape,
    start_daemon,
    tempdir,
    write_config,
)
from _traffic import EVENTS_PER_CALL, stream

from icm.ami.frames import FrameReader
from simpbx.ami_server import AmiServer, AmiUser
from simpbx.pbx import asterisk_file

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
CHUNK = 64 * 1024
SINK = Path(__file__).resolve().parent / "_panoramisk_sink.py"


def icm_user() -> AmiUser:
    """The shipped AMI user (read call,user; its eventfilter): the same for both."""
    return AmiUser.from_manager_conf(asterisk_file("manager_icm.conf"), "icm", secret=SECRET)


async def feed(server: AmiServer, blob: bytes) -> None:
    """Write the stream to the logged-in session, 64 KiB at a time, waiting for the
    receiver to take each (TCP flow control)."""
    [session] = [s for s in server.sessions if s.user is not None]
    for i in range(0, len(blob), CHUNK):
        session.writer.write(blob[i : i + CHUNK])
        await session.writer.drain()


def window_rate(samples: list[tuple[float, float]], total: int) -> float:
    """Events/s between 10 % and 90 % of the stream."""
    low, high = 0.1 * total, 0.9 * total
    return (high - low) / (at_fraction(samples, high) - at_fraction(samples, low))


async def run_icm(blob: bytes, events: int, calls: int, profile: str | None) -> dict[str, float]:
    server = AmiServer([icm_user()], auth_delay=0)
    await server.start()
    with tempdir() as tmp:
        http_port = free_port()
        config = write_config(Path(tmp), server.port, http_port=http_port)
        log = Path(tmp) / "daemon.log"
        daemon = start_daemon(config, log)
        spy = attach_py_spy(daemon.pid, profile) if profile else None
        try:
            await server.wait_login(1, timeout=30)
            while not any(h.get("variable") == "ICM_WAIT" for _, h in server.actions):
                await asyncio.sleep(0.01)  # presence resynchronised, ICM_WAIT set
            before = await scrape(http_port)
            base = before.get("icm_ami_events_total", 0.0)
            learned_base = before.get("icm_learned_total", 0.0)
            cpu0, started = cpu_seconds(daemon.pid), time.monotonic()
            feeding = asyncio.create_task(feed(server, blob))
            samples: list[tuple[float, float]] = [(started, 0.0)]
            learned: list[tuple[float, float]] = [(started, 0.0)]
            while True:
                await asyncio.sleep(0.05)
                metrics = await scrape(http_port)
                now = time.monotonic()
                samples.append((now, metrics.get("icm_ami_events_total", 0.0) - base))
                learned.append((now, metrics.get("icm_learned_total", 0.0) - learned_base))
                if samples[-1][1] >= events and (
                    learned[-1][1] >= calls
                    or (len(learned) > 10 and learned[-1][1] == learned[-11][1])  # stalled
                ):
                    break
                if now - started > 600:
                    raise TimeoutError("the daemon did not take the stream in 10 minutes")
            await feeding
            cpu = cpu_seconds(daemon.pid) - cpu0
            learned_total = learned[-1][1]
            events_done = at_fraction(samples, events)
            learned_done = at_fraction(learned, learned_total) if learned_total else events_done
            done = max(events_done, learned_done)
            memory = rss_mb(daemon.pid)
            handler_errors = metrics.get("icm_event_handler_errors_total", 0.0)
        finally:
            daemon.terminate()
            daemon.wait(10)
            if spy is not None:
                spy.wait(30)
            await server.stop()
    # All the work (every event handled, every call learned) at a rate it can keep up:
    # if the learner's buffer overflowed, its own rate is the limit.
    learned_per_s = learned_total / (learned_done - started) if learned_total else 0.0
    sustained = min(events / (done - started), learned_per_s * EVENTS_PER_CALL)
    return {
        "events_per_s": round(sustained),
        "dispatch_events_per_s": round(window_rate(samples, events)),
        "seconds": round(done - started, 2),
        "learned": int(learned_total),
        "learned_per_s": round(learned_per_s),
        "learning_dropped": calls - int(learned_total),  # every call teaches one binding
        "handler_errors": int(handler_errors),
        "cpu_percent": round(100 * cpu / (done - started)),
        "rss_mb": round(memory, 1),
    }


async def run_panoramisk(blob: bytes, events: int) -> dict[str, float]:
    server = AmiServer([icm_user()], auth_delay=0)
    await server.start()
    sink = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SINK),
        str(server.port),
        SECRET,
        str(events),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert sink.stdout is not None
        async with asyncio.timeout(30):
            assert (await sink.stdout.readline()).strip() == b"ready"
        cpu0, started = cpu_seconds(sink.pid), time.monotonic()
        feeding = asyncio.create_task(feed(server, blob))
        async with asyncio.timeout(600):
            marks = {
                int(k): v for k, v in json.loads(await sink.stdout.readline())["marks"].items()
            }
        cpu = cpu_seconds(sink.pid) - cpu0
        await feeding
    finally:
        sink.kill()
        await sink.wait()
        await server.stop()
    samples = [(started, 0.0), *sorted((t, float(c)) for c, t in marks.items())]
    done = at_fraction(samples, events)
    return {
        "events_per_s": round(events / (done - started)),
        "dispatch_events_per_s": round(window_rate(samples, events)),
        "seconds": round(done - started, 2),
        "cpu_percent": round(100 * cpu / (done - started)),
    }


async def parse_only(blob: bytes, events: int) -> dict[str, float]:
    """Both parsers alone, in this process, on the same 64 KiB chunks."""
    from panoramisk.ami_protocol import AMIProtocol
    from panoramisk.manager import Manager

    chunks = [BANNER + blob[:CHUNK]] + [blob[i : i + CHUNK] for i in range(CHUNK, len(blob), CHUNK)]
    reader = FrameReader()
    started = time.perf_counter()
    count = sum(len(reader.feed(chunk)) for chunk in chunks)
    icm_s = time.perf_counter() - started
    assert count == events, count

    class Transport:
        def write(self, data: bytes) -> None:
            pass

        def close(self) -> None:
            pass

    seen = 0

    def on_event(manager: Manager, event: object) -> None:
        nonlocal seen
        seen += 1

    async def panoramisk() -> float:
        manager = Manager(loop=asyncio.get_running_loop())
        manager.register_event("*", on_event)
        protocol = AMIProtocol()
        protocol.connection_made(Transport())
        protocol.factory, protocol.encoding = manager, "utf8"
        started = time.perf_counter()
        for chunk in chunks:
            protocol.data_received(chunk)
        return time.perf_counter() - started

    pano_s = await panoramisk()
    assert seen == events, seen
    return {
        "icm_events_per_s": round(events / icm_s),
        "panoramisk_events_per_s": round(events / pano_s),
        "ratio": round(pano_s / icm_s, 2),
    }


async def main(events: int, rounds: int, profile: str | None) -> dict[str, object]:
    calls = -(-events // EVENTS_PER_CALL)
    blob = stream(calls * EVENTS_PER_CALL)
    events = calls * EVENTS_PER_CALL
    icm_runs, pano_runs = [], []
    for i in range(rounds):
        icm_runs.append(await run_icm(blob, events, calls, profile if i == 0 else None))
        pano_runs.append(await run_panoramisk(blob, events))
    icm = max(icm_runs, key=lambda r: r["events_per_s"])
    pano = max(pano_runs, key=lambda r: r["events_per_s"])
    return {
        "ratio": round(icm["events_per_s"] / pano["events_per_s"], 2),
        "target_ratio": 0.8,
        "events": events,
        "calls": calls,
        "bytes_per_event": round(len(blob) / events),
        "icm": icm,
        "panoramisk": pano,
        "icm_rounds_events_per_s": [r["events_per_s"] for r in icm_runs],
        "panoramisk_rounds_events_per_s": [r["events_per_s"] for r in pano_runs],
        "parse_only": await parse_only(blob, events),
        "machine": machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", help="py-spy the daemon's first round into this file")
    args = parser.parse_args()
    report(asyncio.run(main(args.events, args.rounds, args.profile)))
