"""Whatever a CRM does wrong, the call goes on: garbage, truncated and huge bodies, a
server that hangs or drops the connection. The CRM is skipped for this call and the next
source answers within the budget; no error message or log line carries a secret."""

import logging
import time

import pytest

from icm.metrics import Metrics
from icm.sources import (
    SourceBadResponse,
    SourceConnectionError,
    SourceError,
    SourceRateLimited,
    SourceResponseError,
    SourceTimeout,
)

from .crm_fakes import FakeAmoCrm, FakeBitrix24, FakeMegaplan
from .crm_util import CLIENT, crm_config, make_router, route, steps

PATHS = {"amocrm": "/api/v4/contacts", "bitrix24": "/batch", "megaplan": "/search"}
SECRETS = {
    "amocrm": [FakeAmoCrm().long_lived],
    "bitrix24": [FakeBitrix24.CODE],
    "megaplan": [FakeMegaplan.PASSWORD],
}


def make_fake(name):
    if name == "amocrm":
        fake = FakeAmoCrm()
        fake.add_user(5550001, "Anna", "anna@example.ru")
        fake.add_contact(101, ["+79161234567"], 5550001)
    elif name == "bitrix24":
        fake = FakeBitrix24()
        fake.add_user("7", "Anna", inner="101")
        fake.add_entity("contact", 1, ["+79161234567"], "7")
    else:
        fake = FakeMegaplan()
        fake.add_employee(1000005, "Anna")
        fake.add_client("ContractorHuman", 1, ["+79161234567"], [("Employee", 1000005)])
    return fake


@pytest.fixture(params=["amocrm", "bitrix24", "megaplan"])
async def crm(request):
    fake = make_fake(request.param)
    await fake.start()
    yield request.param, fake
    await fake.stop()


async def started(tmp_path, store, name, fake, **section):
    cfg = crm_config(
        str(tmp_path / "icm.db"),
        {name: fake},
        sections={name: {"timeout_ms": 400, "breaker_failures": 100, **section}, "icmdb": {}},
        routing={"sources": [name, "icmdb"], "lookup_budget_ms": 1500},
    )
    router, sources = make_router(cfg, store)
    router.metrics = Metrics()
    for source, _ in sources:
        await source.start()
        if hasattr(source, "wait_ready"):
            await source.wait_ready(3)
    return router, sources


async def closed(sources):
    for source, _ in sources:
        await source.close()


@pytest.mark.parametrize(
    ("fault", "outcome", "detail"),
    [
        ("garbage", "error", "malformed JSON in an HTTP 200 response"),
        ("truncated", "error", "connection dropped (truncated response)"),
        ("huge", "error", "response too large (52428800 bytes > 2000000)"),
        ("huge-chunked", "error", "response too large (over 2000000 bytes)"),
        ("hang", "timeout", "no answer within 400 ms"),
    ],
)
async def test_a_misbehaving_crm_is_skipped_for_the_call(
    tmp_path, sqlite_store, crm, fault, outcome, detail, caplog
):
    name, fake = crm
    caplog.set_level(logging.DEBUG)
    await sqlite_store.learn(CLIENT, "104", time.time())
    router, sources = await started(tmp_path, sqlite_store, name, fake)
    try:
        fake.fault(fault, path=PATHS[name])
        started_at = time.perf_counter()
        decision = await route(router)
        elapsed = time.perf_counter() - started_at
    finally:
        await closed(sources)
    assert steps(decision) == [(name, outcome), ("icmdb", "answered")]
    assert decision.steps[0].detail == detail
    assert decision.manager == "104" and elapsed < 1.0
    assert_no_secret(name, caplog.text + repr(decision.as_dict()))


async def test_dropped_connection_is_retried_once_then_skipped(tmp_path, sqlite_store, crm):
    name, fake = crm
    await sqlite_store.learn(CLIENT, "104", time.time())
    router, sources = await started(tmp_path, sqlite_store, name, fake)
    try:
        fake.fault("drop", path=PATHS[name])
        once = await route(router)
        assert steps(once) == [(name, "answered")]  # a stale keep-alive connection
        fake.fault("drop", count=2, path=PATHS[name])
        await sqlite_store.delete(f"cache:{name}:{CLIENT}")
        twice = await route(router)
    finally:
        await closed(sources)
    assert steps(twice) == [(name, "error"), ("icmdb", "answered")]
    assert twice.steps[0].detail == "connection dropped"


async def test_errors_name_source_and_host_only(tmp_path, sqlite_store, crm, caplog):
    """A source error says which source, which host and what went wrong; no URL, no token,
    no webhook code, no password; phone numbers never become metric labels."""
    name, fake = crm
    caplog.set_level(logging.DEBUG)
    router, sources = await started(tmp_path, sqlite_store, name, fake)
    try:
        fake.fault("status", status=500, body={"error": "INTERNAL_SERVER_ERROR"}, path=PATHS[name])
        source = sources[0][0]
        with pytest.raises(Exception) as caught:
            await source.lookup(CLIENT)
        decision = await route(router, "+79031234567")
    finally:
        await closed(sources)
    message = str(caught.value)
    assert message.startswith(f"{name} (127.0.0.1): ") and "HTTP 500" in message
    assert_no_secret(name, message + caplog.text + repr(decision.as_dict()))
    metrics = router.metrics.render().decode()
    assert "9161234567" not in metrics and "9031234567" not in metrics


def assert_no_secret(name, text):
    for secret in SECRETS[name]:
        assert secret not in text
    assert "/rest/1/" not in text  # the webhook's path holds its code


RATE_LIMITED = {
    "amocrm": {"status": 429, "body": {"title": "Too Many Requests", "status": 429}},
    "bitrix24": {"status": 503, "body": {"error": "QUERY_LIMIT_EXCEEDED"}},
    "megaplan": {"status": 429, "body": {"meta": {"status": 429, "errors": []}, "data": None}},
}


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("garbage", SourceBadResponse),
        ("huge", SourceBadResponse),
        ("truncated", SourceConnectionError),
        ("status", SourceResponseError),
        ("rate-limited", SourceRateLimited),
        ("hang", SourceTimeout),
    ],
)
async def test_failures_are_typed(tmp_path, sqlite_store, crm, fault, kind):
    """Each kind of failure is its own SourceError subclass (like aiohttp's client
    errors), whatever the CRM; the HTTP status travels with a response error."""
    name, fake = crm
    _, sources = await started(tmp_path, sqlite_store, name, fake)
    try:
        if fault == "rate-limited":
            fake.fault("status", path=PATHS[name], **RATE_LIMITED[name])
        elif fault == "status":
            fake.fault("status", status=500, body={"error": "INTERNAL"}, path=PATHS[name])
        else:
            fake.fault(fault, path=PATHS[name])
        with pytest.raises(SourceError) as caught:
            await sources[0][0].lookup(CLIENT)
    finally:
        await closed(sources)
    assert type(caught.value) is kind
    if fault == "status":
        assert caught.value.status == 500
    if fault == "rate-limited":
        assert caught.value.status == RATE_LIMITED[name]["status"]
