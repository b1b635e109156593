"""Every ``ICM_STATUS`` the daemon decides, through each entry (AMI, FastAGI, HTTP/CURL),
on chan_sip and PJSIP: a SIPp caller from the operator's side reaches the test's
scenario, which hands the call over with ``Gosub(icm,6100,1)``, ``Gosub(icm-agi,...)`` or
``Gosub(icm-curl,...)`` and reports what came back.

One ICM (``icm run``) per technology serves this module, with the sources ``icmdb``
(numbers bound with ``icm bind``) and ``amocrm`` (a fake amoCRM over real HTTP, for the
statuses only a CRM produces: NOTCONNECTED, and TIMEOUT when the CRM is slower than the
budget). The statuses that need ICM down, hung or failing (TIMEOUT from the dialplan's
side, ERROR) are in test_failures.py: they cannot share a running daemon.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..crm_fakes import FakeAmoCrm
from .pbx import Asterisk, Icm, Phones, place_call, result_of, start_of, wait_until

BUDGET_S = 1.5
CRM_UNMAPPED_USER = 5550099  # a CRM user no [managers] section names: NOTCONNECTED
NUMBERS = {
    "ANSWERED": "74950000101",
    "NOANSWER": "74950000102",
    "BUSY": "74950000103",
    "OFFLINE": "74950000109",
    "NOTCONNECTED": "74950000200",
    "TIMEOUT": "74950000300",
    "NOTFOUND": "74950000999",
    "EXCEPTION": "79160000104",  # manager 104's own mobile
    "ANONYMOUS": "anonymous",
}
BOUND = {"ANSWERED": "101", "NOANSWER": "102", "BUSY": "103", "OFFLINE": "109"}


def crm_section(fake: FakeAmoCrm) -> str:
    return f"""[sources.amocrm]
base_url = "{fake.url}"
timeout_ms = 10000
cache_ttl_s = 0
negative_ttl_s = 0
breaker_failures = 1000
"""


@pytest.fixture(scope="module")
def icm(
    pbx: Asterisk, amocrm: FakeAmoCrm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Icm]:
    amocrm.add_user(CRM_UNMAPPED_USER, "Stranger", "stranger@example.ru")
    amocrm.add_contact(200, [f"+{NUMBERS['NOTCONNECTED']}"], CRM_UNMAPPED_USER)
    run = tmp_path_factory.mktemp("icm-statuses")
    daemon = Icm(
        pbx,
        run,
        routing='sources = ["icmdb", "amocrm"]',
        extra=crm_section(amocrm),
        budget_ms=int(BUDGET_S * 1000),
        environ={"ICM_AMOCRM_TOKEN": amocrm.long_lived},
    )
    for status, ext in BOUND.items():
        daemon.bind(f"+{NUMBERS[status]}", ext)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def serving(icm: Icm, pbx: Asterisk) -> Icm:
    """The module's daemon, with Asterisk's globals pointing at it again (another
    module's daemon may have published its own since: a reload publishes them)."""
    icm.republish()
    return icm


STATUSES = list(NUMBERS)


@pytest.mark.parametrize("entry", ["ami", "agi", "curl"])
@pytest.mark.parametrize("status", STATUSES)
def test_status(
    status: str,
    entry: str,
    pbx: Asterisk,
    serving: Icm,
    phones: Phones,
    amocrm: FakeAmoCrm,
    tmp_path: Path,
) -> None:
    if status == "ANSWERED":
        phones.start("101", "answer", talk_ms=600)
    elif status == "NOANSWER":
        phones.start("102", "ring")
    elif status == "BUSY":
        phones.start("103", "busy")
    elif status == "TIMEOUT":
        amocrm.delay = 5.0  # slower than the budget: ICM decides TIMEOUT itself
    mark = pbx.ami.mark()
    try:
        call = place_call(pbx, tmp_path, entry=entry, caller=NUMBERS[status])
        result = result_of(pbx, call, timeout=30, mark=mark)
    finally:
        amocrm.delay = 0.0
    started = start_of(pbx, call, mark=mark)
    assert result["status"] == status, result
    # ICM answered (the token came back): the status is the daemon's, not the dialplan's
    # own TIMEOUT.
    assert replied(result, entry), result
    expected_manager = {**BOUND, "NOTCONNECTED": str(CRM_UNMAPPED_USER)}
    assert result["manager"] == expected_manager.get(status, ""), result
    dialled = [
        e
        for e in pbx.ami.since(mark)
        if e.name == "DialBegin" and e.get("uniqueid") == started.get("uniqueid")
    ]
    if status in ("ANSWERED", "NOANSWER", "BUSY"):
        device = pbx.device(BOUND[status])
        assert [e.get("destchannel").rpartition("-")[0] for e in dialled] == [device], dialled
        assert result["dialstatus"] == {"ANSWERED": "ANSWER"}.get(status, status)
    else:
        assert dialled == [], f"ICM dialled for {status}: {dialled}"
    if entry == "agi":
        assert result["agistatus"] == "SUCCESS", result
    # Within the budget, on Asterisk's clock (generous: the point is "not stuck").
    if status not in ("ANSWERED", "NOANSWER", "BUSY"):
        assert result.time - started.time < BUDGET_S + 0.5, (result.time, started.time)
    assert call.wait(30) == 0, call.sipp.errors()[-2000:]


def replied(result: dict[str, str], entry: str) -> bool:
    """Whether ICM's own answer reached the dialplan (rather than its own TIMEOUT)."""
    if entry == "curl":
        return result["body"] != ""
    return result["reply"].split("|")[1:2] != [""] and "|" in result["reply"]


def test_the_daemon_publishes_its_budget_as_the_wait(pbx: Asterisk, serving: Icm) -> None:
    """ICM_WAIT is the lookup budget itself: the longest a caller waits."""
    wait_until(lambda: pbx.ami.getvar("ICM_WAIT") != "", 5, "ICM_WAIT")
    assert float(pbx.ami.getvar("ICM_WAIT")) == BUDGET_S
