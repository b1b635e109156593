"""The rules' new dial paths on a real Asterisk, on chan_sip and PJSIP: the shipped
dialplan rings a deputy after the manager's dial ends BUSY or NOANSWER (the same call),
rings the deputy straight away when the manager is on leave, never connects a blocked
caller, and lets a VIP through quiet hours. The daemon runs on the real clock: the
rules are written so that "now" is inside the leave and the quiet hours whenever the
test runs (UTC, whole days)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from .pbx import Asterisk, Icm, Phones, place_call, result_of, start_of, wait_until

BUSY_THEN_DEPUTY = "74955550101"  # bound to 101: deputy 102 when 101 is busy or silent
ON_LEAVE = "74955550103"  # bound to 103, on leave: deputy 102 straight away
BLOCKED = "74955550666"
VIP = "74955550777"  # 104's VIP
QUIET = "74955550104"  # bound to 104, in his quiet hours
OFFLINE = "74955550109"  # bound to 109, whose phone is never registered: deputy 102
OFF_DUTY = "74955550105"  # bound to 105, who works another day of the week: deputy 102
CLOSED = "74955550106"  # bound to 106, who works another day and has no deputy


def managers() -> str:
    now = datetime.now(UTC)
    today = now.date()
    start, end = today - timedelta(days=1), today + timedelta(days=1)
    other_day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(now.weekday() + 3) % 7]
    return f"""[managers.101]
