"""SIGKILL of the daemon in the middle of traffic, then a restart on the same SQLite file.

The daemon runs as a real process (``python -m icm run -c FILE``) against the simulated
Asterisk in this process. Traffic: a stream of finished one-minute calls for it to learn
(hundreds a second, so the learner is writing when the kill lands) and routed calls through
the shipped dialplan. What must hold: every call learned before the kill (the daemon's own
``icm_learned_total`` scraped just before it) is in the file; the file passes SQLite's
integrity check; the restarted daemon routes a caller learned before the kill to his
manager and goes on learning. Calls in flight at the kill get the documented TIMEOUT."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path

import aiohttp

from .conftest import TEST_SECRET, until
from .faultkit import Replies, finished_call, where

EXTENSIONS = ["101", "102", "103", "104", "105"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, ami_port: int, http_port: int) -> Path:
    path = tmp_path / "icm.toml"
    path.write_text(
        f"""
[ami]
port = {ami_port}
keepalive_s = 0.5
keepalive_timeout_s = 0.5
reconnect_max_s = 0.5
[routing]
area_code = "495"
lookup_budget_ms = 500
dial_timeout_s = 3
extensions = ["100-199"]
[sources.icmdb]
min_talk_s = 1.0
[store]
url = "{tmp_path / "icm.db"}"
[http]
listen = "127.0.0.1:{http_port}"
[log]
level = "info"
# The simulated Asterisk names its phones the chan_sip way.
[dial]
extension = "SIP/{{ext}}"
external = "SIP/trunk/{{number}}"
""",
        encoding="utf-8",
    )
    return path


async def start(config: Path, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "icm",
        "run",
        "-c",
        str(config),
        env={**os.environ, "ICM_AMI_SECRET": TEST_SECRET},
        stdout=log.open("ab"),
        stderr=asyncio.subprocess.STDOUT,
    )


async def learned_total(http_port: int) -> float:
    url = f"http://127.0.0.1:{http_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        for line in (await response.text()).splitlines():
            if line.startswith("icm_learned_total "):
                return float(line.split()[1])
    return 0.0


async def test_sigkill_mid_traffic_loses_nothing_written_and_corrupts_nothing(pbx, tmp_path):
    pbx.register(*EXTENSIONS)
    http_port = free_port()
    config = write_config(tmp_path, pbx.port, http_port)
    log = tmp_path / "daemon.log"
    replies = Replies(pbx)
    sent: dict[str, str] = {}  # E.164 number -> extension, for every call streamed
    daemon = await start(config, log)
    try:
        await pbx.ami.wait_login(1, timeout=20)
        await until(lambda: "ICM_WAIT" in pbx.globals, timeout=5)

        async def stream() -> None:
            n = 0
            while True:
                batch = []
                for _ in range(20):
                    n += 1
                    number = f"+7916{n:07d}"
                    extension = EXTENSIONS[n % len(EXTENSIONS)]
                    sent[number] = extension
                    batch.append(finished_call(n, number, extension, time.time() - 120))
                pbx.ami.send_raw(b"".join(batch))
                await asyncio.sleep(0.01)

        streamer = asyncio.create_task(stream())
        while await learned_total(http_port) < 500:
            await asyncio.sleep(0.05)
        callers = [number.replace("+7", "8") for number in list(sent)[:5]]  # learned

        async def route() -> None:
            # One routed call every 50 ms, each to another manager.
            for i in range(10**6):
                routed.append(pbx.start_call(callers[i % len(callers)]))
                await asyncio.sleep(0.05)

        routed: list[asyncio.Task] = []
        router = asyncio.create_task(route())
        await asyncio.sleep(0.5)
        written = await learned_total(http_port)
        daemon.send_signal(signal.SIGKILL)
        await daemon.wait()
        killed = time.monotonic()
        streamed_at_kill = len(sent)
        await asyncio.sleep(0.3)
        for task in (streamer, router):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        calls = list(await asyncio.gather(*routed))

        # The file: intact, and everything the daemon counted as written is there.
        with contextlib.closing(sqlite3.connect(tmp_path / "icm.db")) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            rows = dict(db.execute("SELECT number, extension FROM learned").fetchall())
        assert written >= 500 and len(rows) >= written, (len(rows), written)
        assert all(sent[number] == extension for number, extension in rows.items())
        assert len(rows) <= streamed_at_kill

        # Restart on the same file: what was learned before the kill routes calls...
        daemon = await start(config, log)
        await pbx.ami.wait_login(2, timeout=20)
        await until(lambda: pbx.globals.get("ICM_WAIT") == "0.50", timeout=5)
        await asyncio.sleep(0.2)  # presence resynchronised
        after = await pbx.call(callers[0])
        # ...and learning goes on.
        pbx.ami.send_raw(finished_call(10**7, "+79035550000", "101", time.time() - 120))
        async with asyncio.timeout(5):
            while await learned_total(http_port) < 1:
                await asyncio.sleep(0.05)
    finally:
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(daemon.wait(), 10)
            except TimeoutError:
                daemon.kill()
                await daemon.wait()
    # Where the routed calls went: each answered by its own manager (reply within the
    # budget) until the kill; from the kill on, no answer, and the dialplan's TIMEOUT sent
    # them back to the scenario.
    table = where(calls, replies)
    for call, (caller, status, source, dials, _) in zip(calls, table, strict=True):
        manager = sent[caller.replace("8", "+7", 1)]
        delay = replies.delay(call)
        if status == "ANSWERED":
            assert (source, dials) == ("icmdb", f"SIP/{manager}:ANSWER"), table
            assert delay is not None and delay <= 0.5 + 0.05, table
        else:
            assert (status, source, dials, delay) == ("TIMEOUT", "", "-", None), table
            assert call.reached == [("Queue", ["reception"])]
    statuses = [row[1] for row in table]
    assert "ANSWERED" in statuses and "TIMEOUT" in statuses, table
    assert all(c.started < killed for c, s in zip(calls, statuses, strict=True) if s == "ANSWERED")
    # After the restart the caller learned before the kill reaches his manager.
    assert where([after], replies)[0][:4] == (
        callers[0],
        "ANSWERED",
        "icmdb",
        f"SIP/{sent[callers[0].replace('8', '+7', 1)]}:ANSWER",
    ), log.read_text()
    assert "Traceback" not in log.read_text()
