"""The router's decisions, source by source and case by case (no AMI: plain objects)."""

import asyncio

import pytest

from icm.config import from_dict
from icm.dialing import DialStrings
from icm.managers import Managers
from icm.model import Answer, Presence, RouteRequest, Status
from icm.router import Router
from icm.sources import SourceError, SourceSettings


class StubSource:
    """A source answering what the test says, after ``delay`` seconds (or once ``gate``
    is set). ``log`` (shared by sources) records ("ask", name) and ("done", name)."""

    def __init__(
        self, name, answer=None, *, delay=0.0, error=None, timeout_ms=200, gate=None, log=None
    ):
        self.name = name
        self.answer = answer
        self.delay = delay
        self.error = error
        self.gate = gate
        self.log = log if log is not None else []
        self.settings = SourceSettings(timeout_ms=timeout_ms)
        self.asked = []
        self.cancelled = False

    async def lookup(self, number):
        self.asked.append(number)
        self.log.append(("ask", self.name))
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.log.append(("done", self.name))
        if self.error is not None:
            raise self.error
        return self.answer


def make_router(*sources, presence=None, **routing):
    config = from_dict(
        {
            "routing": {"area_code": "495", **routing},
            "managers": {
                "101": {"name": "Anna"},
                "102": {"name": "Boris", "mobiles": ["+79160000002", "89160000022"]},
                "100": {"name": "Director"},
            },
            "dial": {"extension": "SIP/{ext}", "external": "SIP/trunk/{national}"},
        },
        "test.toml",
        {},
        ami_secret=False,
    )
    numbers = config.numbers()
    states = presence or {}
    return Router(
        settings=config.routing,
        sources=[(s, s.settings) for s in sources],
        numbers=numbers,
        managers=Managers.from_config(config, numbers),
        dial=DialStrings(config.dial, numbers),
        presence=lambda ext: states.get(ext, Presence.AVAILABLE),
    )


async def route(router, number="8 916 123-45-67", budget=1.0):
    loop = asyncio.get_running_loop()
    return await router.route(RouteRequest("1", number, deadline=loop.time() + budget))


async def test_known_caller_is_dialled():
    decision = await route(make_router(StubSource("a", Answer(extension="101", detail="d"))))
    assert (decision.status, decision.dial, decision.manager, decision.source) == (
        Status.DIAL,
        "SIP/101",
        "101",
        "a",
    )
    assert decision.number == "+79161234567"
    assert decision.manager_name == "Anna"
    assert [(s.source, s.outcome) for s in decision.steps] == [("a", "answered")]


async def test_first_answer_wins_and_later_sources_are_not_asked():
    first = StubSource("first", Answer(extension="101"))
    second = StubSource("second", Answer(extension="102"))
    decision = await route(make_router(first, second))
    assert decision.source == "first" and second.asked == []


async def test_no_answer_errors_and_timeouts_fall_through():
    sources = [
        StubSource("silent"),
        StubSource("broken", error=SourceError("broken", "HTTP 500", "crm.example")),
        StubSource("slow", Answer(extension="102"), delay=1.0, timeout_ms=50),
        StubSource("buggy", error=ZeroDivisionError()),
        StubSource("good", Answer(extension="101")),
    ]
    decision = await route(make_router(*sources))
    assert decision.source == "good"
    assert [(s.source, s.outcome) for s in decision.steps] == [
        ("silent", "no-answer"),
        ("broken", "error"),
        ("slow", "timeout"),
        ("buggy", "error"),
        ("good", "answered"),
    ]
    assert decision.steps[1].detail == "HTTP 500"
    assert decision.steps[3].detail == "unexpected ZeroDivisionError"


async def test_budget_cuts_the_chain_and_gives_timeout():
    slow = StubSource("slow", Answer(extension="101"), delay=5, timeout_ms=5000)
    never = StubSource("never", Answer(extension="102"))
    decision = await route(make_router(slow, never), budget=0.1)
    assert slow.cancelled  # cut at the budget, not waited for
    assert decision.status is Status.TIMEOUT
    assert [(s.source, s.outcome) for s in decision.steps] == [("slow", "cut"), ("never", "cut")]
    assert never.asked == []


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (Answer(extension="100"), "exception"),
        (Answer(extension="555"), "invalid"),
        (Answer(extension="101,60,tT"), "invalid"),
        (Answer(number="not a number"), "invalid"),
        (Answer(number="+7 916 000-00-99"), "answered"),
    ],
)
async def test_answers_are_checked_before_they_are_trusted(answer, outcome):
    fallback = StubSource("fallback", Answer(extension="101"))
    decision = await route(make_router(StubSource("a", answer), fallback, exceptions=["100"]))
    assert decision.steps[0].outcome == outcome
    if outcome == "answered":
        assert decision.dial == "SIP/trunk/89160000099" and decision.source == "a"
    else:
        assert decision.source == "fallback" and decision.dial == "SIP/101"


