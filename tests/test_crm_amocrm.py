"""amoCRM through a fake that answers as API v4 does: query search, 204, hal+json pages,
problem+json 401, the OAuth refresh with single-use refresh tokens, 429 and the flood ban."""

import asyncio
import json
import logging
import time

import pytest

from icm.model import Status
from icm.store import SqliteStore

from .crm_fakes import FakeAmoCrm
from .crm_util import CLIENT, crm_config, route, running, serving, steps


@pytest.fixture
async def amo():
    fake = FakeAmoCrm()
    fake.add_user(5550001, "Anna Petrova", "anna@example.ru")
    fake.add_user(5550002, "Boris", "boris@example.ru")
    fake.add_user(5550004, "Anna's other login", "Anna@Example.ru")
    fake.add_user(5550008, "Olga Unmapped", "olga@example.ru")
    fake.add_user(5550009, "Fired Fedor", "fedor@example.ru", active=False)
    await fake.start()
    yield fake
    await fake.stop()


def config(tmp_path, amo, section=None, **kw):
    sections = {"amocrm": section or {}}
    return crm_config(str(tmp_path / "icm.db"), {"amocrm": amo}, sections=sections, **kw)


def oauth(amo, **extra):
    return {
        "auth": "oauth",
        "client_id": FakeAmoCrm.CLIENT_ID,
        "redirect_uri": FakeAmoCrm.REDIRECT,
        "refresh_token_env": "ICM_AMOCRM_REFRESH_TOKEN",
        **extra,
    }


def oauth_env(refresh):
    return {
        "ICM_AMOCRM_CLIENT_SECRET": FakeAmoCrm.CLIENT_SECRET,
        "ICM_AMOCRM_REFRESH_TOKEN": refresh,
    }


async def test_contact_responsible_reaches_his_extension(tmp_path, amo, sqlite_store):
    amo.add_contact(101, ["+7 (916) 123-45-67"], 5550001, leads=[303])
    async with running(config(tmp_path, amo), sqlite_store) as router:
        decision = await route(router)
    assert (decision.status, decision.dial, decision.manager) == (Status.DIAL, "SIP/101", "101")
    assert decision.source == "amocrm" and decision.manager_name == "Anna"
    assert "contact 101, responsible user 5550001 (Anna Petrova)" in decision.steps[0].detail
    [search] = amo.calls("/api/v4/contacts")
    assert "query=9161234567" in search.query_string and "with=leads,companies" in (
        search.query_string
    )
    assert search.headers["Authorization"] == f"Bearer {amo.long_lived}"


@pytest.mark.parametrize("written", ["8 916 123-45-67", "+79161234567", "89161234567 доб. 12"])
async def test_every_written_form_is_found(tmp_path, amo, sqlite_store, written):
    amo.add_contact(101, [written], 5550002)
    async with running(config(tmp_path, amo), sqlite_store) as router:
        for caller in ("+7 916 123 45 67", "89161234567"):
            assert (await route(router, caller)).manager == "102"


async def test_full_text_hits_are_verified_and_pages_followed(tmp_path, amo, sqlite_store):
    # 50 contacts merely mention the digits (a note, a name): not the caller.
    for i in range(50):
        amo.add_contact(1000 + i, ["+7 903 000-00-00"], 5550008, note="call 9161234567 back")
    amo.add_contact(101, ["+7 916 123-45-67"], 5550001)
    async with running(config(tmp_path, amo), sqlite_store) as router:
        decision = await route(router)
    assert decision.manager == "101"
    pages = amo.calls("/api/v4/contacts")
    assert len(pages) == 2 and "page=2" in pages[1].query_string


async def test_nothing_found_is_204_and_companies_are_asked_next(tmp_path, amo, sqlite_store):
    amo.add_company(202, ["+7 916 123-45-67"], 5550002)
    async with running(config(tmp_path, amo), sqlite_store) as router:
        decision = await route(router)
        assert decision.manager == "102" and "company 202" in decision.steps[0].detail
        assert [r.path for r in amo.requests[-2:]] == ["/api/v4/contacts", "/api/v4/companies"]
        unknown = await route(router, "+7 903 555-00-00")
    assert unknown.status is Status.NOTFOUND and steps(unknown) == [("amocrm", "no-answer")]


