"""The ICM database learns from calls seen on AMI (no ICM request involved)."""

import asyncio

import pytest

from .conftest import until

CLIENT = "+79161234567"


@pytest.fixture
async def icm(pbx, make_config, start_daemon):
    pbx.register("100", "101", "102", "104", "105")
    return await start_daemon(
        make_config(
            pbx.port, routing={"exceptions": ["100"]}, sources={"icmdb": {"min_talk_s": 0.1}}
        )
    )


async def learned(icm, number=CLIENT):
    await asyncio.sleep(0.05)  # the learner writes in the background
    binding = await icm.store.binding(number)
    return None if binding is None else binding.target


async def test_outbound_answered_call_is_learned(pbx, icm):
    await pbx.outbound("102", "89161234567", talk=0.15)
    await until(lambda: icm.metrics.learned._value.get() == 1)
    binding = await icm.store.binding(CLIENT)
    assert (binding.target, binding.pinned) == ("102", False)
    assert binding.note.startswith("outbound call")


async def test_outbound_unanswered_call_is_not_learned(pbx, icm):
    await pbx.outbound("102", "89161234567", answer=False)
    assert await learned(icm) is None


async def test_short_call_is_not_learned(pbx, icm):
    await pbx.outbound("102", "89161234567", talk=0.02)
    assert await learned(icm) is None


async def test_inbound_call_answered_through_icm_is_learned(pbx, make_config, start_daemon):
    pbx.register("101")
    pbx.phones["SIP/101"].talk = 0.15
    daemon = await start_daemon(
        make_config(
            pbx.port, routing={"default_number": "101"}, sources={"icmdb": {"min_talk_s": 0.1}}
        )
    )
    first = await pbx.call("89161234567")
    assert first.status == "ANSWERED" and first.variables.get("ICM_SOURCE", "") == ""
    await until(lambda: daemon.metrics.learned._value.get() == 1)
    second = await pbx.call("89161234567")
    assert second.variables["ICM_SOURCE"] == "icmdb" and second.dials == [("SIP/101", "ANSWER")]


async def test_after_a_transfer_the_last_manager_is_learned(pbx, icm):
    await pbx.transfer_call("89161234567", "101", "104", talk=0.15)
    assert await learned(icm) == "104"


async def test_a_short_last_leg_leaves_the_earlier_manager(pbx, icm):
    await pbx.transfer_call("89161234567", "101", "104", talk=0.15, second_talk=0.02)
    assert await learned(icm) == "101"


async def test_the_last_conversation_wins(pbx, icm):
    await pbx.outbound("101", "89161234567", talk=0.15)
    await pbx.outbound("102", "+7 916 123-45-67", talk=0.15)
    assert await learned(icm) == "102"


async def test_exception_extension_is_not_learned(pbx, icm):
    await pbx.outbound("100", "89161234567", talk=0.15)
    assert await learned(icm) is None


async def test_extension_that_is_not_a_manager_is_not_learned(pbx, icm):
    await pbx.outbound("105", "89161234567", talk=0.15)
    assert await learned(icm) is None


async def test_managers_own_mobile_is_not_learned(pbx, icm):
    await pbx.outbound("101", "+79160000003", talk=0.15)  # Vera's mobile (manager 103)
    assert await learned(icm, "+79160000003") is None


async def test_extension_ranges_are_learned(pbx, make_config, start_daemon):
    pbx.register("105")
    daemon = await start_daemon(
        make_config(
            pbx.port, routing={"extensions": ["105-110"]}, sources={"icmdb": {"min_talk_s": 0.1}}
        )
    )
    await pbx.outbound("105", "89161234567", talk=0.15)
    assert await learned(daemon) == "105"


async def test_learning_can_be_switched_off(pbx, make_config, start_daemon):
    pbx.register("101")
    daemon = await start_daemon(make_config(pbx.port, sources={"icmdb": {"learn": False}}))
    await pbx.outbound("101", "89161234567", talk=0.15)
    assert await learned(daemon) is None


async def test_pinned_binding_wins_over_learned(pbx, icm):
    await pbx.outbound("101", "89161234567", talk=0.15)
    await icm.store.pin(CLIENT, "102", "VIP")
    placed = await pbx.call("89161234567")
    assert placed.dials == [("SIP/102", "ANSWER")]
