"""Decision latency through AMI: from the ICMRoute UserEvent written by the simulated
Asterisk to ICM's Setvar arriving back, on a learned number, at a steady request rate
while the server streams other events (DeviceStateChange, Dial, Bridge, Hangup: all of
them pass the shipped eventfilter, so the daemon parses and handles every one).

The daemon runs in its own process (`icm run`), as it would beside Asterisk.

    python bench/route_latency.py [--seconds 20] [--rate 200] [--background 5000]

Last line: {"p50_ms", "p99_ms", "p999_ms", "requests", "answered", "events_per_s", ...}
Targets: p99 <= 5 ms at 200 requests/s with 5,000 other events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    Answers,
    free_port,
    report,
    rss_mb,
    scrape,
    start_daemon,
    start_pbx,
    summary,
    tempdir,
    write_config,
)

from icm.store import SqliteStore
from simpbx.ami_server import frame

LEARNED = "+79161234567"


def background_events(seq: itertools.count) -> list[bytes]:
    """One round of ordinary PBX traffic: 10 events of a call's life."""
    n = next(seq)
    channel, uid = f"SIP/trunk-{n:08x}", f"1700000000.{n}"
    snap = [
        ("Channel", channel),
        ("ChannelState", "6"),
        ("ChannelStateDesc", "Up"),
        ("CallerIDNum", f"8916{n % 10_000_000:07d}"),
        ("CallerIDName", "Иван Петров"),
        ("ConnectedLineNum", "105"),
        ("ConnectedLineName", "<unknown>"),
        ("Language", "ru"),
        ("AccountCode", ""),
        ("Context", "from-trunk"),
        ("Exten", "74951230000"),
        ("Priority", "1"),
        ("Uniqueid", uid),
        ("Linkedid", uid),
    ]
    bridge = [("BridgeUniqueid", f"b-{n}"), ("BridgeType", "basic"), ("BridgeNumChannels", "1")]
    privilege = ("Privilege", "call,all")
    return [
        frame(
            [("Event", "DeviceStateChange"), privilege, ("Device", "SIP/105"), ("State", "RINGING")]
        ),
        frame([("Event", "DialBegin"), privilege, *snap, ("DialString", "105")]),
        frame(
            [("Event", "DeviceStateChange"), privilege, ("Device", "SIP/105"), ("State", "INUSE")]
        ),
        frame([("Event", "BridgeEnter"), privilege, *bridge, *snap]),
        frame([("Event", "BridgeLeave"), privilege, *bridge, *snap]),
        frame([("Event", "Hangup"), privilege, *snap, ("Cause", "16"), ("Cause-txt", "Normal")]),
        frame(
            [
                ("Event", "DeviceStateChange"),
                privilege,
                ("Device", "SIP/105"),
                ("State", "NOT_INUSE"),
            ]
        ),
        frame(
            [
                ("Event", "ExtensionStatus"),
                privilege,
                ("Exten", "105"),
                ("Context", "ext-local"),
                ("Hint", "SIP/105"),
                ("Status", "0"),
                ("StatusText", "Idle"),
            ]
        ),
        frame([("Event", "UserEvent"), ("Privilege", "user,all"), *snap, ("UserEvent", "Other")]),
        frame(
            [
                ("Event", "DeviceStateChange"),
                privilege,
                ("Device", "SIP/106"),
                ("State", "NOT_INUSE"),
            ]
        ),
    ]


async def main(seconds: float, rate: float, background: float) -> dict[str, object]:
    pbx = await start_pbx("101")
    server = pbx.ami
    answers = Answers(pbx)
    with tempdir() as tmp:
        store = SqliteStore(Path(tmp) / "icm.db")
        await store.open()
        await store.learn(LEARNED, "101", time.time())
        await store.close()
        http_port = free_port()
        config = write_config(Path(tmp), pbx.port, http_port=http_port)
        daemon = start_daemon(config, Path(tmp) / "daemon.log")
        try:
            await server.wait_login(1, timeout=20)
            await asyncio.sleep(1.0)  # presence resync
            seq = itertools.count(1)
            events = 0
            requests = 0
            loop = asyncio.get_running_loop()
            start = loop.time()
            tick = 0.005
            next_tick = start
            while loop.time() - start < seconds:
                elapsed = loop.time() - start
                due_events = int(elapsed * background) - events
                while due_events > 0:
                    for data in background_events(seq):
                        server.send_raw(data)
                    events += 10
                    due_events -= 10
                due_requests = int(elapsed * rate) - requests
                for _ in range(due_requests):
                    requests += 1
                    token = f"{requests:012d}"
                    answers.send(token, pbx.route_request("89161234567", token))
                next_tick += tick
                await asyncio.sleep(max(0.0, next_tick - loop.time()))
            duration = loop.time() - start
            await asyncio.sleep(2)  # late answers
            memory = rss_mb(daemon.pid)
            metrics = await scrape(http_port)
        finally:
            daemon.terminate()
            daemon.wait(10)
            await pbx.stop()
    return {
        **summary(answers.latencies),
        "requests": requests,
        "answered": len(answers.latencies),
        "rate_rps": round(requests / duration, 1),
        "events_per_s": round(events / duration),
        "seconds": round(duration, 1),
        "daemon_events_handled": int(metrics.get("icm_ami_events_total", 0)),
        "daemon_handler_errors": int(metrics.get("icm_event_handler_errors_total", 0)),
        "daemon_rss_mb": round(memory, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--background", type=float, default=5000)
    args = parser.parse_args()
    report(asyncio.run(main(args.seconds, args.rate, args.background)))