@pytest.mark.parametrize(
    ("entities", "manager"),
    [
        (["contacts", "companies", "leads"], "101"),
        (["companies", "contacts"], "102"),
        (["leads", "contacts"], "103"),
    ],
)
async def test_which_entity_wins_is_configurable(tmp_path, amo, sqlite_store, entities, manager):
    amo.add_user(5550003, "Vera", "vera@example.ru")
    amo.add_contact(101, ["+79161234567"], 5550001, leads=[303, 304])
    amo.add_company(202, ["+79161234567"], 5550002)
    amo.leads.append(
        {"id": 303, "responsible_user_id": 5550003, "updated_at": 5, "closed_at": None}
    )
    amo.leads.append({"id": 304, "responsible_user_id": 5550002, "updated_at": 9, "closed_at": 1})
    section = {"entities": entities}
    async with running(config(tmp_path, amo, section), sqlite_store) as router:
        assert (await route(router)).manager == manager


async def test_user_mapped_by_email_or_not_connected(tmp_path, amo, sqlite_store):
    amo.add_contact(101, ["+79161234567"], 5550004)  # no id mapping; e-mail is Anna's
    amo.add_contact(102, ["+79031234567"], 5550008)  # nobody's
    async with running(config(tmp_path, amo), sqlite_store) as router:
        assert (await route(router)).manager == "101"
        decision = await route(router, "+79031234567")
    assert (decision.status, decision.manager, decision.manager_name) == (
        Status.NOTCONNECTED,
        "5550008",
        "Olga Unmapped",
    )


async def test_inactive_user_counts_as_no_answer(tmp_path, amo, sqlite_store):
    amo.add_contact(101, ["+79161234567"], 5550009)
    await sqlite_store.learn(CLIENT, "104", time.time())
    cfg = config(tmp_path, amo, routing={"sources": ["amocrm", "icmdb"]})
    async with running(cfg, sqlite_store) as router:
        decision = await route(router)
    assert steps(decision) == [("amocrm", "inactive"), ("icmdb", "answered")]
    assert "Fired Fedor is inactive or fired in amocrm" in decision.steps[0].detail
    assert decision.manager == "104"


async def test_long_lived_token_refused_is_an_error_not_retried(tmp_path, amo, sqlite_store):
    amo.add_contact(101, ["+79161234567"], 5550001)
    amo.access.clear()
    async with running(config(tmp_path, amo), sqlite_store, ready=False) as router:
        decision = await route(router)
    assert steps(decision) == [("amocrm", "error")]
    assert "401 unauthorized: the long-lived token expired or was revoked" in (
        decision.steps[0].detail
    )
    assert len(amo.calls("/api/v4/contacts")) == 1


async def test_oauth_first_refresh_token_is_stored_before_use(tmp_path, amo, sqlite_store):
    amo.add_contact(101, ["+79161234567"], 5550001)
    first = amo.new_refresh_token()
    cfg = config(tmp_path, amo, oauth(amo), environ=oauth_env(first))
    async with running(cfg, sqlite_store) as router:
        assert (await route(router)).manager == "101"
    assert amo.refreshes == 1
    stored = json.loads(await sqlite_store.get(f"oauth:amocrm:{amo.url}"))
    assert stored["refresh"] in amo.refresh_tokens and stored["refresh"] != first
    assert stored["access"] in amo.access
    [refresh] = amo.calls("/oauth2/access_token")
    assert json.loads(refresh.body)["refresh_token"] == first


async def test_oauth_refresh_racing_with_traffic_is_done_once(tmp_path, amo, sqlite_store, caplog):
    """Two instances share one store; the access token dies under 12 concurrent calls:
    one refresh, the rotated refresh token stored, everybody served; a restarted
    instance whose configuration holds the used-up refresh token still works."""
    for i in range(6):
        amo.add_contact(100 + i, [f"+7917000{i:04d}"], 5550001)
    amo.rate_per_s = 100  # two instances without a shared (Redis) limit: 14 requests/s
    first = amo.new_refresh_token()
    section = oauth(amo, timeout_ms=3000)
    cfg = config(tmp_path, amo, section, environ=oauth_env(first))
    caplog.set_level(logging.DEBUG)
    other_store = SqliteStore(tmp_path / "icm.db")  # the second instance's connection
    await other_store.open()
    try:
        async with running(cfg, sqlite_store) as one, running(cfg, other_store) as two:
            assert amo.refreshes == 1  # the first token, taken once for both
            amo.expire_access()
            amo.refresh_delay = 0.1  # the refresh is slow: traffic piles up behind it
            calls = [route(r, f"+7917000{i:04d}", 3) for i in range(6) for r in (one, two)]
            decisions = await asyncio.gather(*calls)
        assert {d.manager for d in decisions} == {"101"}
        assert amo.refreshes == 2
        stored = json.loads(await sqlite_store.get(f"oauth:amocrm:{amo.url}"))
        assert stored["refresh"] in amo.refresh_tokens
        # A restart: the configuration's refresh token is long dead; the store's is not.
        amo.expire_access()
        async with running(cfg, sqlite_store) as again:
            await sqlite_store.delete(f"cache:amocrm:{'+79170000003'}")
            assert (await route(again, "+79170000003")).manager == "101"
        assert amo.refreshes == 3
    finally:
        await other_store.close()
    # Tokens and the client secret never reach a log line.
    for secret in (first, FakeAmoCrm.CLIENT_SECRET, *amo.refresh_tokens, *amo.access):
        assert secret not in caplog.text