name = "Anna"
deputies = ["102"]
[managers.102]
name = "Boris"
[managers.103]
name = "Vera"
leave = [{{ from = {start}, to = {end} }}]
deputies = ["102"]
[managers.104]
name = "Gleb"
quiet = ["00:00-24:00"]
[managers.105]
name = "Dina"
hours = {{ {other_day} = "00:00-24:00" }}
deputies = ["102"]
[managers.106]
name = "Egor"
hours = {{ {other_day} = "00:00-24:00" }}
[managers.109]
name = "Offline Oleg"
deputies = ["102"]
"""


RULES = f"""[rules]
timezone = "UTC"
vip = [{{ numbers = ["+{VIP}"], to = "104" }}]
blocked = ["+{BLOCKED}"]
"""


@pytest.fixture(scope="module")
def icm(pbx: Asterisk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Icm]:
    daemon = Icm(pbx, tmp_path_factory.mktemp("icm-rules"), managers=managers(), extra=RULES)
    bound = {BUSY_THEN_DEPUTY: "101", ON_LEAVE: "103", QUIET: "104", OFFLINE: "109"}
    bound |= {OFF_DUTY: "105", CLOSED: "106"}
    for number, ext in bound.items():
        daemon.bind(f"+{number}", ext)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def serving(icm: Icm) -> Icm:
    icm.republish()
    return icm


def routed(pbx: Asterisk, tmp_path: Path, caller: str, entry: str = "ami"):
    mark = pbx.ami.mark()
    call = place_call(pbx, tmp_path, entry=entry, caller=caller)
    result = result_of(pbx, call, timeout=30, mark=mark)
    started = start_of(pbx, call, mark=mark)
    dialled = [
        e.get("destchannel").rpartition("-")[0]
        for e in pbx.ami.since(mark)
        if e.name == "DialBegin" and e.get("uniqueid") == started.get("uniqueid")
    ]
    icm_result = [
        e
        for e in pbx.ami.since(mark)
        if e.get("userevent") == "ICMResult" and e.get("uniqueid") == started.get("uniqueid")
    ]
    assert call.wait(30) == 0, call.sipp.errors()[-2000:]
    return result, dialled, icm_result


@pytest.mark.parametrize("entry", ["ami", "agi", "curl"])
def test_a_deputy_after_busy(
    pbx: Asterisk, serving: Icm, phones: Phones, tmp_path: Path, entry: str
) -> None:
    phones.start("101", "busy")
    phones.start("102", "answer", talk_ms=1500)
    before = serving.metric("icm_deputy_not_learned_total")
    result, dialled, reports = routed(pbx, tmp_path, BUSY_THEN_DEPUTY, entry)
    assert (result["status"], result["manager"], result["deputy"]) == ("ANSWERED", "101", "102")
    assert dialled == [pbx.device("101"), pbx.device("102")], dialled
    assert reports and reports[0].get("icmdeputy") == "102", reports
    # The deputy's conversation does not become the client's binding.
    wait_until(
        lambda: serving.metric("icm_deputy_not_learned_total") > before,
        15,
        "the deputy's conversation to be left unlearned",
    )


def test_a_deputy_after_no_answer(
    pbx: Asterisk, serving: Icm, phones: Phones, tmp_path: Path
) -> None:
    phones.start("101", "ring")
    phones.start("102", "answer", talk_ms=600)
    result, dialled, _ = routed(pbx, tmp_path, BUSY_THEN_DEPUTY)
    assert (result["status"], result["manager"], result["deputy"]) == ("ANSWERED", "101", "102")
    assert result["dialstatus"] == "ANSWER"
    assert dialled == [pbx.device("101"), pbx.device("102")], dialled


def test_a_deputy_when_the_manager_is_on_leave(
    pbx: Asterisk, serving: Icm, phones: Phones, tmp_path: Path
) -> None:
    phones.start("103", "answer", talk_ms=600)
    phones.start("102", "answer", talk_ms=600)
    result, dialled, _ = routed(pbx, tmp_path, ON_LEAVE)
    assert (result["status"], result["manager"], result["deputy"]) == ("ANSWERED", "103", "102")
    assert dialled == [pbx.device("102")], dialled  # 103 is never rung


def test_a_blocked_caller_is_never_connected(
    pbx: Asterisk, serving: Icm, phones: Phones, tmp_path: Path
) -> None:
    phones.start("101", "answer", talk_ms=600)
    result, dialled, reports = routed(pbx, tmp_path, BLOCKED)
    assert (result["status"], result["manager"], result["deputy"]) == ("BLOCKED", "", "")
    assert dialled == []
    assert reports and reports[0].get("icmstatus") == "BLOCKED"


def test_a_vip_in_quiet_hours(pbx: Asterisk, serving: Icm, phones: Phones, tmp_path: Path) -> None:
    phones.start("104", "answer", talk_ms=600)
    result, dialled, _ = routed(pbx, tmp_path, QUIET)  # not a VIP: 104 is quiet
    assert (result["status"], result["manager"]) == ("OFFHOURS", "104")
    assert dialled == []
    result, dialled, _ = routed(pbx, tmp_path, VIP)
    assert (result["status"], result["manager"], result["source"]) == ("ANSWERED", "104", "vip")
    assert dialled == [pbx.device("104")], dialled


def test_a_deputy_when_the_manager_is_offline(
    pbx: Asterisk, serving: Icm, phones: Phones, tmp_path: Path
) -> None:
    phones.start("102", "answer", talk_ms=600)
    result, dialled, _ = routed(pbx, tmp_path, OFFLINE)
    assert (result["status"], result["manager"], result["deputy"]) == ("ANSWERED", "109", "102")
    assert dialled == [pbx.device("102")], dialled


def test_outside_his_hours_a_deputy_else_offhours(
    pbx: Asterisk, serving: Icm, phones: Phones, tmp_path: Path
) -> None:
    phones.start("102", "answer", talk_ms=600)
    phones.start("105", "answer", talk_ms=600)
    phones.start("106", "answer", talk_ms=600)
    result, dialled, _ = routed(pbx, tmp_path, OFF_DUTY)
    assert (result["status"], result["manager"], result["deputy"]) == ("ANSWERED", "105", "102")
    assert dialled == [pbx.device("102")], dialled
    result, dialled, _ = routed(pbx, tmp_path, CLOSED)
    assert (result["status"], result["manager"], result["deputy"]) == ("OFFHOURS", "106", "")
    assert dialled == []
