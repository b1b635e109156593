"""Calls end to end: the simulated Asterisk runs the shipped dialplan unchanged and talks
to a real daemon over TCP AMI. Each test states where each call went."""

import asyncio
import time

import aiohttp
import pytest

from icm.model import Answer
from icm.sources import SourceSettings
from simpbx.pbx import Phone

from .conftest import until

CLIENT = "+79161234567"


async def call(pbx, number="8 916 123-45-67", **kwargs):
    placed = await pbx.call(number, **kwargs)
    assert placed.warnings == [], placed.warnings  # the shipped dialplan runs cleanly
    return placed


@pytest.fixture
async def icm(pbx, make_config, start_daemon):
    """A daemon on the simulated PBX: managers 100-104 registered and idle; 100 is an
    exception (the director)."""
    pbx.register("100", "101", "102", "103")
    pbx.register("104", phone=Phone(answer_after=None))
    return await start_daemon(make_config(pbx.port, routing={"exceptions": ["100"]}))


class SlowSource:
    name = "slow"

    def __init__(self, answer, delay):
        self.answer, self.delay = answer, delay

    async def lookup(self, number):
        await asyncio.sleep(self.delay)
        return self.answer


def use_sources(daemon, *sources):
    daemon.snapshot.router.sources = [(s, SourceSettings(timeout_ms=5000)) for s in sources]


def setvars(pbx):
    return [
        h
        for _, h in pbx.ami.actions
        if h.get("action", "").lower() == "setvar" and h.get("channel")
    ]


async def test_known_caller_reaches_his_manager(pbx, icm):
    await icm.store.learn(CLIENT, "101", time.time())
    placed = await call(pbx)
    assert placed.status == "ANSWERED"
    assert placed.dials == [("SIP/101", "ANSWER")]
    assert placed.variables["ICM_MANAGER"] == "101"
    assert placed.variables["ICM_SOURCE"] == "icmdb"
    assert placed.reached == []  # the conversation ended the call: no queue
    assert placed.result()["ICMStatus"] == "ANSWERED"


async def test_every_form_of_the_number_is_the_same_client(pbx, icm):
    await icm.store.learn("+74951234567", "101", time.time())
    for form in ("8 495 123-45-67", "+7 (495) 123 45 67", "74951234567", "1234567"):
        assert (await call(pbx, form)).dials == [("SIP/101", "ANSWER")], form


async def test_unknown_caller_goes_back_to_the_scenario(pbx, icm):
    placed = await call(pbx, "+7 903 555-00-00")
    assert placed.status == "NOTFOUND" and placed.dials == []
    assert placed.reached == [("Queue", ["reception"])]


@pytest.mark.parametrize("caller", ["anonymous", "", "<unknown>", "Restricted", "abc12", "123"])
async def test_anonymous_and_junk_caller_ids_skip_the_lookup(pbx, icm, caller):
    placed = await call(pbx, caller)
    assert placed.status == "ANONYMOUS" and placed.dials == []
    assert placed.reached == [("Queue", ["reception"])]


async def test_exception_manager_is_never_dialled(pbx, icm):
    await icm.store.learn(CLIENT, "100", time.time())  # e.g. learned before 100 became an exception
    placed = await call(pbx)
    assert placed.status == "NOTFOUND" and placed.dials == []


async def test_managers_own_mobile_is_not_routed(pbx, icm):
    await icm.store.learn("+79160000003", "101", time.time())
    placed = await call(pbx, "+79160000003")
    assert placed.status == "EXCEPTION" and placed.dials == []


@pytest.mark.parametrize(
    ("state", "status"),
    [("UNAVAILABLE", "OFFLINE"), ("INUSE", "BUSY"), ("RINGING", "BUSY"), ("ONHOLD", "BUSY")],
)
async def test_offline_or_busy_manager_without_mobiles_goes_back(pbx, icm, state, status):
    await icm.store.learn(CLIENT, "103", time.time())
    pbx.set_device("SIP/103", state)
    await until(lambda: icm.presence.state("103").name != "AVAILABLE")
    placed = await call(pbx)
    assert placed.status == status and placed.dials == []
    assert placed.variables["ICM_MANAGER"] == "103"
    assert placed.reached == [("Queue", ["sales"])]