async def test_429_pauses_requests_and_403_is_never_provoked(tmp_path, amo, sqlite_store):
    amo.add_contact(101, ["+79161234567"], 5550001)
    amo.fault("status", status=429, headers={"Retry-After": "2"}, body={}, path="/api/v4/contacts")
    async with running(config(tmp_path, amo), sqlite_store, ready=False) as router:
        decision = await route(router)
        assert steps(decision) == [("amocrm", "error")] and "429" in decision.steps[0].detail
        sent = len(amo.requests)
        decision = await route(router)
        assert steps(decision) == [("amocrm", "skipped")]
        assert decision.steps[0].detail == "paused after 429 too many requests; 2 s left"
        assert len(amo.requests) == sent


async def test_client_side_limit_keeps_under_7_per_second(tmp_path, sqlite_store):
    """Issue 14.6: 30 lookups at once, each request reaching amoCRM up to 50 ms late (the
    network), as amoCRM counts them: never 8 in one second, so never a 429. The margin
    (150 ms a second) leaves the rest of its room to a busy test machine."""
    amo = FakeAmoCrm(jitter_s=0.05)
    amo.add_user(5550001, "Anna Petrova", "anna@example.ru")
    for i in range(30):
        amo.add_contact(100 + i, [f"+7917000{i:04d}"], 5550001)
    async with serving(amo):
        cfg = config(tmp_path, amo, {"timeout_ms": 9000, "entities": ["contacts"]})
        async with running(cfg, sqlite_store) as router:
            decisions = await asyncio.gather(
                *(route(router, f"+7917000{i:04d}", budget=10) for i in range(30))
            )
    assert {d.manager for d in decisions} == {"101"}
    assert amo.throttled == 0 and not amo.banned
    arrivals = amo.arrivals
    assert len(arrivals) == 31  # the user map, then one search each
    assert all(b - a > 1.0 for a, b in zip(arrivals, arrivals[7:], strict=False))


async def test_forbidden_pauses_the_source(tmp_path, amo, sqlite_store):
    amo.banned = True
    async with running(config(tmp_path, amo), sqlite_store, ready=False) as router:
        first = await route(router)
        second = await route(router, "+79031234567")
    assert "403 forbidden" in first.steps[0].detail
    assert steps(second) == [("amocrm", "skipped")] and "paused after 403" in (
        second.steps[0].detail
    )


async def test_a_crm_slower_than_the_budget_is_still_asked(tmp_path, amo, sqlite_store):
    """The CRM answers in 0.4 s, the budget is 0.2 s: each call is cut (TIMEOUT), and the
    request still goes when a slot is free, so the answer fills the cache for the next
    call. Knowing the CRM is slow must not stop ICM from asking it at all."""
    amo.add_contact(101, ["+79161234567"], 5550001)
    cfg = config(tmp_path, amo, {"timeout_ms": 3000, "entities": ["contacts"]})
    async with running(cfg, sqlite_store) as router:
        amo.delay = 0.4
        for number in ("+79031234567", "+79031234568", CLIENT):
            decision = await route(router, number, budget=0.2)
            assert decision.status is Status.TIMEOUT, decision.steps
            await asyncio.sleep(0.5)  # the lookup goes on and is answered meanwhile
        assert len(amo.calls("/api/v4/contacts")) == 3
        assert (await route(router, budget=0.2)).manager == "101"  # from the cache
