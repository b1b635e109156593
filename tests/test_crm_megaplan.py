"""Megaplan through a fake API v3: JSON in the query string, {meta, data} envelopes with
errors inside HTTP 200, the password grant and a new login on 401."""

import json
from urllib.parse import unquote_plus

import pytest

from connectors.megaplan import json_query
from icm.model import Status

from .crm_fakes import FakeMegaplan
from .crm_util import CLIENT, crm_config, route, running, steps


@pytest.fixture(params=[False, True], ids=["http-status", "errors-in-200"])
async def mp(request):
    fake = FakeMegaplan(errors_in_200=request.param)
    fake.add_employee(1000005, "Anna Petrova", email="anna@example.ru")
    fake.add_employee(1000006, "Boris")
    fake.add_employee(1000009, "Fired Fedor", working=False)
    fake.add_employee(1000011, "Lena", email="Anna@Example.RU")
    await fake.start()
    yield fake
    await fake.stop()


def config(tmp_path, mp, section=None, **kw):
    return crm_config(
        str(tmp_path / "icm.db"), {"megaplan": mp}, sections={"megaplan": section or {}}, **kw
    )


def test_query_string_is_one_percent_encoded_json_object():
    query = json_query({"q": "+7 916", "limit": 20})
    assert "+" not in query and "%2B7" in query and "{" not in query
    assert json.loads(unquote_plus(query)) == {"q": "+7 916", "limit": 20}


async def test_human_client_reaches_the_responsible_employee(tmp_path, mp, sqlite_store):
    mp.add_client(
        "ContractorHuman", 77, ["8 (916) 123-45-67"], [("Group", 12), ("Employee", 1000005)]
    )
    async with running(config(tmp_path, mp), sqlite_store) as router:
        decision = await route(router)
    assert (decision.status, decision.manager) == (Status.DIAL, "101")
    assert "human 77, responsible employee 1000005 (Anna Petrova)" in decision.steps[0].detail
    search = mp.calls("/contractorCompany/search")[0]
    assert search.query_string.startswith("%7B%22q%22%3A%229161234567%22")
    assert search.headers["Authorization"].startswith("Bearer mp-token-")
    assert {"q": "9161234567", "limit": 20} in mp.queries
    assert len(mp.calls("/api/v3/contractorHuman/77")) == 1
    assert mp.logins == 1


async def test_verified_on_the_full_card_and_priority(tmp_path, mp, sqlite_store):
    mp.add_client(
        "ContractorHuman", 1, ["+7 903 000-00-00"], [("Employee", 1000006)], name="9161234567 fan"
    )
    mp.add_client("ContractorCompany", 2, ["+79161234567"], [("Employee", 1000006)])
    mp.add_client("ContractorHuman", 3, ["79161234567"], [("Employee", 1000005)])
    async with running(config(tmp_path, mp), sqlite_store) as router:
        assert (await route(router)).manager == "101"  # the human whose phone it is
    async with running(
        config(tmp_path, mp, {"entities": ["company", "human"]}), sqlite_store
    ) as router:
        await sqlite_store.delete(f"cache:megaplan:{CLIENT}")
        assert (await route(router)).manager == "102"


async def test_mapped_by_email_inactive_and_unknown(tmp_path, mp, sqlite_store):
    mp.add_client("ContractorHuman", 1, ["+79161234567"], [("Employee", 1000011)])
    mp.add_client("ContractorHuman", 2, ["+79031234567"], [("Employee", 1000009)])
    mp.add_client("ContractorHuman", 3, ["+79051234567"], [("Group", 5)])
    async with running(config(tmp_path, mp), sqlite_store) as router:
        assert (await route(router)).manager == "101"  # Lena's e-mail is in [managers.101]
        fired = await route(router, "+79031234567")
        nobody = await route(router, "+79051234567")
        unknown = await route(router, "+79261234567")
    assert steps(fired) == [("megaplan", "inactive")]
    # No responsible employee (only a group): no answer, not NOTCONNECTED (issue 14.4).
    assert nobody.status is Status.NOTFOUND and steps(nobody) == [("megaplan", "no-answer")]
    assert nobody.steps[0].detail == "human 3 has no responsible employee"
    assert unknown.status is Status.NOTFOUND


async def test_401_logs_in_again_once(tmp_path, mp, sqlite_store):
    mp.add_client("ContractorHuman", 1, ["+79161234567"], [("Employee", 1000005)])
    async with running(config(tmp_path, mp), sqlite_store) as router:
        mp.expire_tokens()
        assert (await route(router)).manager == "101"
    assert mp.logins == 2
    # The token is in the store: a new instance does not log in.
    async with running(config(tmp_path, mp), sqlite_store) as router:
        await sqlite_store.delete(f"cache:megaplan:{CLIENT}")
        assert (await route(router)).manager == "101"
    assert mp.logins == 2


async def test_errors_are_read_from_meta(tmp_path, mp, sqlite_store):
    mp.fault(
        "status",
        status=200,
        body={"meta": {"status": 422, "errors": [{"message": "bad"}]}, "data": None},
        path="/search",
    )
    async with running(config(tmp_path, mp), sqlite_store) as router:
        decision = await route(router)
    assert steps(decision) == [("megaplan", "error")]
    assert decision.steps[0].detail == "422 request error"


async def test_wrong_password(tmp_path, mp, sqlite_store):
    cfg = config(tmp_path, mp, environ={"ICM_MEGAPLAN_PASSWORD": "wrong"})
    async with running(cfg, sqlite_store, ready=False) as router:
        decision = await route(router)
    assert "login refused (HTTP 401)" in decision.steps[0].detail
    assert "wrong" not in decision.steps[0].detail


async def test_employee_pages_follow_page_after(tmp_path, mp, sqlite_store):
    for i in range(150):
        mp.add_employee(2000000 + i, f"Employee {i}")
    mp.add_client("ContractorHuman", 1, ["+79161234567"], [("Employee", 2000149)])
    async with running(config(tmp_path, mp), sqlite_store) as router:
        decision = await route(router)
    assert "employee 2000149 (Employee 149)" in decision.steps[0].detail
    pages = [q for q in mp.queries if "pageAfter" in q or q == {"limit": 100}]
    assert pages[0] == {"limit": 100}
    assert pages[1] == {"limit": 100, "pageAfter": {"contentType": "Employee", "id": "2000095"}}
