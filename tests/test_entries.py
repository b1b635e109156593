"""The FastAGI and HTTP (CURL) entries, through the shipped contexts icm-agi and icm-curl:
the same variables and the same outcomes as the AMI entry."""

import asyncio
import dataclasses
import time

import aiohttp
import pytest

from simpbx.pbx import FakeAsterisk, Phone, asterisk_file
from simpbx.redis_server import free_port

from .conftest import until
from .test_calls_e2e import SlowSource, use_sources

SCENARIOS = """
[from-trunk-ami]
exten => _X.,1,Gosub(icm,6100,1)
 same => n,Queue(reception)
[from-trunk-agi]
exten => _X.,1,Gosub(icm-agi,6100,1)
 same => n,Queue(reception)
[from-trunk-curl]
exten => _X.,1,Gosub(icm-curl,6100,1)
 same => n,Queue(reception)
[from-trunk-timed]
exten => _X.,1,Set(TIMEOUT(absolute)=600)
 same => n,Set(AGIEXITONHANGUP=no)
 same => n,Gosub(icm-agi,6100,1)
 same => n,Set(LEFT=${TIMEOUT(absolute)})
 same => n,Set(EXIT=${AGIEXITONHANGUP})
 same => n,Queue(reception)
"""
CLIENT = "+79161234567"


@pytest.fixture
async def pbx():
    fake = FakeAsterisk(dialplan=[asterisk_file("extensions_icm.conf"), SCENARIOS], auth_delay=0.05)
    await fake.start()
    fake.register("101", "102", "103")
    fake.register("104", phone=Phone(answer_after=None))
    yield fake
    await fake.stop()


ENTRIES = ["ami", "agi", "curl"]


@pytest.fixture
async def icm(pbx, make_config, start_daemon):
    config = make_config(
        pbx.port,
        agi={"enabled": True, "listen": "127.0.0.1:0"},
        routing={"exceptions": ["102"], "dial_timeout_s": 1},
        sources={"icmdb": {"min_talk_s": 60}},  # these calls teach nothing
    )
    daemon = await start_daemon(config)
    await daemon.store.learn(CLIENT, "101", time.time())
    return daemon


async def call(pbx, entry, number="8 916 123-45-67", **kwargs):
    placed = await pbx.call(number, context=f"from-trunk-{entry}", **kwargs)
    assert placed.warnings == [], placed.warnings
    return placed


@pytest.mark.parametrize("entry", ENTRIES)
async def test_known_caller_reaches_his_manager(pbx, icm, entry):
    placed = await call(pbx, entry)
    assert placed.status == "ANSWERED" and placed.dials == [("SIP/101", "ANSWER")]
    assert placed.variables["ICM_SOURCE"] == "icmdb"


@pytest.mark.parametrize("entry", ENTRIES)
async def test_unknown_and_anonymous_callers_go_back(pbx, icm, entry):
    placed = await call(pbx, entry, "+7 903 555-00-00")
    assert placed.status == "NOTFOUND" and placed.reached == [("Queue", ["reception"])]
    placed = await call(pbx, entry, "anonymous")
    assert placed.status == "ANONYMOUS" and placed.dials == []


@pytest.mark.parametrize("entry", ENTRIES)
async def test_busy_manager(pbx, icm, entry):
    pbx.set_device("SIP/101", "INUSE")
    await until(lambda: icm.presence.state("101").value == "busy")
    placed = await call(pbx, entry)
    assert (placed.status, placed.variables["ICM_MANAGER"]) == ("BUSY", "101")


@pytest.mark.parametrize("entry", ENTRIES)
async def test_offline_no_answer_exception_mobile_local(pbx, icm, entry):
    pbx.set_device("SIP/101", "UNAVAILABLE")
    await until(lambda: icm.presence.state("101").value == "offline")
    assert (await call(pbx, entry)).status == "OFFLINE"
    await icm.store.learn(CLIENT, "104", time.time() + 1)  # 104 never answers
    placed = await call(pbx, entry)
    assert (placed.status, placed.variables["ICM_DIALSTATUS"]) == ("NOANSWER", "NOANSWER")
    await icm.store.learn(CLIENT, "102", time.time() + 2)  # 102 is an exception
    assert (await call(pbx, entry)).status == "NOTFOUND"
    assert (await call(pbx, entry, "+7 916 000-00-03")).status == "EXCEPTION"  # Vera's mobile
    await icm.store.learn("+74951234567", "103", time.time())
    assert (await call(pbx, entry, "1234567")).dials == [("SIP/103", "ANSWER")]


@pytest.mark.parametrize("entry", ENTRIES)
async def test_default_number_and_caller_hanging_up_while_ringing(
    pbx, make_config, start_daemon, entry
):
    daemon = await start_daemon(
        make_config(
            pbx.port,
            agi={"enabled": True, "listen": "127.0.0.1:0"},
            routing={"default_number": "104", "dial_timeout_s": 1},
            sources={"icmdb": {"min_talk_s": 60}},
        )
    )
    placed = await call(pbx, entry, "+7 903 555-00-00")
    assert placed.dials == [("SIP/104", "NOANSWER")]
    assert (placed.status, placed.reached) == ("NOTFOUND", [("Queue", ["reception"])])
    placed = await call(pbx, entry, "+7 903 555-00-01", hangup_after=0.3)
    assert placed.dials == [("SIP/104", "CANCEL")] and placed.reached == []
    assert placed.result()["ICMStatus"] == "ABANDONED"
    assert daemon.ami.logged_in


