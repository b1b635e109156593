"""Calls end to end with CRM sources: the simulated Asterisk runs the shipped dialplan,
the daemon asks a fake CRM over HTTP, the call reaches the CRM's responsible manager."""

import time

import pytest

from simpbx.pbx import Phone

from .conftest import until
from .crm_fakes import FakeAmoCrm, FakeBitrix24, FakeMegaplan
from .crm_util import CLIENT, crm_section


async def call(pbx, number="8 916 123-45-67"):
    placed = await pbx.call(number)
    assert placed.warnings == [], placed.warnings
    return placed


@pytest.fixture
async def crm(request):
    name = request.param
    if name == "amocrm":
        fake = FakeAmoCrm()
        fake.add_user(5550001, "Anna Petrova", "anna.crm@example.ru")
        fake.add_contact(101, ["+7 (916) 123-45-67"], 5550001)
        expected = "SIP/101"
    elif name == "bitrix24":
        fake = FakeBitrix24()
        fake.add_user("7", "Boris", inner="102")
        fake.add_entity("contact", 651, ["89161234567"], "7")
        expected = "SIP/102"
    else:
        fake = FakeMegaplan()
        fake.add_employee(1000005, "Vera", email="vera@example.ru")
        fake.add_client("ContractorHuman", 77, ["+79161234567"], [("Employee", 1000005)])
        expected = "SIP/103"
    await fake.start()
    yield name, fake, expected
    await fake.stop()


def config(make_config, pbx, name, fake, **routing):
    section, env = crm_section(name, fake)
    return make_config(
        pbx.port,
        environ=env,
        routing={"sources": [name, "icmdb"], "lookup_budget_ms": 1000, **routing},
        managers={
            "101": {"ids": {"amocrm": 5550001}},
            "103": {"email": "vera@example.ru"},
        },
        sources={name: section},
    )


@pytest.mark.parametrize("crm", ["amocrm", "bitrix24", "megaplan"], indirect=True)
async def test_a_call_reaches_the_crms_responsible_manager(pbx, make_config, start_daemon, crm):
    name, fake, expected = crm
    pbx.register("101", "102", "103")
    daemon = await start_daemon(config(make_config, pbx, name, fake))
    placed = await call(pbx)
    assert placed.status == "ANSWERED"
    assert placed.dials == [(expected, "ANSWER")]
    assert placed.variables["ICM_SOURCE"] == name
    assert placed.variables["ICM_MANAGER"] == expected.removeprefix("SIP/")
    await until(lambda: daemon.metrics.learned._value.get() == 1)
    # The second call from the number comes from the cache: no new CRM request.
    searches = len(fake.requests)
    assert (await call(pbx)).dials == [(expected, "ANSWER")]
    assert len(fake.requests) == searches
    metrics = daemon.metrics.render().decode()
    assert f'icm_source_cache_total{{result="hit",source="{name}"}} 1.0' in metrics
    assert "9161234567" not in metrics


@pytest.mark.parametrize("crm", ["amocrm", "bitrix24", "megaplan"], indirect=True)
async def test_crm_down_the_next_source_answers(pbx, make_config, start_daemon, crm):
    name, fake, _ = crm
    pbx.register("104", phone=Phone(answer_after=0.01))
    await fake.stop()  # nothing listens on its port any more
    daemon = await start_daemon(config(make_config, pbx, name, fake))
    await daemon.store.learn(CLIENT, "104", time.time())
    placed = await call(pbx)
    assert placed.dials == [("SIP/104", "ANSWER")]
    assert placed.variables["ICM_SOURCE"] == "icmdb"
    assert placed.variables["WAITFORCONDITIONSTATUS"] == "TRUE"  # within the dialplan's wait


@pytest.mark.parametrize("crm", ["amocrm"], indirect=True)
async def test_hanging_crm_in_parallel_with_the_history(pbx, make_config, start_daemon, crm):
    """The CRM hangs; with lookup = "parallel" the call still waits only for the CRM's
    own timeout, then the learned manager rings."""
    name, fake, _ = crm
    pbx.register("101")
    fake.fault("hang", count=10, path="/contacts")
    cfg = config(make_config, pbx, name, fake, lookup="parallel")
    cfg = cfg.model_copy(
        update={
            "sources": {
                **cfg.sources,
                name: cfg.sources[name].model_copy(update={"timeout_ms": 300}),
            }
        }
    )
    daemon = await start_daemon(cfg)
    await daemon.store.learn("+79031234567", "101", time.time())
    started = time.perf_counter()
    placed = await call(pbx, "+7 903 123-45-67")
    assert placed.dials == [("SIP/101", "ANSWER")]
    assert time.perf_counter() - started > 0.3  # the CRM's own timeout was waited out
    assert placed.variables["WAITFORCONDITIONSTATUS"] == "TRUE"  # within the dialplan's wait
