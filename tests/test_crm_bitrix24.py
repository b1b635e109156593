"""Bitrix24 through a fake portal: the webhook path, batch, searchCrmEntities with every
form of the number, the duplicates path, user.get pages, the error envelopes and limits."""

import asyncio
import json

import pytest

from icm.model import Presence, Status

from .crm_fakes import FakeBitrix24
from .crm_util import CLIENT, crm_config, make_router, route, running, steps


@pytest.fixture
async def b24():
    fake = FakeBitrix24()
    fake.add_user("7", "Anna", inner="101", mobile="+7 905 111-22-33", email="anna@example.ru")
    fake.add_user("8", "Vera", inner="103", mobile="+7 905 444-55-66")
    fake.add_user("9", "Fired", inner="102", active=False)
    fake.add_user("10", "Closed Day", inner="104", timeman="CLOSED")
    fake.add_user("11", "No Phone", inner=None)
    await fake.start()
    yield fake
    await fake.stop()


def config(tmp_path, b24, section=None, **kw):
    return crm_config(
        str(tmp_path / "icm.db"), {"bitrix24": b24}, sections={"bitrix24": section or {}}, **kw
    )


async def test_caller_reaches_the_responsibles_inner_phone(tmp_path, b24, sqlite_store):
    b24.add_entity("contact", 651, ["8 (916) 123-45-67"], "7")
    async with running(config(tmp_path, b24), sqlite_store) as router:
        decision = await route(router)
    assert (decision.status, decision.dial, decision.manager) == (Status.DIAL, "SIP/101", "101")
    assert "contact 651, responsible user 7 (Anna), work day OPENED" in decision.steps[0].detail
    # Every form of the number in one batch request, through the webhook path.
    [batch] = b24.calls("/batch")
    assert batch.path == f"/rest/1/{FakeBitrix24.CODE}/batch.json"
    commands = json.loads(batch.body)["cmd"]
    assert sorted(commands.values()) == sorted(
        f"telephony.externalCall.searchCrmEntities?PHONE_NUMBER={form}"
        for form in ("79161234567", "%2B79161234567", "89161234567", "9161234567")
    )


async def test_entity_priority_and_no_answer(tmp_path, b24, sqlite_store):
    b24.add_entity("lead", 9, ["+79161234567"], "8")
    b24.add_entity("company", 643, ["79161234567"], "10")
    async with running(config(tmp_path, b24), sqlite_store) as router:
        assert (await route(router)).manager == "104"  # company before lead
        nobody = await route(router, "+7 903 555-00-00")
    assert nobody.status is Status.NOTFOUND and steps(nobody) == [("bitrix24", "no-answer")]
    section = {"entities": ["lead", "company"]}
    async with running(config(tmp_path, b24, section), sqlite_store) as router:
        await sqlite_store.delete(f"cache:bitrix24:{CLIENT}")
        assert (await route(router)).manager == "103"


async def test_fired_user_and_closed_work_day(tmp_path, b24, sqlite_store):
    b24.add_entity("contact", 1, ["+79161234567"], "9")
    b24.add_entity("contact", 2, ["+79031234567"], "10")
    async with running(config(tmp_path, b24), sqlite_store) as router:
        fired = await route(router)
        assert steps(fired) == [("bitrix24", "inactive")]
        assert (await route(router, "+79031234567")).manager == "104"
    section = {"require_open_workday": True}
    async with running(config(tmp_path, b24, section), sqlite_store) as router:
        await sqlite_store.delete("cache:bitrix24:+79031234567")
        closed = await route(router, "+79031234567")
    # A closed work day is "away" for the hours rule: no deputy here, so OFFHOURS.
    assert steps(closed) == [("bitrix24", "answered")] and "not at work" in closed.steps[0].detail
    assert (closed.status, closed.manager, closed.rule) == (Status.OFFHOURS, "104", "hours")
    assert "Bitrix24 work day CLOSED" in closed.reason


async def test_mobile_rings_only_when_enabled_and_none_configured(tmp_path, b24, sqlite_store):
    b24.add_entity("contact", 1, ["+79161234567"], "7")  # Anna: no mobiles in [managers]
    b24.add_entity("contact", 2, ["+79031234567"], "8")  # Vera: has her own mobile
    for use_mobile, dial in ((False, "SIP/101"), (True, "SIP/101&SIP/trunk/79051112233")):
        cfg = config(tmp_path, b24, {"use_mobile": use_mobile}, routing={"ring_mobiles": True})
        await sqlite_store.delete(f"cache:bitrix24:{CLIENT}", "cache:bitrix24:+79031234567")
        async with running(cfg, sqlite_store) as router:
            assert (await route(router)).dial == dial
            assert (await route(router, "+79031234567")).dial == "SIP/103&SIP/trunk/79160000003"


async def test_no_inner_phone_is_not_connected(tmp_path, b24, sqlite_store):
    b24.add_entity("contact", 1, ["+79161234567"], "11")
    async with running(config(tmp_path, b24), sqlite_store) as router:
        decision = await route(router)
    assert (decision.status, decision.manager) == (Status.NOTCONNECTED, "11")