async def test_unknown_caller_goes_back_or_to_the_default_number():
    decision = await route(make_router(StubSource("a")))
    assert (decision.status, decision.dial) == (Status.NOTFOUND, "")
    decision = await route(make_router(StubSource("a"), default_number="600"))
    assert (decision.status, decision.dial) == (Status.NOTFOUND, "SIP/600")
    decision = await route(make_router(StubSource("a"), default_number="8 495 111-22-33"))
    assert (decision.status, decision.dial) == (Status.NOTFOUND, "SIP/trunk/84951112233")


async def test_manager_without_extension_is_not_connected():
    crm = StubSource("crm", Answer(user="5550001", name="Olga"))
    decision = await route(make_router(crm))
    assert (decision.status, decision.dial, decision.manager) == (
        Status.NOTCONNECTED,
        "",
        "5550001",
    )
    decision = await route(make_router(crm, default_number="600"))
    assert (decision.status, decision.dial) == (Status.NOTCONNECTED, "SIP/600")


@pytest.mark.parametrize(
    ("presence", "ring_mobiles", "status", "dial"),
    [
        (Presence.AVAILABLE, False, Status.DIAL, "SIP/102"),
        (Presence.UNKNOWN, False, Status.DIAL, "SIP/102"),
        (Presence.OFFLINE, False, Status.OFFLINE, ""),
        (Presence.BUSY, False, Status.BUSY, ""),
        (
            Presence.AVAILABLE,
            True,
            Status.DIAL,
            "SIP/102&SIP/trunk/89160000002&SIP/trunk/89160000022",
        ),
        (Presence.OFFLINE, True, Status.DIAL, "SIP/trunk/89160000002&SIP/trunk/89160000022"),
        (Presence.BUSY, True, Status.BUSY, ""),
    ],
)
async def test_presence_and_mobiles(presence, ring_mobiles, status, dial):
    router = make_router(
        StubSource("a", Answer(extension="102")),
        presence={"102": presence},
        ring_mobiles=ring_mobiles,
    )
    decision = await route(router)
    assert (decision.status, decision.dial) == (status, dial)


async def test_ring_mobiles_without_mobiles_is_extension_only():
    router = make_router(
        StubSource("a", Answer(extension="101")),
        ring_mobiles=True,
        presence={"101": Presence.OFFLINE},
    )
    decision = await route(router)
    assert (decision.status, decision.dial) == (Status.OFFLINE, "")


async def test_source_mobiles_ring_too():
    router = make_router(
        StubSource("a", Answer(extension="101", mobiles=("+79035551111",))), ring_mobiles=True
    )
    assert (await route(router)).dial == "SIP/101&SIP/trunk/89035551111"


@pytest.mark.parametrize("caller", ["anonymous", "", "<unknown>", "abc", "123", "+7"])
async def test_anonymous_and_junk_callers_skip_the_lookup(caller):
    source = StubSource("a", Answer(extension="101"))
    decision = await route(make_router(source), number=caller)
    assert decision.status is Status.ANONYMOUS and decision.dial == ""
    assert source.asked == []


async def test_local_number_gets_the_area_code():
    source = StubSource("a", Answer(extension="101"))
    await route(make_router(source), number="1234567")
    assert source.asked == ["+74951234567"]


@pytest.mark.parametrize("caller", ["+7 916 000-00-02", "89160000022"])
async def test_a_managers_own_mobile_is_not_a_client(caller):
    source = StubSource("a", Answer(extension="101"))
    decision = await route(make_router(source), number=caller)
    assert decision.status is Status.EXCEPTION and "102" in decision.reason
    assert source.asked == []


async def test_exception_number_calling_is_not_routed():
    source = StubSource("a", Answer(extension="101"))
    decision = await route(make_router(source, exceptions=["+79161234567"]))
    assert decision.status is Status.EXCEPTION and source.asked == []


