"""Fault injection on the AMI link, in the middle of decisions: the link dropped, the link
dropped for longer than the budget, and an AMI server that keeps the TCP connection but
stops answering (half-open). Real TCP AMI, the simulated Asterisk running the shipped
dialplan; each test states where every call went and when its answer arrived.

The lookup budget is 500 ms (the dialplan waits ICM_WAIT = 0.80 s); the keepalive sends a
Ping every 0.5 s and gives up on it after 0.5 s, so a dead link is found within 1.0 s."""

from __future__ import annotations

import asyncio
import time

import pytest

from .conftest import until
from .faultkit import Replies, where

BUDGET_S = 0.5
KEEPALIVE_DEADLINE_S = 0.5 + 0.5  # keepalive_s + keepalive_timeout_s (make_config)
TRANSIT_S = 0.05  # UserEvent in + Setvar out on loopback, with a loaded CI machine's slack
CLIENTS = {"89161110101": "101", "89161110102": "102", "89161110103": "103"}


class DelayedIcmDb:
    """The daemon's own icmdb source, answering ``delay`` seconds later: a decision long
    enough to break the link in its middle."""

    name = "icmdb"

    def __init__(self, icmdb, delay: float) -> None:
        self.icmdb, self.delay = icmdb, delay

    async def lookup(self, number):
        await asyncio.sleep(self.delay)
        return await self.icmdb.lookup(number)


@pytest.fixture
async def icm(pbx, make_config, start_daemon):
    pbx.register("101", "102", "103")
    daemon = await start_daemon(make_config(pbx.port))
    for number, extension in CLIENTS.items():
        await daemon.store.learn(daemon.snapshot.numbers.parse(number), extension, time.time())
    source, settings = daemon.snapshot.sources[0]
    daemon.snapshot.router.sources = [(DelayedIcmDb(source, 0.15), settings)]
    return daemon


def no_late_answer(calls, replies: Replies) -> None:
    for call in calls:
        for reply in replies.of(call):
            assert reply.at - call.started <= BUDGET_S + TRANSIT_S, (call.caller, reply)


async def test_link_dropped_mid_decision_answers_go_through_the_new_link(pbx, icm):
    replies = Replies(pbx)
    tasks = [pbx.start_call(number) for number in CLIENTS]
    await until(lambda: icm.entry.in_flight == 3)
    pbx.ami.drop()  # every decision is half way through its source
    calls = list(await asyncio.gather(*tasks))
    # Where they went: each to his own manager, answered through the new link.
    assert [row[:4] for row in where(calls, replies)] == [
        ("89161110101", "ANSWERED", "icmdb", "SIP/101:ANSWER"),
        ("89161110102", "ANSWERED", "icmdb", "SIP/102:ANSWER"),
        ("89161110103", "ANSWERED", "icmdb", "SIP/103:ANSWER"),
    ], where(calls, replies)
    no_late_answer(calls, replies)
    assert pbx.ami.logins == 2 and icm.metrics.ami_reconnects._value.get() == 1


async def test_link_down_longer_than_the_budget_no_answer_is_ever_sent(pbx, icm):
    replies = Replies(pbx)
    pbx.ami.refuse_logins = True  # Asterisk restarting: the link stays down for a while
    tasks = [pbx.start_call(number) for number in CLIENTS]
    await until(lambda: icm.entry.in_flight == 3)
    pbx.ami.drop()
    calls = list(await asyncio.gather(*tasks))
    # Where they went: nowhere from ICM; the dialplan stopped waiting at ICM_WAIT and
    # sent each back to its scenario with the documented TIMEOUT.
    assert [row[:4] for row in where(calls, replies)] == [
        ("89161110101", "TIMEOUT", "", "-"),
        ("89161110102", "TIMEOUT", "", "-"),
        ("89161110103", "TIMEOUT", "", "-"),
    ], where(calls, replies)
    assert all(c.reached == [("Queue", ["reception"])] for c in calls)
    assert all(c.ended - c.started < 0.8 + 0.3 for c in calls)  # ICM_WAIT, not more
    pbx.ami.refuse_logins = False
    await until(lambda: icm.ami.logged_in, timeout=5)
    await asyncio.sleep(0.3)
    assert replies.all == []  # the stale decisions were dropped, never sent late
    assert icm.metrics.answers_dropped.labels("ami_down")._value.get() == 3


async def test_half_open_server_is_detected_within_the_keepalive_deadline(pbx, icm):
    replies = Replies(pbx)
    first = pbx.start_call("89161110101")
    await until(lambda: icm.entry.in_flight == 1)
    frozen_at = time.monotonic()
    pbx.ami.freeze()  # TCP stays up; nothing is read or answered any more
    pbx.set_device("SIP/102", "UNAVAILABLE")  # ...and this event is lost with it
    during = pbx.start_call("89161110103")  # its UserEvent never reaches ICM
    await until(lambda: icm.metrics.ami_reconnects._value.get() == 1, timeout=3)
    detected_s = time.monotonic() - frozen_at
    assert detected_s <= KEEPALIVE_DEADLINE_S + 0.2, detected_s
    await until(lambda: pbx.ami.logins == 2 and icm.resyncs == 2, timeout=5)
    assert icm.presence.state("102").value == "offline"  # resynchronised from the list
    calls = [await first, await during]
    calls.append(await pbx.call("89161110102"))  # after the reconnect
    calls.append(await pbx.call("89161110101"))
    # Where they went:
    assert [row[:4] for row in where(calls, replies)] == [
        # in the middle of its decision at the freeze: its answer went into the dead
        # link, the dialplan timed out and sent it back to its scenario;
        ("89161110101", "TIMEOUT", "", "-"),
        # placed while frozen: ICM never heard of it; TIMEOUT, back to the scenario;
        ("89161110103", "TIMEOUT", "", "-"),
        # after the reconnect: 102's phone went offline during the freeze, and ICM knows;
        ("89161110102", "OFFLINE", "icmdb", "-"),
        # and 101 answers again.
        ("89161110101", "ANSWERED", "icmdb", "SIP/101:ANSWER"),
    ], where(calls, replies)
    assert replies.of(calls[0]) == [] and replies.of(calls[1]) == []
    no_late_answer(calls, replies)
    assert icm.metrics.answers_dropped.labels("ami_down")._value.get() == 1


async def test_a_server_that_accepts_but_never_greets(make_config, start_daemon, caplog):
    """Half-open from the first byte: the TCP connection is accepted, nothing ever comes.
    The daemon gives up on each attempt after connect_timeout_s and keeps retrying; it is
    not ready meanwhile (no call can be routed: the dialplan's TIMEOUT applies)."""
    held = []

    async def silent(reader, writer):
        held.append(writer)  # accept, say nothing, never close

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        config = make_config(port, ami={"connect_timeout_s": 0.3, "reconnect_max_s": 0.2})
        daemon = await start_daemon(config, wait_login=False)
        await until(lambda: len(held) >= 3, timeout=3)
        assert not daemon.ami.logged_in and not daemon.readiness()["ready"]
        assert "did not greet within the connect timeout" in caplog.text
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
