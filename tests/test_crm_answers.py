"""The answers the three CRMs give must match what the CRM holds (issue 14, items 1-5):
the same scenarios against each fake CRM, the next source (the call history) standing by.

* a record stored with the local form of a number of the configured area (495);
* a responsible the CRM no longer knows (deleted) and a record with no responsible: no
  answer, the next source is asked;
* several records with the caller's number: the most recently updated one wins;
* amoCRM: a client who exists only as a lead, his number in the lead's own text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from icm.model import Status

from .crm_fakes import FakeAmoCrm, FakeBitrix24, FakeMegaplan, FakeServer
from .crm_util import CLIENT, crm_config, route, running, steps

ANNA, BORIS = 0, 1  # managers 101 and 102


@dataclass
class Crm:
    """One fake CRM, and how to write a client into it the way that CRM stores one."""

    name: str
    fake: FakeServer
    users: tuple[Any, Any]  # Anna's and Boris's ids in this CRM

    def add(self, ident: int, phones: list[str], user: Any, updated: float = 1.7e9) -> None:
        when = datetime.fromtimestamp(updated, UTC).isoformat()
        fake = self.fake
        if isinstance(fake, FakeAmoCrm):
            fake.add_contact(ident, phones, user, updated_at=int(updated))
        elif isinstance(fake, FakeBitrix24):
            fake.add_entity("contact", ident, phones, str(user), modified=when)
        else:
            assert isinstance(fake, FakeMegaplan)
            responsibles = [("Employee", user)] if user else []
            fake.add_client("ContractorHuman", ident, phones, responsibles, updated=when)


@pytest.fixture(params=["amocrm", "bitrix24", "megaplan"])
async def crm(request) -> AsyncIterator[Crm]:
    if request.param == "amocrm":
        amo = FakeAmoCrm()
        amo.add_user(5550001, "Anna", "anna@example.ru")
        amo.add_user(5550002, "Boris", "boris@example.ru")
        found = Crm("amocrm", amo, (5550001, 5550002))
    elif request.param == "bitrix24":
        b24 = FakeBitrix24()
        b24.add_user("7", "Anna", inner="101")
        b24.add_user("8", "Boris", inner="102")
        found = Crm("bitrix24", b24, ("7", "8"))
    else:
        mp = FakeMegaplan()
        mp.add_employee(1000005, "Anna")
        mp.add_employee(1000006, "Boris")
        found = Crm("megaplan", mp, (1000005, 1000006))
    await found.fake.start()
    yield found
    await found.fake.stop()


def config(tmp_path, crm: Crm):
    """The CRM first, then the call history (which knows every caller as manager 104)."""
    return crm_config(
        str(tmp_path / "icm.db"), {crm.name: crm.fake}, routing={"sources": [crm.name, "icmdb"]}
    )


async def test_a_local_number_of_the_area_is_found(tmp_path, crm, sqlite_store):
    """``222-11-00`` is +7 495 222-11-00 with area code 495 (issue 14.2)."""
    crm.add(1, ["222-11-00"], crm.users[ANNA])
    crm.add(2, ["+7 (812) 222-11-00"], crm.users[BORIS])  # the same digits, another city
    async with running(config(tmp_path, crm), sqlite_store) as router:
        local = await route(router, "+74952221100")
        full = await route(router, "8 495 222 11 00")
    assert (local.source, local.manager) == (crm.name, "101")
    assert (full.source, full.manager) == (crm.name, "101")


async def test_a_responsible_the_crm_no_longer_knows_is_no_answer(tmp_path, crm, sqlite_store):
    """A deleted user: his id is not in the CRM's user list (issue 14.3)."""
    crm.add(1, [CLIENT], 5550077 if crm.name == "amocrm" else 77)
    await sqlite_store.learn(CLIENT, "104", time.time())
    async with running(config(tmp_path, crm), sqlite_store) as router:
        decision = await route(router)
    assert steps(decision) == [(crm.name, "no-answer"), ("icmdb", "answered")]
    assert "deleted" in decision.steps[0].detail
    assert (decision.status, decision.manager) == (Status.DIAL, "104")


async def test_a_client_with_no_responsible_is_no_answer(tmp_path, crm, sqlite_store):
    """No responsible at all (issue 14.4): not NOTCONNECTED with an empty manager."""
    crm.add(1, [CLIENT], 0)
    await sqlite_store.learn(CLIENT, "104", time.time())
    async with running(config(tmp_path, crm), sqlite_store) as router:
        decision = await route(router)
    assert steps(decision) == [(crm.name, "no-answer"), ("icmdb", "answered")]
    assert "has no responsible" in decision.steps[0].detail
    assert decision.manager == "104"


