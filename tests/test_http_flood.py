"""/route under a flood (issue 13.3): a request is answered within its budget or not at
all, requests beyond the in-flight cap get TIMEOUT at once, and the AMI entry keeps
routing calls meanwhile."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import aiohttp

from icm.entries.curl import MAX_IN_FLIGHT
from icm.model import Answer
from icm.sources import SourceSettings

from .conftest import until

FLOOD = 400


class SlowSource:
    name = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def lookup(self, number: str) -> Answer:
        await asyncio.sleep(self.delay)
        return Answer(extension="101")


async def test_a_flood_gets_timeout_at_once_and_ami_calls_go_on(pbx, make_config, start_daemon):
    pbx.register("101")
    # The flood's client shares this process's loop: a roomy budget for the AMI call.
    daemon = await start_daemon(make_config(pbx.port, routing={"lookup_budget_ms": 2000}))
    daemon.snapshot.router.sources = [(SlowSource(0.2), SourceSettings(timeout_ms=400))]
    url = f"http://127.0.0.1:{daemon.http.port}/route"
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def ask(i: int) -> str:
            try:
                async with session.get(url, params={"number": f"8917{i:07d}"}) as response:
                    return (await response.text()).partition("|")[0]
            except aiohttp.ClientError:  # shed unread: the dialplan reads TIMEOUT
                return "closed"

        flood = [asyncio.create_task(ask(i)) for i in range(FLOOD)]
        await until(lambda: daemon.http_entry.deciding == MAX_IN_FLIGHT, timeout=20)
        placed = await pbx.call("89161234567")  # the AMI entry, during the flood
        answers = await asyncio.gather(*flood)
    assert placed.dials == [("SIP/101", "ANSWER")]
    assert set(answers) <= {"DIAL", "BUSY", "TIMEOUT", "closed"}  # BUSY: on the AMI call
    assert answers.count("DIAL") + answers.count("BUSY") >= MAX_IN_FLIGHT
    assert answers.count("TIMEOUT") + answers.count("closed") > 0
    assert daemon.connections.shed >= answers.count("closed")  # aiohttp retries some
    decisions = daemon.metrics.decisions
    assert decisions.labels("TIMEOUT", "none")._value.get() == answers.count("TIMEOUT")


def ask(port: int, sent: threading.Event) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /route?number=89161234567 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sent.set()
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


async def test_a_request_past_its_budget_gets_no_answer(pbx, make_config, start_daemon):
    pbx.register("101")
    daemon = await start_daemon(make_config(pbx.port))  # lookup budget 500 ms
    # The request reaches the kernel while the daemon's loop is busy for 0.6 s (here:
    # blocked on purpose): by the time it is read, its budget is spent.
    sent = threading.Event()
    late = asyncio.create_task(asyncio.to_thread(ask, daemon.http.port, sent))
    await asyncio.sleep(0)  # the thread starts
    # From here the loop is blocked (on purpose: the busy loop this test is about), so
    # it accepts and reads the request only after the kernel has held it for 0.6 s.
    assert sent.wait(10)
    time.sleep(0.6)  # noqa: ASYNC251
    assert await late == b""  # closed: the dialplan reads no answer as TIMEOUT
    assert daemon.metrics.answers_dropped.labels("late")._value.get() == 1
    on_time = await asyncio.to_thread(ask, daemon.http.port, threading.Event())
    assert on_time.startswith(b"HTTP/1.1 200") and b"\r\n\r\nNOTFOUND|" in on_time
