"""/route under a flood (issue 13.3): a request is answered within its budget or not at
all, requests beyond the in-flight cap get TIMEOUT at once, and the AMI entry keeps
routing calls meanwhile."""

from __future__ import annotations

import asyncio
import socket
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
    daemon = await start_daemon(make_config(pbx.port))
    daemon.snapshot.router.sources = [(SlowSource(0.2), SourceSettings(timeout_ms=400))]
    url = f"http://127.0.0.1:{daemon.http.port}/route"
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def ask(i: int) -> str:
            async with session.get(url, params={"number": f"8917{i:07d}"}) as response:
                return (await response.text()).partition("|")[0]

        flood = [asyncio.create_task(ask(i)) for i in range(FLOOD)]
        await until(lambda: daemon.http_entry.deciding == MAX_IN_FLIGHT, timeout=20)
        placed = await pbx.call("89161234567")  # the AMI entry, during the flood
        answers = await asyncio.gather(*flood)
    assert placed.dials == [("SIP/101", "ANSWER")]
    assert set(answers) <= {"DIAL", "TIMEOUT"}
    assert answers.count("DIAL") >= MAX_IN_FLIGHT
    assert answers.count("TIMEOUT") > 0
    decisions = daemon.metrics.decisions
    assert decisions.labels("TIMEOUT", "none")._value.get() == answers.count("TIMEOUT")


def request_after(port: int, wait_s: float) -> bytes:
    """Connect, say nothing for ``wait_s``, then ask: as a request stuck in a queue."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        time.sleep(wait_s)
        sock.sendall(b"GET /route?number=89161234567 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


async def test_a_request_past_its_budget_gets_no_answer(pbx, make_config, start_daemon):
    pbx.register("101")
    daemon = await start_daemon(make_config(pbx.port))  # lookup budget 500 ms
    late = await asyncio.to_thread(request_after, daemon.http.port, 0.6)
    assert late == b""  # closed: the dialplan reads no answer as TIMEOUT
    assert daemon.metrics.answers_dropped.labels("late")._value.get() == 1
    on_time = await asyncio.to_thread(request_after, daemon.http.port, 0.0)
    assert on_time.startswith(b"HTTP/1.1 200") and b"\r\n\r\nNOTFOUND|" in on_time
