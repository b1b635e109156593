"""Facts the simulated Asterisk (simpbx/) once got differently, checked on the real one
(chan_sip and PJSIP); simpbx now models each (tests/test_simpbx_*.py,
tests/test_dialplan_interpreter.py). The real PBX wins:

* a ``Dial()`` timeout with a fraction is a float (2.5 is 2.5 s, 0.5 is half a second);
* a phone that is in use (or ringing) rings when dialled again (call waiting): no BUSY
  without a ring;
* the advanced ``eventfilter(...)=`` form filters; filters are POSIX regular expressions
  (``\\d`` is not a digit, ``[[:digit:]]`` is);
* a device change emits ``ExtensionStatus`` for the hints that name it, and
  ``DeviceStateChange`` only when the state really changes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .pbx import Ami, Asterisk, Phones, place_call, wait_until


def dial_took(pbx: Asterisk, tmp_path: Path, device: str, timeout: str) -> tuple[str, float]:
    """The scenario dials ``device`` with ``timeout``: its DialStatus, and DialBegin to
    DialEnd on Asterisk's clock."""
    mark = pbx.ami.mark()
    call = place_call(pbx, tmp_path, dialled="5000", after=device, dial_timeout=timeout)
    end = pbx.ami.wait(lambda e: e.name == "DialEnd", 30, mark, "DialEnd")
    begin = next(e for e in pbx.ami.since(mark) if e.name == "DialBegin")
    assert call.wait(30) == 0
    return end.get("dialstatus", ""), end.time - begin.time


@pytest.mark.parametrize(("timeout", "seconds"), [("0.5", 0.5), ("1.5", 1.5)])
def test_a_fractional_dial_timeout_is_a_float(
    timeout: str, seconds: float, pbx: Asterisk, phones: Phones, tmp_path: Path
) -> None:
    phones.start("102", "ring")
    status, took = dial_took(pbx, tmp_path, pbx.device("102"), timeout)
    assert status == "NOANSWER"
    assert seconds - 0.05 <= took < seconds + 0.4, took


def test_a_phone_in_use_rings_when_dialled_again(
    pbx: Asterisk, phones: Phones, tmp_path: Path
) -> None:
    device = pbx.device("104")
    phones.start("104", "answer")
    mark = pbx.ami.mark()
    pbx.ami.action(
        "Originate", Channel=device, Context="hold", Exten="s", Priority="1", Async="true"
    )
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
    try:
        # The same phone, now ringing out any new call (SIPp keeps no state across
        # restarts: the held call stays up on Asterisk's side).
        phones.start("104", "ring")
        mark = pbx.ami.mark()
        status, _ = dial_took(pbx, tmp_path, device, "1.5")
        states = [
            e.get("state")
            for e in pbx.ami.since(mark)
            if e.name == "DeviceStateChange" and e.get("device") == device
        ]
        hints = [
            e.get("status")
            for e in pbx.ami.since(mark)
            if e.name == "ExtensionStatus" and e.get("exten") == "104"
        ]
    finally:
        pbx.ami.action("Hangup", Channel=f"/^{device}-.*$/")
    assert status == "NOANSWER", "an INUSE phone must ring (call waiting), not be BUSY"
    assert "RINGINUSE" in states, states
    assert "9" in hints, hints  # in use + ringing


def observer(pbx: Asterisk, user: str) -> Ami:
    ami = Ami(pbx.ami_port, user)
    ami.connect()
    return ami


def test_event_filters(pbx: Asterisk) -> None:
    advanced = observer(pbx, "filtered-advanced")
    posix = observer(pbx, "filtered-posix")
    try:
        for kind in ("FactProbe", "Other", "Fact1", "Factd", "Class7", "Class:"):
            pbx.ami.action("UserEvent", UserEvent=kind)
        pbx.ami.action("UserEvent", UserEvent="FactEnd")
        time.sleep(1.0)
        seen_advanced = [e.get("userevent") for e in advanced.events if e.name == "UserEvent"]
        seen_posix = [e.get("userevent") for e in posix.events if e.name == "UserEvent"]
    finally:
        advanced.close()
        posix.close()
    # eventfilter(action(include),name(UserEvent),header(UserEvent),method(exact)) = FactProbe
    assert seen_advanced == ["FactProbe"], seen_advanced
    # "UserEvent: Fact\d": POSIX has no \d (it matches a "d"); "Class[[:digit:]]" is a digit.
    assert seen_posix == ["Factd", "Class7"], seen_posix


def test_device_changes_emit_extension_status_only_when_they_change(pbx: Asterisk) -> None:
    device = "Custom:DND106"
    mark = pbx.ami.mark()
    for state in ("BUSY", "BUSY", "NOT_INUSE", "NOT_INUSE"):
        pbx.ami.action("Setvar", Variable=f"DEVICE_STATE({device})", Value=state)
        time.sleep(0.3)
    wait_until(
        lambda: any(
            e.name == "ExtensionStatus" and e.get("exten") == "106" and e.get("status") == "0"
            for e in pbx.ami.since(mark)
        ),
        10,
        "hint 106 idle again",
    )
    time.sleep(0.5)
    events = pbx.ami.since(mark)
    changes = [
        e.get("state")
        for e in events
        if e.name == "DeviceStateChange" and e.get("device") == device
    ]
    hints = [
        (e.get("status"), e.get("hint"))
        for e in events
        if e.name == "ExtensionStatus" and e.get("exten") == "106"
    ]
    assert changes == ["BUSY", "NOT_INUSE"], changes
    hint = f"{pbx.device('106')}&{device}"
    assert hints == [("2", hint), ("0", hint)], hints
