"""The simulated Asterisk on PJSIP, with the daemon on its shipped (PJSIP) dial templates,
and the device behaviour the real PBX showed (tests/realpbx/test_facts.py): call waiting,
DeviceStateChange only on a change, ExtensionStatus for the hints that name a device."""

import time

import pytest

from icm.config import DialSettings
from simpbx.pbx import FakeAsterisk, Phone

from .conftest import until

CLIENT = "+79161234567"


@pytest.fixture
async def pjsip():
    fake = FakeAsterisk(auth_delay=0.05, tech="PJSIP")
    await fake.start()
    fake.register("101", "102", "103")
    fake.register("104", phone=Phone(answer_after=None))
    yield fake
    await fake.stop()


@pytest.fixture
async def icm(pjsip, make_config, start_daemon):
    shipped = DialSettings().model_dump()  # PJSIP/{ext}, PJSIP/{number}@trunk
    return await start_daemon(make_config(pjsip.port, routing={"dial_timeout_s": 1}, dial=shipped))


async def test_shipped_defaults_route_on_pjsip(pjsip, icm):
    assert icm.snapshot.config.dial.extension == "PJSIP/{ext}"
    await icm.store.learn(CLIENT, "101", time.time())
    placed = await pjsip.call("8 916 123-45-67")
    assert placed.warnings == []
    assert placed.status == "ANSWERED" and placed.dials == [("PJSIP/101", "ANSWER")]
    assert placed.channel.startswith("PJSIP/trunk-")

    await icm.store.learn(CLIENT, "104", time.time() + 1)  # never answers
    placed = await pjsip.call("8 916 123-45-67")
    assert (placed.status, placed.dials) == ("NOANSWER", [("PJSIP/104", "NOANSWER")])

    pjsip.set_device("PJSIP/102", "UNAVAILABLE")
    await icm.store.learn(CLIENT, "102", time.time() + 2)
    await until(lambda: icm.presence.state("102").value == "offline")
    placed = await pjsip.call("8 916 123-45-67")
    assert placed.status == "OFFLINE" and placed.dials == []


async def test_pjsip_external_numbers_go_through_the_trunk_endpoint(pjsip):
    pjsip.phones["79160000003"] = Phone()
    caller = pjsip._channel("PJSIP/trunk", "74950000000")
    assert await pjsip.dial(caller, "PJSIP/79160000003@trunk", 1) == "ANSWER"
    assert await pjsip.dial(caller, "SIP/101", 1) == "CHANUNAVAIL"  # no chan_sip here


async def test_a_phone_in_use_rings_again_call_waiting(pjsip):
    device = "PJSIP/103"
    pjsip.set_device(device, "INUSE")  # on a call the simulator does not model
    caller = pjsip._channel("PJSIP/trunk", "74950000000")
    states: list[str] = []
    original = pjsip.emit

    def spy(event, headers, privilege="call"):
        if event == "DeviceStateChange":
            states.append(dict(headers)["State"])
        original(event, headers, privilege)

    pjsip.emit = spy
    pjsip.phones[device] = Phone(answer_after=None)
    assert await pjsip.dial(caller, device, 0.05) == "NOANSWER"  # rang, not BUSY
    assert states == ["RINGINUSE", "INUSE"]
    pjsip.set_device(device, "BUSY")  # DND: the phone refuses with 486
    assert await pjsip.dial(caller, device, 0.05) == "BUSY"


async def test_device_changes_are_announced_once_with_their_hints(pjsip):
    events: list[tuple[str, dict[str, str]]] = []
    original = pjsip.emit

    def spy(event, headers, privilege="call"):
        events.append((event, dict(headers)))
        original(event, headers, privilege)

    pjsip.set_hint("106", 0, hint="PJSIP/106&Custom:DND106")
    pjsip.emit = spy
    pjsip.set_device("PJSIP/106", "NOT_INUSE")
    pjsip.set_device("Custom:DND106", "NOT_INUSE")  # the hint stays idle: no ExtensionStatus
    for state in ("BUSY", "BUSY", "NOT_INUSE", "NOT_INUSE"):
        pjsip.set_device("Custom:DND106", state)
    changes = [h["State"] for e, h in events if e == "DeviceStateChange" and "DND" in h["Device"]]
    hints = [(h["Status"], h["Hint"]) for e, h in events if e == "ExtensionStatus"]
    assert changes == ["NOT_INUSE", "BUSY", "NOT_INUSE"]
    assert hints == [("2", "PJSIP/106&Custom:DND106"), ("0", "PJSIP/106&Custom:DND106")]
