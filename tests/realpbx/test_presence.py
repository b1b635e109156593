"""Presence from the real PBX's device and hint states, chan_sip and PJSIP, and the
channel-technology warning (issue 10, defect 5) from ``icm check-config`` and from the
daemon after its presence resync.

The hints are ``exten => 101,hint,PJSIP/101`` (``SIP/101`` on chan_sip); 106's is
``PJSIP/106&Custom:DND106``, a phone plus a do-not-disturb state.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .pbx import Asterisk, Icm, Phones, place_call, result_of, wait_until

BUSY_CALLER = "74952220104"  # bound to 104
DND_CALLER = "74952220106"  # bound to 106


@pytest.fixture(scope="module")
def icm(pbx: Asterisk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Icm]:
    daemon = Icm(pbx, tmp_path_factory.mktemp("icm-presence"))
    daemon.bind(f"+{BUSY_CALLER}", "104")
    daemon.bind(f"+{DND_CALLER}", "106")
    daemon.start()
    yield daemon
    daemon.stop()


def busy_devices(icm: Icm) -> int:
    return int(icm.readiness()["devices"].get("busy", 0))


def call_status(pbx: Asterisk, tmp_path: Path, caller: str) -> tuple[dict[str, str], list[str]]:
    mark = pbx.ami.mark()
    call = place_call(pbx, tmp_path, entry="ami", caller=caller)
    result = result_of(pbx, call, mark=mark)
    assert call.wait(30) == 0
    dialled = [e.get("destchannel", "") for e in pbx.ami.since(mark) if e.name == "DialBegin"]
    return result, dialled


def test_a_phone_in_a_call_is_busy_until_it_hangs_up(
    pbx: Asterisk, icm: Icm, phones: Phones, tmp_path: Path
) -> None:
    icm.republish()
    device = pbx.device("104")
    phones.start("104", "answer")  # answers and stays on the line
    mark = pbx.ami.mark()
    answer = pbx.ami.action(
        "Originate", Channel=device, Context="hold", Exten="s", Priority="1", Async="true"
    )
    assert answer.get("response") == "Success", answer
    pbx.ami.wait(
        lambda e: (
            e.name == "DeviceStateChange"
            and e.get("device") == device
            and e.get("state") == "INUSE"
        ),
        15,
        mark,
        f"{device} INUSE",
    )
    pbx.ami.wait(
        lambda e: (
            e.name == "ExtensionStatus" and e.get("exten") == "104" and e.get("status") == "1"
        ),
        15,
        mark,
        "hint 104 in use",
    )
    wait_until(lambda: busy_devices(icm) >= 1, 10, "ICM to see the phone busy")
    result, dialled = call_status(pbx, tmp_path, BUSY_CALLER)
    assert (result["status"], result["manager"]) == ("BUSY", "104"), result
    assert not [d for d in dialled if d.startswith(f"{device}-")], dialled  # not even rung

    mark = pbx.ami.mark()
    pbx.ami.action("Hangup", Channel=f"/^{device}-.*$/")
    pbx.ami.wait(
        lambda e: (
            e.name == "DeviceStateChange"
            and e.get("device") == device
            and e.get("state") == "NOT_INUSE"
        ),
        15,
        mark,
        f"{device} NOT_INUSE",
    )
    wait_until(lambda: busy_devices(icm) == 0, 10, "ICM to see the phone free")
    phones.start("104", "answer", talk_ms=400)
    result, dialled = call_status(pbx, tmp_path, BUSY_CALLER)
    assert (result["status"], result["manager"]) == ("ANSWERED", "104"), result
    assert [d.rpartition("-")[0] for d in dialled] == [device], dialled


def test_a_hint_state_wins_over_the_phone(
    pbx: Asterisk, icm: Icm, phones: Phones, tmp_path: Path
) -> None:
    """106's phone is free, but its hint also holds Custom:DND106: do not disturb."""
    icm.republish()
    mark = pbx.ami.mark()
    pbx.ami.action("Setvar", Variable="DEVICE_STATE(Custom:DND106)", Value="BUSY")
    try:
        pbx.ami.wait(
            lambda e: (
                e.name == "ExtensionStatus" and e.get("exten") == "106" and e.get("status") == "2"
            ),
            15,
            mark,
            "hint 106 busy",
        )
        assert pbx.device_state("106") == "NOT_INUSE"
        wait_until(
            lambda: call_status(pbx, tmp_path, DND_CALLER)[0]["status"] == "BUSY",
            10,
            "ICM to route 106's caller as BUSY",
            step=0.2,
        )
    finally:
        mark = pbx.ami.mark()
        pbx.ami.action("Setvar", Variable="DEVICE_STATE(Custom:DND106)", Value="NOT_INUSE")
    pbx.ami.wait(
        lambda e: (
            e.name == "ExtensionStatus" and e.get("exten") == "106" and e.get("status") == "0"
        ),
        15,
        mark,
        "hint 106 idle",
    )
    phones.start("106", "answer", talk_ms=300)
    wait_until(
        lambda: call_status(pbx, tmp_path, DND_CALLER)[0]["status"] == "ANSWERED",
        10,
        "106's caller answered once the hint is idle",
        step=0.2,
    )


def other_technology(pbx: Asterisk) -> str:
    """A [dial] section naming the technology this Asterisk does not have."""
    if pbx.tech == "pjsip":
        return '[dial]\nextension = "SIP/{ext}"\nexternal = "SIP/trunk/{number}"\n'
    return '[dial]\nextension = "PJSIP/{ext}"\nexternal = "PJSIP/{number}@trunk"\n'


def test_check_config_warns_about_the_wrong_technology(pbx: Asterisk, tmp_path: Path) -> None:
    right = Icm(pbx, tmp_path, "right")
    wrong = Icm(pbx, tmp_path, "wrong", dial=other_technology(pbx))
    outputs = {}
    for daemon in (right, wrong):
        done = daemon.cli("check-config")
        assert done.returncode == 0, done.stderr
        outputs[daemon.name] = done.stdout
    assert "warning" not in outputs["right"], outputs["right"]
    assert "match the dial templates" in outputs["right"]
    wrong_tech = "SIP" if pbx.tech == "pjsip" else "PJSIP"
    assert (
        f"dials channel technology {wrong_tech}, but Asterisk reports devices of"
        in (outputs["wrong"])
    )
    assert outputs["wrong"].count("warning: ") == 2, outputs["wrong"]


def test_the_daemon_warns_after_its_resync(
    pbx: Asterisk, tmp_path: Path, daemons: list[Icm]
) -> None:
    wrong = Icm(pbx, tmp_path, "wrong", dial=other_technology(pbx))
    daemons.append(wrong)
    wrong.start()
    wrong_tech = "SIP" if pbx.tech == "pjsip" else "PJSIP"
    lines = [line for line in wrong.logs().splitlines() if "WARNING" in line]
    assert any(f"dials channel technology {wrong_tech}" in line for line in lines), lines
    right = Icm(pbx, tmp_path, "right")
    daemons.append(right)
    right.start()
    assert "dials channel technology" not in right.logs()
