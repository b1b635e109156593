"""ICM learns who talked with whom from the real PBX's bridge events, on chan_sip and
PJSIP: an inbound call the scenario put through to a manager, a manager's outbound call,
and an inbound call a manager transferred to another (AMI BlindTransfer from the
observer, as a phone's transfer key would). The next call from the same number goes to
the manager learned.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .pbx import Asterisk, Icm, Phones, place_call, result_of, wait_until


@pytest.fixture(scope="module")
def icm(pbx: Asterisk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Icm]:
    daemon = Icm(pbx, tmp_path_factory.mktemp("icm-learning"))
    daemon.start()
    yield daemon
    daemon.stop()


def learned(icm: Icm) -> float:
    return icm.metric("icm_learned_total")


def routed(pbx: Asterisk, tmp_path: Path, caller: str) -> dict[str, str]:
    mark = pbx.ami.mark()
    call = place_call(pbx, tmp_path, entry="ami", caller=caller)
    result = result_of(pbx, call, mark=mark)
    assert call.wait(30) == 0
    return result


def test_an_inbound_call_put_through_by_the_scenario(
    pbx: Asterisk, icm: Icm, phones: Phones, tmp_path: Path
) -> None:
    icm.republish()
    caller = "74953330001"
    phones.start("105", "answer", talk_ms=1500)
    before = learned(icm)
    first = routed_after(pbx, tmp_path, caller, pbx.device("105"))
    assert first["status"] == "NOTFOUND", first
    wait_until(lambda: learned(icm) > before, 15, "the conversation to be learned")
    again = routed(pbx, tmp_path, caller)
    assert (again["status"], again["manager"], again["source"]) == ("ANSWERED", "105", "icmdb")


def routed_after(pbx: Asterisk, tmp_path: Path, caller: str, after: str) -> dict[str, str]:
    """A call ICM does not know; the scenario then dials ``after`` itself."""
    mark = pbx.ami.mark()
    call = place_call(pbx, tmp_path, entry="ami", caller=caller, after=after)
    result = result_of(pbx, call, mark=mark)
    done = pbx.ami.wait(
        lambda e: e.get("userevent") == "TestAfter" and e.get("tag") == call.tag,
        30,
        mark,
        "the scenario's Dial",
    )
    assert done["dialstatus"] == "ANSWER", done
    assert call.wait(30) == 0
    return result


def test_an_outbound_call_from_a_managers_phone(
    pbx: Asterisk, icm: Icm, phones: Phones, tmp_path: Path
) -> None:
    icm.republish()
    number = "74953330002"
    phones.provider("answer", talk_ms=1500)
    before = learned(icm)
    # Phone 106 dials out through the operator (the provider's SIPp answers).
    mark = pbx.ami.mark()
    out = place_call(
        pbx,
        tmp_path,
        caller="106",
        dialled=number,
        from_ip="127.0.0.1",
        from_port=pbx.phone_ports["106"],
    )
    assert out.wait(30) == 0, out.sipp.errors()[-2000:]
    bridged = [e for e in pbx.ami.since(mark) if e.name == "BridgeEnter"]
    assert len(bridged) >= 2, "the outbound call was not bridged"
    wait_until(lambda: learned(icm) > before, 15, "the outbound call to be learned")
    phones.start("106", "answer", talk_ms=400)
    again = routed(pbx, tmp_path, number)
    assert (again["status"], again["manager"]) == ("ANSWERED", "106"), again


def test_a_call_transferred_to_another_manager(
    pbx: Asterisk, icm: Icm, phones: Phones, tmp_path: Path
) -> None:
    icm.republish()
    caller = "74953330003"
    phones.start("101", "answer")  # talks until the transfer takes the caller away
    phones.start("102", "answer", talk_ms=1500)
    before = learned(icm)
    mark = pbx.ami.mark()
    call = place_call(pbx, tmp_path, entry="ami", caller=caller, after=pbx.device("101"))
    first = result_of(pbx, call, mark=mark)
    assert first["status"] == "NOTFOUND", first
    device = pbx.device("101")
    entered = pbx.ami.wait(
        lambda e: e.name == "BridgeEnter" and e.get("channel", "").startswith(f"{device}-"),
        20,
        mark,
        "101 in the bridge",
    )
    time.sleep(0.8)  # 101 talks a little first
    answer = pbx.ami.action(
        "BlindTransfer", Channel=entered["channel"], Exten="102", Context="from-phones"
    )
    assert answer.get("response") == "Success", answer
    pbx.ami.wait(
        lambda e: (
            e.name == "BridgeEnter" and e.get("channel", "").startswith(f"{pbx.device('102')}-")
        ),
        20,
        mark,
        "102 in a bridge with the caller",
    )
    assert call.wait(40) == 0
    wait_until(lambda: learned(icm) > before, 15, "the transferred call to be learned")
    phones.start("102", "answer", talk_ms=400)
    again = routed(pbx, tmp_path, caller)
    assert (again["status"], again["manager"]) == ("ANSWERED", "102"), again