async def test_the_daemon_publishes_where_its_entries_listen(pbx, icm):
    assert pbx.globals["ICM_URL"] == f"http://127.0.0.1:{icm.http.port}"
    assert pbx.globals["ICM_AGI_URL"] == f"agi://127.0.0.1:{icm.agi.port}/route"


async def test_agi_daemon_down_fails_at_once(pbx):
    pbx.globals["ICM_AGI_URL"] = f"agi://127.0.0.1:{free_port()}/route"  # nothing listens
    started = time.monotonic()
    placed = await call(pbx, "agi")
    assert time.monotonic() - started < 1.5  # not waiting out the 1.5 s default budget
    assert placed.variables["AGISTATUS"] == "FAILURE"
    assert placed.status == "TIMEOUT" and placed.reached == [("Queue", ["reception"])]


async def test_curl_daemon_down_is_timeout_at_once(pbx):
    """The same status as the other entries: ICM did not answer (issue 10, defect 3)."""
    pbx.globals["ICM_URL"] = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    placed = await call(pbx, "curl")
    assert time.monotonic() - started < 1.5  # no waiting out the 1.5 s default wait
    assert placed.status == "TIMEOUT" and placed.reached == [("Queue", ["reception"])]


async def test_curl_daemon_hanging_is_cut_by_the_transfer_timeout(pbx):
    async def hang(reader, writer):
        await asyncio.sleep(10)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    pbx.globals["ICM_URL"] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    pbx.globals["ICM_WAIT"] = "0.3"
    started = time.monotonic()
    placed = await call(pbx, "curl")
    assert 0.3 <= time.monotonic() - started < 10  # the wait, not the server's 10 s hang
    assert placed.status == "TIMEOUT"
    server.close()


async def test_agi_caller_hangs_up_while_icm_decides(pbx, icm):
    use_sources(icm, SlowSource(None, 0.3))
    placed = await call(pbx, "agi", hangup_after=0.1)
    assert placed.result()["ICMStatus"] == "ABANDONED" and placed.reached == []
    await until(lambda: icm.metrics.answers_dropped.labels("caller_gone")._value.get() == 1)


async def test_agi_survives_junk_connections(icm):
    port = icm.agi.port
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()  # closed before the environment (panoramisk's reader spins here)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"agi_network_script: route\nagi_arg_1: not-a-token\n\n")
    assert await reader.read() == b""  # closed without a command
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"x" * 20_000)
    assert await reader.read() == b""
    await asyncio.sleep(0.05)
    assert icm.agi.in_flight == 0
    assert icm.metrics.answers_dropped.labels("malformed")._value.get() == 1


async def test_http_route_answers(icm):
    base = f"http://127.0.0.1:{icm.http.port}/route"
    async with aiohttp.ClientSession() as session:
        async with session.get(base, params={"number": "8 916 123-45-67"}) as response:
            assert response.status == 200
            assert await response.text() == "DIAL|SIP/101|101|icmdb|1"
        async with session.get(base, params={"number": "+79035550000"}) as response:
            # An explicit NOTFOUND: an empty body only ever means "ICM did not answer".
            assert (response.status, await response.text()) == (200, "NOTFOUND||||1")
        async with session.get(base, params={"number": ""}) as response:
            assert await response.text() == "ANONYMOUS||||1"  # a hidden caller ID
        async with session.get(base, params={"number": "anonymous"}) as response:
            assert await response.text() == "ANONYMOUS||||1"
        async with session.get(base) as response:
            assert response.status == 400 and await response.text() == ""
            assert "number" in response.headers["X-ICM-Error"]
        icm.http_entry.metrics = None  # anything failing: 500 and ERROR, never a page
        async with session.get(base, params={"number": CLIENT}) as response:
            assert response.status == 500 and await response.text() == "ERROR||||1"
        icm.http_entry.metrics = icm.metrics
        broken = dataclasses.replace(icm.snapshot, router=None)
        icm.http_entry.current = lambda: broken  # the router fails: 500 and ERROR, as over AMI
        async with session.get(base, params={"number": CLIENT}) as response:
            assert response.status == 500 and await response.text() == "ERROR||||1"


async def test_agi_daemon_alive_but_silent_comes_back_within_the_budget(pbx):
    """Issue 10, defect 1: a daemon that accepts and never answers (SIGSTOP, a hung loop)
    holds the call at most ICM_WAIT; the scenario's own absolute timeout and
    AGIEXITONHANGUP are given back."""

    async def silent(reader, writer):
        await asyncio.sleep(60)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    pbx.globals["ICM_AGI_URL"] = f"agi://127.0.0.1:{server.sockets[0].getsockname()[1]}/route"
    pbx.globals["ICM_WAIT"] = "0.3"
    started = time.monotonic()
    placed = await call(pbx, "timed")
    elapsed = time.monotonic() - started
    server.close()
    assert 0.3 <= elapsed < 10  # the silent daemon would hold it for 60 s
    assert placed.variables["AGISTATUS"] == "HANGUP"
    assert placed.status == "TIMEOUT" and placed.reached == [("Queue", ["reception"])]
    assert 590 < float(placed.variables["LEFT"]) <= 600
    assert placed.variables["EXIT"] == "no"