async def test_hint_state_wins_over_device_state(pbx, icm):
    await icm.store.learn(CLIENT, "101", time.time())
    pbx.set_hint("101", 4)  # the hint says unavailable (e.g. DND on a custom device)
    await until(lambda: icm.presence.state("101").value == "offline")
    assert (await call(pbx)).status == "OFFLINE"


async def test_ring_mobiles(pbx, make_config, start_daemon):
    pbx.register("103")
    pbx.phones["79160000003"] = Phone(answer_after=0.02)  # Vera's mobile answers
    daemon = await start_daemon(make_config(pbx.port, routing={"ring_mobiles": True}))
    await daemon.store.learn(CLIENT, "103", time.time())
    placed = await call(pbx)
    assert placed.dials == [("SIP/103&SIP/trunk/79160000003", "ANSWER")]
    pbx.set_device("SIP/103", "UNAVAILABLE")  # offline: only the mobile rings
    await until(lambda: daemon.presence.state("103").value == "offline")
    placed = await call(pbx)
    assert placed.dials == [("SIP/trunk/79160000003", "ANSWER")]
    assert placed.status == "ANSWERED"
    pbx.set_device("SIP/103", "INUSE")  # busy: nobody rings, back to the scenario
    await until(lambda: daemon.presence.state("103").value == "busy")
    assert (await call(pbx)).status == "BUSY"


async def test_no_answer_and_dial_failure(pbx, icm):
    await icm.store.learn(CLIENT, "104", time.time())  # 104 never answers
    placed = await call(pbx)
    assert (placed.status, placed.variables["ICM_DIALSTATUS"]) == ("NOANSWER", "NOANSWER")
    assert placed.reached == [("Queue", ["sales"])]
    # Registered a moment ago, gone when dialled: Dial says CHANUNAVAIL.
    await icm.store.learn(CLIENT, "102", time.time() + 1)
    pbx.devices["SIP/102"] = "UNAVAILABLE"  # no event: ICM still thinks it is idle
    placed = await call(pbx)
    assert (placed.status, placed.variables["ICM_DIALSTATUS"]) == ("OFFLINE", "CHANUNAVAIL")


async def test_default_number(pbx, make_config, start_daemon):
    pbx.register("101")
    pbx.register("104", phone=Phone(answer_after=None))
    daemon = await start_daemon(make_config(pbx.port, routing={"default_number": "101"}))
    placed = await call(pbx, "+7 903 555-00-00")
    assert placed.dials == [("SIP/101", "ANSWER")] and placed.status == "ANSWERED"
    await until(lambda: daemon.metrics.learned._value.get() == 1)
    await daemon.stop()
    # The answered call was learned: that caller is now 101's client.
    daemon = await start_daemon(make_config(pbx.port, routing={"default_number": "104"}))
    assert (await call(pbx, "+7 903 555-00-00")).dials == [("SIP/101", "ANSWER")]
    placed = await call(pbx, "+7 903 555-00-01")
    assert placed.dials == [("SIP/104", "NOANSWER")]
    assert (placed.status, placed.variables["ICM_DIALSTATUS"]) == ("NOTFOUND", "NOANSWER")
    assert placed.reached == [("Queue", ["reception"])]


async def test_manager_not_connected_goes_to_the_default_number(pbx, make_config, start_daemon):
    pbx.register("101")
    daemon = await start_daemon(make_config(pbx.port, routing={"default_number": "101"}))
    use_sources(daemon, SlowSource(Answer(user="5550001", name="Olga"), 0))
    placed = await call(pbx)
    assert placed.dials == [("SIP/101", "ANSWER")]
    daemon.snapshot.router.settings = daemon.snapshot.router.settings.model_copy(
        update={"default_number": ""}
    )
    placed = await call(pbx)
    assert placed.status == "NOTCONNECTED" and placed.dials == []
    assert placed.variables["ICM_MANAGER"] == "5550001"


async def test_daemon_down_returns_timeout_after_the_wait(pbx):
    pbx.globals["ICM_WAIT"] = "0.3"
    loop = asyncio.get_running_loop()
    started = loop.time()
    placed = await call(pbx)
    assert loop.time() - started >= 0.3
    assert placed.variables["ICM_WAIT_S"] == "0.3"  # the daemon's wait, not the default
    assert placed.variables["WAITFORCONDITIONSTATUS"] == "TIMEOUT"
    assert placed.status == "TIMEOUT" and placed.reached == [("Queue", ["reception"])]


