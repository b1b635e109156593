"""Fault injection on a source: an HTTP source (tests/httpsource.py) pointed at a server
that hangs, answers 500, 429, garbage, a 50 MB body, or closes the connection, with the
ICM database as the next source. Each call goes through the simulated Asterisk and the
shipped dialplan over real AMI.

Where the calls went, case by case: the client +79161234567 is learned as manager 101's
in the ICM database; the failing CRM is skipped (its step says why) and the call reaches
101 from icmdb, its answer arriving within the 500 ms lookup budget. The control case
(/ok) shows the CRM answering (manager 102). The last test documents the one TIMEOUT: a
CRM whose own timeout is the whole budget leaves no time for icmdb."""

from __future__ import annotations

import logging
import time

import pytest

from .conftest import until
from .faultkit import Replies, where
from .httpsource import TOKEN_ENV, HostileCrm, HttpTestSettings, HttpTestSource

CLIENT = "+79161234567"
BUDGET_S = 0.5  # make_config's routing.lookup_budget_ms
TOKEN = "crm-token-9d2f7a"


@pytest.fixture
async def crm_server():
    server = HostileCrm()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def icm(pbx, make_config, start_daemon, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    pbx.register("101", "102")
    daemon = await start_daemon(make_config(pbx.port))
    await daemon.store.learn(CLIENT, "101", time.time())
    return daemon


@pytest.fixture
async def with_crm(icm):
    """Put an HTTP source pointed at ``url`` before icmdb in the daemon's chain."""
    made = []

    async def use(url: str, timeout_ms: int = 250, max_body_bytes: int = 64 * 1024):
        settings = HttpTestSettings(url=url, timeout_ms=timeout_ms, max_body_bytes=max_body_bytes)
        crm = HttpTestSource(settings, icm.snapshot.context)
        await crm.start()
        made.append(crm)
        icmdb = icm.snapshot.sources[0]
        icm.snapshot.router.sources = [(crm, settings), icmdb]
        return crm

    yield use
    for crm in made:
        await crm.close()


def decision_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "icm.decision"]


@pytest.mark.parametrize(
    ("path", "crm_step"),
    [
        ("/hang", "crm:timeout"),
        ("/trickle", "crm:timeout"),
        ("/500", "crm:error"),
        ("/429", "crm:error"),
        ("/garbage", "crm:error"),
        ("/huge", "crm:error"),
        ("/huge-declared", "crm:error"),
        ("/close", "crm:error"),
        ("/unknown", "crm:no-answer"),
    ],
)
async def test_a_failing_source_leaves_the_call_to_the_next(
    pbx, icm, with_crm, crm_server, caplog, path, crm_step
):
    caplog.set_level(logging.INFO, logger="icm.decision")
    replies = Replies(pbx)
    crm = await with_crm(crm_server.url(path))
    placed = await pbx.call("8 916 123-45-67")
    # Where it went: to manager 101, named by icmdb, answered; within the budget.
    assert where([placed], replies)[0][:4] == (
        "8 916 123-45-67",
        "ANSWERED",
        "icmdb",
        "SIP/101:ANSWER",
    ), where([placed], replies)
    delay = replies.delay(placed)
    assert delay is not None and delay <= BUDGET_S, delay
    await until(lambda: decision_lines(caplog) != [])
    [line] = decision_lines(caplog)
    assert f"steps={crm_step}:" in line and " icmdb:answered:" in line, line
    # The source really asked, with its token (aiohttp retries a GET once on /close).
    assert set(crm_server.authorizations) == {f"Bearer {TOKEN}"}
    assert crm.bytes_read <= 64 * 1024 + 1  # never more than the cap
    if path == "/huge":
        await until(lambda: crm_server.huge_sent > 0)
        assert crm_server.huge_sent < HostileCrm.HUGE  # it stopped reading: no 50 MB
    assert TOKEN not in caplog.text


async def test_the_control_case_the_crm_answers(pbx, icm, with_crm, crm_server):
    replies = Replies(pbx)
    await with_crm(crm_server.url("/ok"))
    placed = await pbx.call("8 916 123-45-67")
    assert where([placed], replies)[0][:4] == (
        "8 916 123-45-67",
        "ANSWERED",
        "crm",
        "SIP/102:ANSWER",
    )


async def test_the_error_says_why_without_the_token(icm, with_crm, crm_server):
    reasons = {}
    for path in ("/500", "/429", "/garbage", "/huge", "/huge-declared", "/close"):
        crm = await with_crm(crm_server.url(path))
        try:
            await crm.lookup(CLIENT)
        except Exception as exc:
            reasons[path] = str(exc)
    host = f"127.0.0.1:{crm_server.port}"
    assert reasons == {
        "/500": f"crm ({host}): HTTP 500",
        "/429": f"crm ({host}): rate limited (HTTP 429, retry after 30 s)",
        "/garbage": f"crm ({host}): the answer is not JSON",
        "/huge": f"crm ({host}): answer larger than 65536 bytes, not read further",
        "/huge-declared": f"crm ({host}): answer of 52428800 bytes refused (limit 65536)",
        "/close": f"crm ({host}): connection failed (ServerDisconnectedError)",
    }


async def test_a_source_allowed_the_whole_budget_leaves_nothing_for_the_next(
    pbx, icm, with_crm, crm_server, caplog
):
    """The documented TIMEOUT: the CRM's own timeout (5 s) is longer than the lookup
    budget, so the budget cuts it and icmdb is never asked. The answer (TIMEOUT) still
    arrives within the budget and the call goes on in its scenario (queue reception).
    Keep each source's timeout_ms well under routing.lookup_budget_ms."""
    caplog.set_level(logging.INFO, logger="icm.decision")
    replies = Replies(pbx)
    await with_crm(crm_server.url("/hang"), timeout_ms=5000)
    placed = await pbx.call("8 916 123-45-67")
    assert where([placed], replies)[0][:4] == ("8 916 123-45-67", "TIMEOUT", "", "-")
    assert placed.reached == [("Queue", ["reception"])]
    delay = replies.delay(placed)
    assert delay is not None and delay <= BUDGET_S, delay
    await until(lambda: decision_lines(caplog) != [])  # logged once the answer is away
    [line] = decision_lines(caplog)
    assert "steps=crm:cut:" in line and "icmdb:cut:" in line, line