async def test_parallel_decides_once_every_source_above_settled():
    log = []
    gates = [asyncio.Event() for _ in range(3)]
    first = StubSource("first", None, gate=gates[0], log=log)
    second = StubSource("second", Answer(extension="101"), gate=gates[1], log=log)
    third = StubSource("third", Answer(extension="102"), gate=gates[2], log=log)
    routed = asyncio.create_task(route(make_router(first, second, third, lookup="parallel")))
    while len(log) < 3:
        await asyncio.sleep(0)
    assert log == [("ask", "first"), ("ask", "second"), ("ask", "third")]  # all at once
    for gate, source in zip(reversed(gates), (third, second, first), strict=True):
        gate.set()  # the lowest answers first, the highest last
        while ("done", source.name) not in log:
            await asyncio.sleep(0)
    decision = await routed
    assert decision.source == "second" and decision.dial == "SIP/101"
    assert [(s.source, s.outcome) for s in decision.steps] == [
        ("first", "no-answer"),
        ("second", "answered"),
        ("third", "not-needed"),
    ]
    assert decision.steps[2].detail == "a source above answered first; it had said: answered"
    assert decision.steps[0].ms >= decision.steps[1].ms  # each its own time, not a sum
    assert first.asked == second.asked == third.asked == ["+79161234567"]


async def test_parallel_higher_source_wins_even_when_slower():
    slow = StubSource("slow", Answer(extension="101"), delay=0.1)
    fast = StubSource("fast", Answer(extension="102"), delay=0.0)
    decision = await route(make_router(slow, fast, lookup="parallel"))
    assert decision.source == "slow"


async def test_parallel_skips_failures_and_cancels_what_is_not_needed():
    broken = StubSource("broken", error=SourceError("broken", "HTTP 500"))
    good = StubSource("good", Answer(extension="101"), delay=0.02)
    hanging = StubSource("hanging", Answer(extension="102"), delay=10, timeout_ms=5000)
    decision = await route(make_router(broken, good, hanging, lookup="parallel"))
    assert ("done", "hanging") not in hanging.log  # decided without waiting for it
    for _ in range(5):  # its cancellation reaches it on the loop's next turns
        await asyncio.sleep(0)
    assert hanging.cancelled
    assert [(s.source, s.outcome) for s in decision.steps] == [
        ("broken", "error"),
        ("good", "answered"),
        ("hanging", "not-needed"),
    ]


async def test_parallel_budget_cut_gives_timeout():
    slow = StubSource("slow", Answer(extension="101"), delay=5, timeout_ms=5000)
    other = StubSource("other", None, delay=5, timeout_ms=5000)
    decision = await route(make_router(slow, other, lookup="parallel"), budget=0.1)
    assert decision.status is Status.TIMEOUT
    assert [(s.source, s.outcome) for s in decision.steps] == [("slow", "cut"), ("other", "cut")]


async def test_crm_user_is_mapped_to_his_extension_and_inactive_is_no_answer():
    config = from_dict(
        {
            "managers": {
                "101": {"name": "Anna", "email": "anna@example.ru", "ids": {"icmdb": 77}},
                "102": {"name": "Boris"},
            }
        },
        "test.toml",
        {},
        ami_secret=False,
    )
    numbers = config.numbers()

    def router_for(*sources):
        return Router(
            settings=config.routing,
            sources=[(s, s.settings) for s in sources],
            numbers=numbers,
            managers=Managers.from_config(config, numbers),
            dial=DialStrings(config.dial, numbers),
            presence=lambda ext: Presence.AVAILABLE,
        )

    by_id = await route(router_for(StubSource("icmdb", Answer(user="77"))))
    assert (by_id.status, by_id.manager) == (Status.DIAL, "101")
    by_mail = await route(router_for(StubSource("x", Answer(user="5", email="ANNA@example.ru"))))
    assert by_mail.manager == "101"
    wrong_source = await route(router_for(StubSource("other", Answer(user="77"))))
    assert wrong_source.status is Status.NOTCONNECTED
    inactive = StubSource("x", Answer(user="77", email="anna@example.ru", active=False))
    fallback = StubSource("y", Answer(extension="102"))
    decision = await route(router_for(inactive, fallback))
    assert [(s.source, s.outcome) for s in decision.steps] == [
        ("x", "inactive"),
        ("y", "answered"),
    ]
    # An extension the CRM gives that is no manager's, but a mapped user: the mapping wins.
    mapped = await route(router_for(StubSource("icmdb", Answer(extension="555", user="77"))))
    assert mapped.manager == "101"