async def test_daemon_publishes_its_wait_to_the_dialplan(pbx, icm):
    assert pbx.globals["ICM_WAIT"] == "0.50"  # the 500 ms budget itself: the longest wait


async def test_slow_source_is_cut_by_the_budget_and_the_call_goes_on(pbx, icm):
    use_sources(icm, SlowSource(Answer(extension="101"), 5))
    placed = await call(pbx)
    # Answered (TIMEOUT) at the budget, before the dialplan's own wait ran out.
    assert placed.variables["WAITFORCONDITIONSTATUS"] == "TRUE"
    assert placed.variables["ICM_REPLY"].split("|")[1] == "TIMEOUT"
    assert placed.status == "TIMEOUT" and placed.dials == []


async def test_caller_hangs_up_while_icm_decides(pbx, icm):
    use_sources(icm, SlowSource(Answer(extension="101"), 0.2))
    placed = await call(pbx, hangup_after=0.05)
    assert placed.result()["ICMStatus"] == "ABANDONED" and placed.dials == []
    assert placed.reached == []
    await until(lambda: icm.metrics.answers_dropped.labels("caller_gone")._value.get() == 1)


async def test_caller_hangs_up_while_the_manager_rings(pbx, icm):
    await icm.store.learn(CLIENT, "104", time.time())
    placed = await call(pbx, hangup_after=0.2)
    assert placed.dials == [("SIP/104", "CANCEL")]
    assert placed.result() == {
        "ICMToken": placed.result()["ICMToken"],
        "ICMStatus": "ABANDONED",
        "ICMDialStatus": "CANCEL",
        "ICMDeputy": "",
    }
    assert placed.reached == []


async def test_caller_hangs_up_during_the_conversation(pbx, icm):
    pbx.phones["SIP/101"] = Phone(answer_after=0.01, talk=5)
    await icm.store.learn(CLIENT, "101", time.time())
    placed = await call(pbx, hangup_after=0.2)
    assert placed.result()["ICMStatus"] == "ANSWERED" and placed.reached == []


async def test_ami_lost_mid_decision_answer_goes_through_the_new_link(pbx, icm):
    use_sources(icm, SlowSource(Answer(extension="101"), 0.15))
    task = pbx.start_call("89161234567")
    await until(lambda: icm.entry.in_flight == 1)
    pbx.ami.drop()  # the link dies while the source is thinking
    placed = await task
    assert placed.status == "ANSWERED" and placed.dials == [("SIP/101", "ANSWER")]
    assert pbx.ami.logins == 2


async def test_late_answer_is_never_sent(pbx, icm):
    use_sources(icm, SlowSource(Answer(extension="101"), 0.1))
    pbx.ami.refuse_logins = True
    task = pbx.start_call("89161234567")
    await until(lambda: icm.entry.in_flight == 1)
    pbx.ami.drop()  # down for longer than the budget
    placed = await task
    assert placed.status == "TIMEOUT"
    pbx.ami.refuse_logins = False
    await until(lambda: icm.ami.logged_in, timeout=5)
    await asyncio.sleep(0.2)
    assert setvars(pbx) == []  # the decision was dropped, never delivered late
    assert icm.metrics.answers_dropped.labels("ami_down")._value.get() == 1


async def test_stale_answer_with_another_token_is_ignored(pbx, icm):
    await icm.store.learn(CLIENT, "101", time.time())
    original = icm.entry._deliver

    async def deliver_wrong_token(request, decision):
        from dataclasses import replace

        return await original(replace(request, token="42"), decision)

    icm.entry._deliver = deliver_wrong_token
    placed = await call(pbx)
    assert placed.status == "TIMEOUT" and placed.dials == []


async def test_malformed_input_is_survived(pbx, icm):
    await icm.store.learn(CLIENT, "101", time.time())
    pbx.ami.send_raw(
        b"garbage\r\n\r\nEvent: UserEvent\r\nUserEvent: ICMRoute\r\n\r\n"
        b"Event: UserEvent\r\nUserEvent: ICMRoute\r\nICMToken: x;drop\r\n"
        b"Channel: SIP/a-1\r\n\r\n\xff\xfe\r\n\r\n"
    )
    pbx.emit("DeviceStateChange", [("Device", "SIP/101")])  # no State header
    pbx.emit("BridgeEnter", [("Uniqueid", "1")])  # no bridge
    pbx.emit("Hangup", [])
    pbx.emit("ExtensionStatus", [("Exten", "101"), ("Status", "lots")])
    await asyncio.sleep(0.1)
    assert icm.ami.logged_in and pbx.ami.logins == 1
    assert icm.presence.state("101").value == "unknown"  # the junk device state
    pbx.set_device("SIP/101", "NOT_INUSE")
    assert (await call(pbx)).status == "ANSWERED"
    assert icm.metrics.ami_bad_frames._value.get() == 2
    assert icm.metrics.answers_dropped.labels("malformed")._value.get() == 2