async def test_duplicates_path_in_one_batch(tmp_path, b24, sqlite_store):
    b24.add_entity("contact", 275, ["+7 916 123-45-67"], "8")
    b24.add_entity("company", 643, ["89161234567"], "7")
    async with running(config(tmp_path, b24, {"method": "duplicates"}), sqlite_store) as router:
        decision = await route(router)
        nobody = await route(router, "+7 903 555-00-00")
    assert decision.manager == "103" and "contact 275" in decision.steps[0].detail
    assert nobody.status is Status.NOTFOUND  # findbycomm said [] (a list, not an object)
    batches = b24.calls("/batch")
    assert len(batches) == 2
    commands = json.loads(batches[0].body)["cmd"]
    assert commands["contact0"] == "crm.contact.get?id=$result[found][CONTACT][0]"
    assert commands["company4"] == "crm.company.get?id=$result[found][COMPANY][4]"
    assert commands["found"].count("values%5B%5D=") == 4


async def test_query_limit_exceeded_pauses_and_operation_time_limit_blocks(
    tmp_path, b24, sqlite_store
):
    b24.add_entity("contact", 1, ["+79161234567"], "7")
    async with running(config(tmp_path, b24), sqlite_store) as router:
        b24.fault(
            "status", status=503, body={"error": "QUERY_LIMIT_EXCEEDED", "error_description": "x"}
        )
        over = await route(router)
        assert "503 QUERY_LIMIT_EXCEEDED" in over.steps[0].detail
        paused = await route(router, "+79031234567")
        assert steps(paused) == [("bitrix24", "skipped")]
        await asyncio.sleep(1.05)
        assert (await route(router)).manager == "101"
        b24.blocked_methods.add("telephony.externalCall.searchCrmEntities")
        blocked = await route(router, "+79031234560")
        assert "OPERATION_TIME_LIMIT" in blocked.steps[0].detail
        sent = len(b24.requests)
        again = await route(router, "+79031234561")
        assert steps(again) == [("bitrix24", "skipped")] and len(b24.requests) == sent
        assert "telephony.externalCall.searchCrmEntities paused" in again.steps[0].detail


async def test_error_envelope_and_wrong_webhook(tmp_path, b24, sqlite_store):
    b24.fault(
        "status",
        status=400,
        body={"error": "ERROR_CORE", "error_description": "boom"},
        path="/batch",
    )
    cfg = config(tmp_path, b24)
    async with running(cfg, sqlite_store, ready=False) as router:
        decision = await route(router)
    assert decision.steps[0].detail == "HTTP 400 ERROR_CORE"
    wrong = config(tmp_path, b24, environ={"ICM_BITRIX24_WEBHOOK": f"{b24.url}/rest/1/wrongcode/"})
    async with running(wrong, sqlite_store, ready=False) as router:
        decision = await route(router, "+79031234567")
    assert decision.steps[0].detail == "HTTP 401 INVALID_CREDENTIALS"


async def test_user_map_pages_are_batched(tmp_path, b24, sqlite_store):
    for i in range(120):
        b24.add_user(str(100 + i), f"User {i}", inner=str(200 + i))
    b24.add_entity("contact", 1, ["+79161234567"], "219")
    cfg = config(tmp_path, b24, routing={"extensions": ["200-299"]})
    _, [(source, _)] = make_router(cfg, sqlite_store)
    await source.start()
    try:
        await source.wait_ready(3)
        assert len(source.inner.users.users) == 125
        user_calls = [r for r in b24.requests if "user.get" in r.path or "/batch" in r.path]
        assert [r.path.rsplit("/", 1)[1] for r in user_calls] == ["user.get.json", "batch.json"]
        assert len(json.loads(user_calls[1].body)["cmd"]) == 2  # start=50 and start=100
    finally:
        await source.close()


async def test_oauth_application_refreshes_on_expired_token(tmp_path, b24, sqlite_store):
    b24.add_entity("contact", 1, ["+79161234567"], "7")
    first = b24.new_refresh_token()
    section = {
        "auth": "oauth",
        "portal": b24.url,
        "client_id": FakeBitrix24.CLIENT_ID,
        "oauth_server": b24.url,
        "refresh_token_env": "ICM_B24_REFRESH",
    }
    env = {"ICM_BITRIX24_CLIENT_SECRET": FakeBitrix24.CLIENT_SECRET, "ICM_B24_REFRESH": first}
    async with running(config(tmp_path, b24, section, environ=env), sqlite_store) as router:
        assert (await route(router)).manager == "101"
        assert b24.refreshes == 1
        b24.access.clear()  # expired: 401 expired_token
        await sqlite_store.delete(f"cache:bitrix24:{CLIENT}")
        assert (await route(router)).manager == "101"
    assert b24.refreshes == 2
    assert all(r.path == "/rest/batch.json" for r in b24.calls("batch"))


async def test_presence_still_decides(tmp_path, b24, sqlite_store):
    b24.add_entity("contact", 1, ["+79161234567"], "7")
    cfg = config(tmp_path, b24)
    router, sources = make_router(cfg, sqlite_store, presence={"101": Presence.BUSY})
    for source, _ in sources:
        await source.start()
    try:
        assert (await route(router)).status is Status.BUSY
    finally:
        for source, _ in sources:
            await source.close()
