"""Hostile caller IDs through every entry, on the real PBX (issue 10, defect 4).

The test's inbound context sets ``CALLERID(num)`` from the caller's X-CID64 header
(base64, so any bytes get through SIP), before the scenario hands the call to ICM: the
shipped contexts see the value exactly as if the operator had delivered it. For each
value: no injected application runs (no ``UserEvent: INJECTED``, no file written by
``SHELL``), the call comes back to its scenario with a sane status, and nothing hangs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .pbx import Asterisk, Icm, place_call, result_of

MARKER = Path("/tmp/icm-realpbx-injected")  # SHELL() would create it
HOSTILE = {
    "paren-close": ")",
    "colon": ":",
    "paren-open": "(",
    "comma": ",",
    "pipe": "|",
    "semicolon": ";",
    "quote": '"',
    "expression": f"${{SHELL(touch {MARKER})}}",
    "variable": "${ICM_TOKEN}",
    "newline": "7916\n1234567",
    "crlf-frame": "x\r\n\r\nEvent: UserEvent\r\nUserEvent: FORGED\r\n",
    "long-digits": "7" * 200,
    "long-junk": "x" * 200,
    "cyrillic": "Иван Петров",
    "injection": "x):UserEvent(INJECTED",
    "injection-gotoif": 'x"]?icm-outcome,s,1:',
}


@pytest.fixture(scope="module")
def icm(pbx: Asterisk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Icm]:
    daemon = Icm(pbx, tmp_path_factory.mktemp("icm-hostile"))
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.mark.parametrize("number", ["", "74950000999"], ids=["own-number", "number-passed"])
@pytest.mark.parametrize("entry", ["ami", "agi", "curl"])
def test_hostile_caller_ids(
    entry: str, number: str, pbx: Asterisk, icm: Icm, tmp_path: Path
) -> None:
    icm.republish()
    MARKER.unlink(missing_ok=True)
    mark = pbx.ami.mark()
    calls = {
        name: place_call(pbx, tmp_path, entry=entry, cid=cid, number=number, hold_ms=15000)
        for name, cid in HOSTILE.items()
    }
    results = {name: result_of(pbx, call, timeout=60, mark=mark) for name, call in calls.items()}
    events = pbx.ami.since(mark)
    injected = [e for e in events if e.get("userevent") == "INJECTED" or e.name == "INJECTED"]
    assert injected == [], injected
    # The CR/LF caller ID forges an AMI event in the observer's session too (Asterisk's
    # doing, see test_crlf_in_a_sip_from_forges_ami_events): it never carries a channel.
    forged = [e for e in events if e.get("userevent") == "FORGED"]
    assert all("channel" not in e for e in forged), forged
    assert not MARKER.exists(), "SHELL() ran from a caller ID"
    statuses = {name: result["status"] for name, result in results.items()}
    # A number passed by the scenario is looked up whatever the caller ID; without one,
    # junk is ANONYMOUS. Never dialled, never ERROR.
    expected = {name: "NOTFOUND" if number else "ANONYMOUS" for name in HOSTILE}
    if entry in ("ami", "agi"):
        # Asterisk writes CallerIDNum into every AMI event, and agi_callerid into the AGI
        # environment, without escaping CR/LF: an empty line inside the caller ID ends
        # the request's frame early, its token never reaches ICM, and the call comes
        # back on time with TIMEOUT. Nothing of the forged rest is acted on.
        expected["crlf-frame"] = "TIMEOUT"
    assert statuses == expected
    assert not [e for e in events if e.name == "DialBegin"]
    for name, call in calls.items():
        assert call.wait(60) == 0, (name, call.sipp.errors()[-1000:])