async def test_presence_is_resynchronised_after_every_login(pbx, icm):
    await icm.store.learn(CLIENT, "101", time.time())
    pbx.ami.freeze()  # events sent meanwhile are lost...
    pbx.set_device("SIP/101", "UNAVAILABLE")
    await until(lambda: pbx.ami.logins == 2, timeout=5)  # ...the link is found dead
    await until(lambda: icm.resyncs == 2)
    assert icm.presence.state("101").value == "offline"  # ...and the list restores it
    assert (await call(pbx)).status == "OFFLINE"


async def test_concurrent_calls(pbx, icm):
    for i in range(20):
        await icm.store.learn(f"+7917000{i:04d}", "101", time.time())
    pbx.phones["SIP/101"] = Phone(answer_after=0.01, talk=0.01)
    calls = await asyncio.gather(*(pbx.call(f"8917000{i:04d}") for i in range(20)))
    # 101 rings for the first; later ones find him ringing or talking: busy, back.
    statuses = [c.status for c in calls]
    assert statuses.count("ANSWERED") >= 1
    assert set(statuses) <= {"ANSWERED", "BUSY"}
    assert all(c.warnings == [] for c in calls)


async def test_icm_never_moves_a_channel(pbx, icm):
    await icm.store.learn(CLIENT, "101", time.time())
    await call(pbx)
    await call(pbx, "+79035550000")
    actions = {h.get("action", "").lower() for _, h in pbx.ami.actions}
    assert actions <= {"login", "ping", "setvar", "devicestatelist", "extensionstatelist", "logoff"}


async def test_http_endpoints(pbx, icm):
    await icm.store.learn(CLIENT, "101", time.time())
    await call(pbx)
    await call(pbx, "anonymous")
    base = f"http://127.0.0.1:{icm.http.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/metrics") as response:
            text = await response.text()
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 200 and (await response.json())["ready"]
        pbx.ami.refuse_logins = True
        pbx.ami.drop()
        await until(lambda: not icm.ami.logged_in)
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 503
    assert 'icm_decisions_total{source="icmdb",status="DIAL"} 1.0' in text
    assert 'icm_decisions_total{source="none",status="ANONYMOUS"} 1.0' in text
    assert 'icm_call_outcomes_total{status="ANSWERED"} 1.0' in text
    assert "icm_ami_connected 1.0" in text
    assert "icm_lookup_seconds_bucket" in text
    assert "9161234567" not in text  # no phone number is ever a label value


class FailingSource:
    name = "crm"

    async def lookup(self, number):
        from icm.sources import SourceError

        raise SourceError("crm", "HTTP 500", "crm.example")


async def test_the_decision_log_says_why_a_source_was_skipped(pbx, icm, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="icm.decision")
    await icm.store.learn(CLIENT, "101", time.time())
    use_sources(icm, FailingSource(), icm.snapshot.sources[0][0])
    await call(pbx)
    [line] = [r.getMessage() for r in caplog.records if r.name == "icm.decision"]
    assert "steps=crm:error:" in line and "(HTTP 500) icmdb:answered:" in line


async def test_a_flood_of_requests_is_bounded(pbx, icm, monkeypatch):
    import icm.entries.ami as ami_entry

    monkeypatch.setattr(ami_entry, "MAX_IN_FLIGHT", 3)
    use_sources(icm, SlowSource(Answer(extension="101"), 0.3))
    pbx.globals["ICM_WAIT"] = "0.5"
    calls = await asyncio.gather(*(pbx.call(f"8916123450{i}") for i in range(5)))
    statuses = [c.status for c in calls]
    # Three decided (one reaches 101, the others find him ringing); two over the limit get
    # their dialplan's own TIMEOUT.
    assert statuses.count("TIMEOUT") == 2 and "ANSWERED" in statuses, statuses
    assert icm.metrics.answers_dropped.labels("overloaded")._value.get() == 2
