"""The rules' checks in the router, at a moment the test sets (no AMI: plain objects).
Every order of checks that changes the outcome is here; the same rules end to end
through the simulated Asterisk are in test_rules_e2e.py."""

import asyncio
from datetime import UTC, datetime

import pytest

from icm.config import from_dict
from icm.dialing import DialStrings
from icm.managers import Managers
from icm.model import Answer, Presence, RouteRequest, Status
from icm.router import Router
from icm.rules import Rules
from icm.sources import SourceSettings

CALLER = "+79161234567"
# 2026-12-07 is a Monday. The rules' zone is Moscow (UTC+3).
MON_NOON = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # 12:00 in Moscow
MON_QUIET = datetime(2026, 12, 7, 10, 30, tzinfo=UTC)  # 13:30 in Moscow
MON_NIGHT = datetime(2026, 12, 7, 18, 30, tzinfo=UTC)  # 21:30 in Moscow
SAT_NOON = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
HOLIDAY_NOON = datetime(2026, 12, 31, 9, 0, tzinfo=UTC)
LEAVE_NOON = datetime(2026, 12, 22, 9, 0, tzinfo=UTC)
WEEK = {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")}


class Source:
    name = "crm"

    def __init__(self, answer):
        self.answer = answer
        self.asked = 0

    async def lookup(self, number):
        self.asked += 1
        return self.answer


ANNA = Answer(extension="101")


def make_router(answer=ANNA, *, at=MON_NOON, presence=None, rules=None, **m):
    managers = {
        "101": {"name": "Anna", "deputies": ["102", "103"], "quiet": ["13:00-14:00"]},
        "102": {"name": "Boris"},
        "103": {"name": "Vera"},
        "104": {"name": "Gleb", "hours": {"mon": "09:00-18:00", "sat": "10:00-16:00"}},
    }
    for ext, extra in m.items():
        managers[ext.removeprefix("m")] |= extra
    config = from_dict(
        {
            "routing": {"area_code": "495"},
            "managers": managers,
            "dial": {"extension": "SIP/{ext}", "external": "SIP/trunk/{number}"},
            "rules": {
                "timezone": "Europe/Moscow",
                "holidays": ["2026-12-31"],
                "hours": WEEK,
                "vip": [
                    {"numbers": ["+7916555*"], "to": "104", "name": "Key"},
                    {"numbers": ["+74957654321"], "to": "101"},
                ],
                "blocked": ["+79160000666", "+7800*"],
                **(rules or {}),
            },
        },
        "test.toml",
        {},
        ami_secret=False,
    )
    numbers = config.numbers()
    states = presence or {}
    source = Source(answer)
    router = Router(
        settings=config.routing,
        sources=[(source, SourceSettings(timeout_ms=500))],
        numbers=numbers,
        managers=Managers.from_config(config, numbers),
        dial=DialStrings(config.dial, numbers),
        presence=lambda ext: states.get(ext, Presence.AVAILABLE),
        rules=Rules.from_config(config, numbers),
        clock=lambda: at,
    )
    router.source = source
    return router


async def route(router, number=CALLER):
    loop = asyncio.get_running_loop()
    return await router.route(RouteRequest("1", number, deadline=loop.time() + 1.0))


def outcomes(decision):
    return [(c.rule, c.outcome) for c in decision.checks]


async def test_at_work_the_manager_is_dialled_with_a_fallback_deputy():
    decision = await route(make_router())
    assert (decision.status, decision.dial, decision.rule) == (Status.DIAL, "SIP/101", "lookup")
    assert decision.fallback.extension == "102" and decision.fallback.dial == "SIP/102"
    assert decision.fallback.on == ("BUSY", "NOANSWER", "CHANUNAVAIL")
    assert outcomes(decision) == [
        ("blocked", "passed"),
        ("vip", "passed"),
        ("lookup", "found"),
        ("hours", "passed"),
        ("presence", "passed"),
        ("deputy", "passed"),
    ]


async def test_outside_hours_the_first_free_deputy_is_dialled():
    router = make_router(at=MON_NIGHT, m102={"hours": {"mon": "18:00-24:00"}})
    decision = await route(router)
    assert (decision.status, decision.dial, decision.manager, decision.deputy) == (
        Status.DIAL,
        "SIP/102",
        "101",
        "102",
    )
    assert decision.rule == "deputy" and "outside the default hours" in decision.reason


async def test_outside_hours_with_no_deputy_free_is_offhours():
    decision = await route(make_router(at=MON_NIGHT))
    assert (decision.status, decision.dial, decision.rule) == (Status.OFFHOURS, "", "hours")
    assert ("deputy", "none") in outcomes(decision)
    assert "102 outside the default hours" in decision.checks[-1].detail


@pytest.mark.parametrize(
    ("at", "why"),
    [(SAT_NOON, "no hours on sat"), (HOLIDAY_NOON, "holiday 2026-12-31")],
)
async def test_weekends_and_holidays_are_outside_hours(at, why):
    decision = await route(make_router(at=at, m101={"deputies": []}))
    assert decision.status is Status.OFFHOURS and why in decision.reason


async def test_a_managers_own_week_overrides_the_default():
    decision = await route(make_router(Answer(extension="104"), at=SAT_NOON))
    assert decision.status is Status.DIAL and decision.dial == "SIP/104"


async def test_leave_sends_his_calls_to_a_deputy_unless_switched_off():
    leave = [{"from": "2026-12-21", "to": "2027-01-08"}]
    decision = await route(make_router(at=LEAVE_NOON, m101={"leave": leave}))
    assert (decision.deputy, decision.dial) == ("102", "SIP/102")
    assert ("hours", "leave") in outcomes(decision)
    router = make_router(at=LEAVE_NOON, m101={"leave": leave, "deputy_when": ["away"]})
    decision = await route(router)
    assert (
        decision.status is Status.OFFHOURS and "on leave 2026-12-21..2027-01-08" in decision.reason
    )


@pytest.mark.parametrize(
    ("state", "mark"), [(Presence.OFFLINE, "offline"), (Presence.BUSY, "busy")]
)
async def test_offline_or_busy_manager_goes_to_a_deputy(state, mark):
    decision = await route(make_router(presence={"101": state}))
    assert (decision.status, decision.deputy, decision.rule) == (Status.DIAL, "102", "deputy")
    assert ("presence", mark) in outcomes(decision)
    router = make_router(presence={"101": state}, m101={"deputy_when": ["away"]})
    decision = await route(router)
    assert decision.status.value == mark.upper() and decision.rule == "presence"


async def test_a_busy_deputy_is_passed_over_for_the_next():
    states = {"101": Presence.OFFLINE, "102": Presence.BUSY}
    decision = await route(make_router(presence=states))
    assert decision.deputy == "103"
    decision = await route(make_router(presence={"102": Presence.BUSY}))
    assert decision.fallback.extension == "103"


async def test_deputy_when_chooses_the_fallback_statuses():
    router = make_router(m101={"deputy_when": ["noanswer"]})
    assert (await route(router)).fallback.on == ("NOANSWER",)
    router = make_router(m101={"deputy_when": ["away", "leave"]})
    assert (await route(router)).fallback is None


async def test_a_deputys_own_deputies_follow_his():
    router = make_router(
        presence={"101": Presence.OFFLINE, "102": Presence.BUSY, "103": Presence.BUSY},
        m101={"deputies": ["102"]},
        m102={"deputies": ["104"]},
        m104={"hours": None},
    )
    assert (await route(router)).deputy == "104"


async def test_a_blocked_caller_is_never_connected_nor_looked_up():
    router = make_router()
    for number in ("+79160000666", "8 800 555-35-35"):
        decision = await route(router, number)
        assert (decision.status, decision.dial, decision.rule) == (Status.BLOCKED, "", "blocked")
    assert router.source.asked == 0


async def test_a_vip_goes_to_his_manager_before_any_lookup():
    router = make_router()
    decision = await route(router, "+79165551234")
    assert (decision.status, decision.dial, decision.rule, decision.source) == (
        Status.DIAL,
        "SIP/104",
        "vip",
        "vip",
    )
    assert router.source.asked == 0


async def test_quiet_hours_let_only_his_vips_through():
    router = make_router(at=MON_QUIET, m101={"deputies": []})
    assert (await route(router)).status is Status.OFFHOURS
    decision = await route(router, "+74957654321")  # his VIP
    assert (decision.status, decision.dial) == (Status.DIAL, "SIP/101")
    # a VIP named for another manager goes to him
    router = make_router(
        at=MON_QUIET, m101={"deputies": []}, rules={"vip": [{"numbers": [CALLER], "to": "104"}]}
    )
    assert (await route(router)).dial == "SIP/104"


async def test_a_vip_with_no_target_passes_quiet_hours_of_whoever_is_found():
    router = make_router(
        at=MON_QUIET, m101={"deputies": []}, rules={"vip": [{"numbers": [CALLER]}]}
    )
    decision = await route(router)
    assert (decision.status, decision.dial, decision.rule) == (Status.DIAL, "SIP/101", "lookup")


async def test_a_source_saying_the_manager_is_not_at_work_is_one_more_away():
    router = make_router(Answer(extension="101", away="work day CLOSED"), m101={"deputies": []})
    decision = await route(router)
    assert decision.status is Status.OFFHOURS and "work day CLOSED" in decision.reason


# -- the order of the checks --------------------------------------------------------------


async def test_order_blocked_before_vip_blocks_a_vip_and_after_lets_him_through():
    rules = {"blocked": ["+7916555*"]}
    decision = await route(make_router(rules=rules), "+79165551234")
    assert decision.status is Status.BLOCKED
    rules["order"] = ["vip", "blocked", "lookup", "hours", "presence", "deputy"]
    decision = await route(make_router(rules=rules), "+79165551234")
    assert (decision.status, decision.dial) == (Status.DIAL, "SIP/104")
    assert ("blocked", "passed") in outcomes(decision)


async def test_order_lookup_before_vip_lets_the_source_win():
    decision = await route(make_router(), "+74957654321")
    assert (decision.rule, decision.dial) == ("vip", "SIP/101")
    order = ["blocked", "lookup", "vip", "hours", "presence", "deputy"]
    router = make_router(Answer(extension="103"), rules={"order": order})
    decision = await route(router, "+74957654321")
    assert (decision.rule, decision.dial) == ("lookup", "SIP/103")


async def test_order_hours_before_lookup_closes_the_line_without_asking_the_crm():
    order = ["blocked", "vip", "hours", "lookup", "presence", "deputy"]
    router = make_router(at=MON_NIGHT, rules={"order": order})
    decision = await route(router)
    assert (decision.status, decision.rule) == (Status.OFFHOURS, "hours")
    assert router.source.asked == 0
    router = make_router(at=MON_NIGHT)  # default order: asked, then away, no deputy free
    decision = await route(router)
    assert decision.status is Status.OFFHOURS and router.source.asked == 1
    # at work: the gate passes and the lookup runs
    router = make_router(rules={"order": order})
    assert (await route(router)).dial == "SIP/101" and router.source.asked == 1


async def test_order_hours_before_lookup_lets_a_vip_named_before_it_be_checked_on_his_own_hours():
    order = ["vip", "hours", "lookup", "presence", "deputy"]
    decision = await route(make_router(at=SAT_NOON, rules={"order": order}), "+79165551234")
    assert decision.dial == "SIP/104"  # 104 works on Saturdays


async def test_order_deputy_before_hours_or_presence_covers_no_absence():
    order = ["blocked", "vip", "lookup", "deputy", "hours", "presence"]
    decision = await route(make_router(at=MON_NIGHT, rules={"order": order}))
    assert (decision.status, decision.deputy) == (Status.OFFHOURS, "")
    decision = await route(make_router(presence={"101": Presence.BUSY}, rules={"order": order}))
    assert decision.status is Status.BUSY
    order = ["blocked", "vip", "lookup", "hours", "deputy", "presence"]
    router = make_router(presence={"101": Presence.BUSY}, rules={"order": order})
    assert (await route(router)).status is Status.BUSY  # away would be covered, busy not
    router = make_router(at=MON_NIGHT, rules={"order": order}, m102={"hours": None})
    router.rules.week = None  # no default week: 102 is always at work, 101 too
    assert (await route(router)).status is Status.DIAL


async def test_order_without_presence_dials_and_leaves_busy_to_the_fallback():
    order = ["blocked", "vip", "lookup", "hours", "deputy"]
    decision = await route(make_router(presence={"101": Presence.BUSY}, rules={"order": order}))
    assert (decision.status, decision.dial) == (Status.DIAL, "SIP/101")
    assert decision.fallback.extension == "102"


async def test_his_empty_week_means_any_hour_and_day_names_are_read_loosely():
    router = make_router(at=MON_NIGHT, m101={"hours": {}})
    assert (await route(router)).dial == "SIP/101"  # {}: no schedule of his own
    router = make_router(at=MON_NIGHT, m101={"hours": {"Monday": "20:00-24:00"}})
    assert (await route(router)).dial == "SIP/101"


async def test_a_vip_to_a_phone_number_is_dialled_outside():
    vip = [{"numbers": [CALLER], "to": "+7 903 111-22-33"}]
    decision = await route(make_router(at=MON_NIGHT, rules={"vip": vip}))
    assert (decision.status, decision.dial, decision.rule) == (
        Status.DIAL,
        "SIP/trunk/79031112233",
        "vip",
    )
    assert ("hours", "skipped") in outcomes(decision)