async def test_of_several_records_the_most_recently_updated_wins(tmp_path, crm, sqlite_store):
    """Issue 14.5: the newest record, whatever order the CRM lists them in."""
    crm.add(1, [CLIENT], crm.users[ANNA], updated=1.70e9)
    crm.add(2, ["8 916 123-45-67"], crm.users[BORIS], updated=1.75e9)
    crm.add(3, ["+7 916 123 45 67"], crm.users[ANNA], updated=1.72e9)
    async with running(config(tmp_path, crm), sqlite_store) as router:
        decision = await route(router)
    assert (decision.source, decision.manager) == (crm.name, "102")


# amoCRM leads (issue 14.1) ---------------------------------------------------------------


@pytest.fixture
async def amo() -> AsyncIterator[FakeAmoCrm]:
    fake = FakeAmoCrm()
    fake.add_user(5550001, "Anna", "anna@example.ru")
    fake.add_user(5550002, "Boris", "boris@example.ru")
    await fake.start()
    yield fake
    await fake.stop()


async def test_amocrm_a_client_only_in_a_lead_is_found(tmp_path, amo, sqlite_store):
    amo.add_lead(301, 5550001, text="Перезвонить 9161234567890, это не он")
    amo.add_lead(302, 5550002, text="Звонил: +7 (916) 123-45-67, просил КП")
    amo.add_lead(303, 5550001, name="Звонок 8 903 123 45 67")
    cfg = crm_config(str(tmp_path / "icm.db"), {"amocrm": amo})
    async with running(cfg, sqlite_store) as router:
        in_text = await route(router)
        in_name = await route(router, "+79031234567")
    assert (in_text.manager, in_name.manager) == ("102", "101")
    assert "lead 302, responsible user 5550002" in in_text.steps[0].detail
    searched = [r.query_string for r in amo.calls("/api/v4/leads")]
    assert any("query=9161234567" in q for q in searched)


async def test_amocrm_a_closed_lead_is_not_the_callers_lead(tmp_path, amo, sqlite_store):
    amo.add_lead(302, 5550002, text="+7 916 123-45-67", closed_at=1_700_000_500)
    cfg = crm_config(str(tmp_path / "icm.db"), {"amocrm": amo})
    async with running(cfg, sqlite_store) as router:
        decision = await route(router)
    assert decision.status is Status.NOTFOUND


async def test_bitrix24_duplicates_also_takes_the_newest(tmp_path, sqlite_store):
    b24 = FakeBitrix24()
    b24.add_user("7", "Anna", inner="101")
    b24.add_user("8", "Boris", inner="102")
    b24.add_entity("contact", 1, [CLIENT], "7", modified="2025-01-01T10:00:00+03:00")
    b24.add_entity("contact", 2, [CLIENT], "8", modified="2025-06-01T10:00:00+03:00")
    await b24.start()
    try:
        cfg = crm_config(
            str(tmp_path / "icm.db"),
            {"bitrix24": b24},
            sections={"bitrix24": {"method": "duplicates"}},
        )
        async with running(cfg, sqlite_store) as router:
            decision = await route(router)
    finally:
        await b24.stop()
    assert decision.manager == "102" and len(b24.calls("/batch")) == 1  # one request


# A burst (issue 14.8): amoCRM's mirror --------------------------------------------------


async def test_amocrm_mirror_routes_a_burst_without_asking(tmp_path, amo, sqlite_store):
    """With ``mirror = true`` the contacts' phones are loaded in the background (250 a
    page), then what changed (``filter[updated_at][from]``): 30 known callers at once ask
    amoCRM nothing; a client added since is still searched."""
    for i in range(30):
        amo.add_contact(1000 + i, [f"8 917 000-{i:02d}-00"], 5550001, updated_at=1_700_000_000 + i)
    amo.add_company(2000, ["+7 903 111-22-33"], 5550002)
    section = {"mirror": True, "mirror_refresh_s": 3600}
    cfg = crm_config(str(tmp_path / "icm.db"), {"amocrm": amo}, sections={"amocrm": section})
    async with running(cfg, sqlite_store) as router:
        [(guard, _)] = router.sources
        async with asyncio.timeout(5):
            while not guard.inner.mirror.ready:
                await asyncio.sleep(0.01)
        searched = len(amo.calls("/api/v4/contacts"))
        decisions = await asyncio.gather(*(route(router, f"+7917000{i:02d}00") for i in range(30)))
        company = await route(router, "+79031112233")
        assert len(amo.calls("/api/v4/contacts")) == searched  # nothing asked
        assert {d.manager for d in decisions} == {"101"} and company.manager == "102"
        assert "; from the mirror" in decisions[0].steps[0].detail
        amo.add_contact(3000, ["+7 905 000-00-01"], 5550002, updated_at=1_800_000_000)
        late = await route(router, "+79050000001")
        assert late.manager == "102" and "mirror" not in late.steps[0].detail
        # The next refresh asks only for what changed since the newest record it holds.
        await guard.inner.mirror.refresher.refresh_now()
        last = amo.calls("/api/v4/contacts")[-1].query_string
        assert "filter%5Bupdated_at%5D%5Bfrom%5D=1700000029" in last
        assert guard.inner.mirror.find("contacts", "+79050000001")
