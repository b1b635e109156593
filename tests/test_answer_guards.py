"""The guards that keep a call from getting a wrong answer, each with a test that fails
without it: no answer is sent after the budget (with AMI up), a presence resync forgets
what vanished while the link was down, and the dialplan takes only its own token's
answer, even when another one lands first. Real TCP AMI, the shipped dialplan."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from icm.model import Answer, Decision, Status

from .conftest import until
from .test_calls_e2e import setvars, use_sources

CLIENT = "+79161234567"


@pytest.fixture
async def icm(pbx, make_config, start_daemon):
    pbx.register("101", "102")
    daemon = await start_daemon(make_config(pbx.port))  # budget 500 ms
    await daemon.store.learn(CLIENT, "101", time.time())
    return daemon


class StallingSource:
    """A lookup that holds the whole process (a CPU hog, a blocking call) past the
    budget: the router cannot cut it, the decision comes late."""

    name = "stalling"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def lookup(self, number: str) -> Answer:
        time.sleep(self.seconds)  # noqa: ASYNC251  (the stall is the point)
        return Answer(extension="101")


async def test_a_decision_made_after_the_budget_is_never_sent_while_ami_is_up(pbx, icm):
    use_sources(icm, StallingSource(0.7))
    pbx.ami.send_raw(pbx.route_request(CLIENT, "000000000001"))
    await until(lambda: icm.metrics.answers_dropped.labels("late")._value.get() == 1)
    await until(lambda: icm.entry.in_flight == 0)
    assert icm.ami.logged_in and icm.metrics.ami_reconnects._value.get() == 0
    assert setvars(pbx) == []  # decided (DIAL 101), but after its budget: never sent


async def test_a_presence_resync_forgets_what_vanished_during_an_outage(pbx, icm):
    pbx.set_hint("101", 4)  # 101 unavailable (the hint says so)
    await until(lambda: icm.presence.state("101").value == "offline")
    assert (await pbx.call(CLIENT)).status == "OFFLINE"
    pbx.ami.refuse_logins = True
    pbx.ami.drop()
    del pbx.hints["101"]  # the hint is removed from the dialplan while ICM cannot see
    await until(lambda: not icm.ami.logged_in, timeout=5)
    pbx.ami.refuse_logins = False
    await until(lambda: icm.resyncs == 2, timeout=10)
    # Only the device's state is left, and it is idle: 101 is rung.
    assert icm.presence.state("101").value == "available"
    assert (await pbx.call(CLIENT)).dials == [("SIP/101", "ANSWER")]


async def test_another_calls_answer_landing_first_is_ignored_then_its_own_is_taken(pbx, icm):
    original = icm.entry._deliver
    foreign = Decision(Status.DIAL, dial="SIP/102", manager="102", source="icmdb")

    async def foreign_first(request, decision):
        await original(replace(request, token="42"), foreign)  # written: see setvars below
        await asyncio.sleep(0.1)  # the dialplan looks at ICM_REPLY every 20 ms meanwhile
        return await original(request, decision)

    icm.entry._deliver = foreign_first
    placed = await pbx.call(CLIENT)
    assert [h["value"].split("|")[:2] for h in setvars(pbx)] == [
        ["42", "DIAL"],
        [placed.variables["ICM_REPLY"].split("|")[0], "DIAL"],
    ]
    assert placed.dials == [("SIP/101", "ANSWER")] and placed.status == "ANSWERED"
