"""The administrator's rules end to end: the simulated Asterisk runs the shipped dialplan
and the example scenario unchanged against a real daemon over TCP AMI, with the daemon's
clock set by the test (nothing waits for a time of day). Every order of checks that
changes where a call goes is in test_rules.py; the orders here are those that change
which dial the dialplan makes."""

import time
from datetime import UTC, datetime

import pytest

from simpbx.pbx import Phone

from .conftest import until

CLIENT = "+79161234567"
MON_NOON = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # Monday 12:00 in Moscow
MON_QUIET = datetime(2026, 12, 7, 10, 30, tzinfo=UTC)  # 13:30: 101's quiet hours
MON_NIGHT = datetime(2026, 12, 7, 18, 30, tzinfo=UTC)  # 21:30
LEAVE_NOON = datetime(2026, 12, 22, 9, 0, tzinfo=UTC)
WEEK = {d: "09:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")}


class Clock:
    def __init__(self, at):
        self.at = at

    def __call__(self):
        return self.at


async def call(pbx, number="8 916 123-45-67", **kwargs):
    placed = await pbx.call(number, **kwargs)
    assert placed.warnings == [], placed.warnings
    return placed


def rules_config(make_config, pbx, *, rules=None, **managers):
    base = {
        "101": {"deputies": ["102", "103"], "quiet": ["13:00-14:00"]},
        "102": {"hours": {"mon": "09:00-24:00"}},
        "104": {"hours": {"mon": "00:00-24:00"}},
    }
    for ext, extra in managers.items():
        base[ext.removeprefix("m")] = base.get(ext.removeprefix("m"), {}) | extra
    return make_config(
        pbx.port,
        managers=base,
        rules={
            "timezone": "Europe/Moscow",
            "hours": WEEK,
            "vip": [{"numbers": ["+7495765*"], "to": "101"}],
            "blocked": ["+79160000666"],
            **(rules or {}),
        },
    )


@pytest.fixture
async def icm(pbx, make_config, start_daemon):
    """Managers 101-103 answer; 104 never does. 101's deputies: 102, then 103."""
    pbx.register("101", "102", "103")
    pbx.register("104", phone=Phone(answer_after=None))
    clock = Clock(MON_NOON)
    daemon = await start_daemon(rules_config(make_config, pbx), clock=clock)
    daemon.test_clock = clock
    await daemon.store.learn(CLIENT, "101", time.time())
    return daemon


async def test_at_work_the_manager_answers_and_no_deputy_is_involved(pbx, icm):
    placed = await call(pbx)
    assert (placed.status, placed.dials) == ("ANSWERED", [("SIP/101", "ANSWER")])
    assert placed.variables["ICM_DEPUTY"] == ""
    assert placed.result()["ICMDeputy"] == ""


async def test_outside_hours_the_deputy_is_dialled_directly(pbx, icm):
    icm.test_clock.at = MON_NIGHT
    placed = await call(pbx)
    assert (placed.status, placed.dials) == ("ANSWERED", [("SIP/102", "ANSWER")])
    assert (placed.variables["ICM_MANAGER"], placed.variables["ICM_DEPUTY"]) == ("101", "102")
    assert placed.result()["ICMDeputy"] == "102"


async def test_outside_hours_with_no_deputy_at_work_is_offhours(pbx, icm):
    icm.test_clock.at = datetime(2026, 12, 7, 21, 30, tzinfo=UTC)  # 00:30 on Tuesday
    placed = await call(pbx)
    assert (placed.status, placed.dials) == ("OFFHOURS", [])
    assert placed.variables["ICM_MANAGER"] == "101"
    assert placed.reached == [("Playback", ["ss-noservice"])]
    assert placed.result()["ICMStatus"] == "OFFHOURS"


async def test_on_leave_his_deputy_takes_the_call(pbx, make_config, start_daemon):
    pbx.register("101", "102", "103")
    config = rules_config(
        make_config, pbx, m101={"leave": [{"from": "2026-12-21", "to": "2027-01-08"}]}
    )
    daemon = await start_daemon(config, clock=Clock(LEAVE_NOON))
    await daemon.store.learn(CLIENT, "101", time.time())
    placed = await call(pbx)
    # A Tuesday: 102 works on Mondays only, so the next deputy, 103, takes the call.
    assert placed.dials == [("SIP/103", "ANSWER")] and placed.variables["ICM_DEPUTY"] == "103"


@pytest.mark.parametrize(("state", "mark"), [("UNAVAILABLE", "offline"), ("INUSE", "busy")])
async def test_offline_or_busy_manager_goes_straight_to_the_deputy(pbx, icm, state, mark):
    pbx.set_device("SIP/101", state)
    await until(lambda: icm.presence.state("101").value == mark)
    placed = await call(pbx)
    assert (placed.status, placed.dials) == ("ANSWERED", [("SIP/102", "ANSWER")])
    assert placed.variables["ICM_DEPUTY"] == "102"


async def test_a_busy_deputy_is_passed_over(pbx, icm):
    pbx.set_device("SIP/101", "UNAVAILABLE")
    pbx.set_device("SIP/102", "INUSE")
    await until(lambda: icm.presence.state("102").value == "busy")
    placed = await call(pbx)
    assert placed.dials == [("SIP/103", "ANSWER")] and placed.variables["ICM_DEPUTY"] == "103"


async def test_busy_at_dial_time_falls_to_the_deputy_in_the_same_call(pbx, icm):
    # The daemon has not heard the phone is busy (no device state event): Dial says so
    # (BUSY: the phone refuses, 486; one merely in use would ring, call waiting).
    pbx.devices["SIP/101"] = "BUSY"
    placed = await call(pbx)
    assert placed.dials == [("SIP/101", "BUSY"), ("SIP/102", "ANSWER")]
    assert (placed.status, placed.variables["ICM_DEPUTY"]) == ("ANSWERED", "102")
    assert placed.result()["ICMDeputy"] == "102"


async def test_no_answer_falls_to_the_deputy_in_the_same_call(pbx, make_config, start_daemon):
    pbx.register("102", "103")
    pbx.register("104", phone=Phone(answer_after=None))
    config = rules_config(make_config, pbx, m104={"deputies": ["102"]})
    config = config.model_copy(
        update={"routing": config.routing.model_copy(update={"dial_timeout_s": 1})}
    )
    daemon = await start_daemon(config, clock=Clock(MON_NOON))
    await daemon.store.learn(CLIENT, "104", time.time())
    placed = await call(pbx)
    assert placed.dials == [("SIP/104", "NOANSWER"), ("SIP/102", "ANSWER")]
    assert (placed.status, placed.variables["ICM_MANAGER"]) == ("ANSWERED", "104")
    assert placed.variables["ICM_DEPUTY"] == "102"


async def test_deputy_when_without_noanswer_leaves_no_answer_to_the_scenario(
    pbx, make_config, start_daemon
):
    pbx.register("102")
    pbx.register("104", phone=Phone(answer_after=None))
    config = rules_config(
        make_config, pbx, m104={"deputies": ["102"], "deputy_when": ["away", "busy"]}
    )
    config = config.model_copy(
        update={"routing": config.routing.model_copy(update={"dial_timeout_s": 1})}
    )
    daemon = await start_daemon(config, clock=Clock(MON_NOON))
    await daemon.store.learn(CLIENT, "104", time.time())
    placed = await call(pbx)
    assert placed.dials == [("SIP/104", "NOANSWER")]
    assert (placed.status, placed.variables["ICM_DEPUTY"]) == ("NOANSWER", "")
    assert placed.reached == [("Queue", ["sales"])]


async def test_a_deputy_who_does_not_answer_either_ends_with_his_status(
    pbx, make_config, start_daemon
):
    pbx.register("101", "103")
    pbx.register("102", phone=Phone(answer_after=None))
    config = rules_config(make_config, pbx)
    config = config.model_copy(
        update={"routing": config.routing.model_copy(update={"dial_timeout_s": 1})}
    )
    daemon = await start_daemon(config, clock=Clock(MON_NOON))
    await daemon.store.learn(CLIENT, "101", time.time())
    pbx.devices["SIP/101"] = "BUSY"  # refuses at dial time; the daemon has not heard
    placed = await call(pbx)
    assert placed.dials == [("SIP/101", "BUSY"), ("SIP/102", "NOANSWER")]  # one fallback
    assert (placed.status, placed.variables["ICM_DIALSTATUS"]) == ("NOANSWER", "NOANSWER")
    assert placed.variables["ICM_DEPUTY"] == "102"
    assert placed.reached == [("Queue", ["sales"])]


async def test_a_blocked_caller_is_never_connected(pbx, icm):
    placed = await call(pbx, "+79160000666")
    assert (placed.status, placed.dials, placed.reached) == ("BLOCKED", [], [])
    assert placed.result()["ICMStatus"] == "BLOCKED"


async def test_quiet_hours_let_only_his_vip_through(pbx, icm):
    icm.test_clock.at = MON_QUIET
    await icm.store.learn("+74957650001", "101", time.time())
    placed = await call(pbx)  # an ordinary client: 101 is quiet, his deputy answers
    assert placed.dials == [("SIP/102", "ANSWER")]
    placed = await call(pbx, "+74957650001")  # a VIP of his: 101 rings
    assert placed.dials == [("SIP/101", "ANSWER")]
    assert (placed.variables["ICM_SOURCE"], placed.variables["ICM_DEPUTY"]) == ("vip", "")


async def test_a_vip_is_routed_before_any_lookup(pbx, icm):
    placed = await call(pbx, "+74957659999")  # nobody learned this number
    assert (placed.status, placed.dials) == ("ANSWERED", [("SIP/101", "ANSWER")])


@pytest.mark.parametrize(
    ("order", "dials", "status"),
    [
        # The default: the hours rule marks 101 away, then his deputy is dialled.
        (["blocked", "vip", "lookup", "hours", "presence", "deputy"], ["SIP/102"], "ANSWERED"),
        # Deputies checked before the hours: nobody covers the absence.
        (["blocked", "vip", "lookup", "deputy", "hours", "presence"], [], "OFFHOURS"),
        # The hours before the lookup: the company is closed (no manager known yet).
        (["blocked", "vip", "hours", "lookup", "presence", "deputy"], [], "OFFHOURS"),
        # No hours rule at all: he is dialled, whatever the time.
        (["blocked", "vip", "lookup", "presence", "deputy"], ["SIP/101"], "ANSWERED"),
    ],
)
async def test_the_order_of_checks_at_night(pbx, make_config, start_daemon, order, dials, status):
    pbx.register("101", "102", "103")
    config = rules_config(make_config, pbx, rules={"order": order})
    daemon = await start_daemon(config, clock=Clock(MON_NIGHT))
    await daemon.store.learn(CLIENT, "101", time.time())
    placed = await call(pbx)
    assert ([d for d, _ in placed.dials], placed.status) == (dials, status)


@pytest.mark.parametrize(
    ("order", "status", "dials"),
    [
        (["blocked", "vip", "lookup", "hours", "presence", "deputy"], "BLOCKED", []),
        (["vip", "blocked", "lookup", "hours", "presence", "deputy"], "ANSWERED", ["SIP/101"]),
    ],
)
async def test_the_order_of_blocked_and_vip(pbx, make_config, start_daemon, order, status, dials):
    pbx.register("101", "102", "103")
    rules = {"order": order, "blocked": ["+7495765*"]}
    daemon = await start_daemon(rules_config(make_config, pbx, rules=rules), clock=Clock(MON_NOON))
    assert daemon.snapshot.rules.order == tuple(order)
    placed = await call(pbx, "+74957650001")
    assert (placed.status, [d for d, _ in placed.dials]) == (status, dials)


async def test_without_presence_in_the_order_busy_is_found_by_dialling(
    pbx, make_config, start_daemon
):
    pbx.register("101", "102", "103")
    order = ["blocked", "vip", "lookup", "hours", "deputy"]
    daemon = await start_daemon(
        rules_config(make_config, pbx, rules={"order": order}), clock=Clock(MON_NOON)
    )
    await daemon.store.learn(CLIENT, "101", time.time())
    pbx.set_device("SIP/101", "BUSY")  # DND: the phone refuses (486)
    await until(lambda: daemon.presence.state("101").value == "busy")
    placed = await call(pbx)
    assert placed.dials == [("SIP/101", "BUSY"), ("SIP/102", "ANSWER")]


# -- learning, reload, metrics ------------------------------------------------------------


@pytest.mark.parametrize("fallback", [False, True])
async def test_a_deputys_conversation_does_not_become_the_binding(pbx, icm, fallback):
    if fallback:
        pbx.devices["SIP/101"] = "BUSY"  # busy found by dialling: the fallback deputy
    else:
        icm.test_clock.at = MON_NIGHT  # away: the deputy dialled directly
    placed = await call(pbx)
    assert placed.status == "ANSWERED" and placed.variables["ICM_DEPUTY"] == "102"
    await until(lambda: icm.learner.deputy_skipped == 1)
    assert icm.metrics.deputy_not_learned._value.get() == 1
    assert (await icm.store.binding(CLIENT)).target == "101"
    assert icm.metrics.learned._value.get() == 0


async def test_deputy_learns_lets_his_conversation_count(pbx, make_config, start_daemon):
    pbx.register("101", "102", "103")
    config = rules_config(make_config, pbx, rules={"deputy_learns": True})
    daemon = await start_daemon(config, clock=Clock(MON_NIGHT))
    await daemon.store.learn(CLIENT, "101", time.time() - 10)
    assert (await call(pbx)).variables["ICM_DEPUTY"] == "102"
    await until(lambda: daemon.metrics.learned._value.get() == 1)
    assert (await daemon.store.binding(CLIENT)).target == "102"
    assert daemon.learner.deputy_skipped == 0


async def test_reload_applies_the_rules(pbx, make_config, start_daemon, tmp_path):
    from icm.config import load

    pbx.register("101", "102", "103")
    path = tmp_path / "rules.toml"

    def write(extra):
        path.write_text(
            f"""
[ami]
port = {pbx.port}
[routing]
area_code = "495"
[dial]
extension = "SIP/{{ext}}"
external = "SIP/trunk/{{number}}"
[store]
url = "{tmp_path / "icm.db"}"
[http]
listen = "127.0.0.1:0"
[managers.101]
deputies = ["102"]
{extra}
"""
        )

    from tests.conftest import SECRET_ENV

    write('[managers.102]\n[rules]\ntimezone = "Europe/Moscow"')
    clock = Clock(MON_NIGHT)
    daemon = await start_daemon(load(path, SECRET_ENV), clock=clock, environ=SECRET_ENV)
    await daemon.store.learn(CLIENT, "101", time.time())
    assert (await call(pbx)).dials == [("SIP/101", "ANSWER")]  # no hours: always at work
    write(
        '[managers.102]\nhours = { mon = "00:00-24:00" }\n[rules]\ntimezone = "Europe/Moscow"\n'
        'hours = { mon = "09:00-18:00" }\nblocked = ["+79160000666"]'
    )
    assert await daemon.reload() == []
    assert (await call(pbx)).dials == [("SIP/102", "ANSWER")]  # 101 away now: his deputy
    assert (await call(pbx, "+79160000666")).status == "BLOCKED"
    write('[managers.102]\ndeputies = ["101"]')  # a loop: refused, the rules stay
    assert await daemon.reload() == [
        f"{path}: managers.101.deputies: a loop of deputies (101 -> 102 -> 101) "
        "(expected each chain of deputies to end)"
    ]
    assert (await call(pbx, "+79160000666")).status == "BLOCKED"


async def test_decisions_are_counted_by_rule_without_numbers(pbx, icm):
    await call(pbx, "+79160000666")
    await call(pbx)
    icm.test_clock.at = MON_NIGHT
    await call(pbx)
    metrics = icm.metrics
    assert metrics.rule_decisions.labels("blocked", "BLOCKED")._value.get() == 1
    assert metrics.rule_decisions.labels("lookup", "DIAL")._value.get() == 1
    assert metrics.rule_decisions.labels("deputy", "DIAL")._value.get() == 1
    text = metrics.render().decode()
    assert "icm_rule_decisions_total" in text
    assert "7916" not in "".join(line for line in text.splitlines() if "rule" in line)


async def test_a_holiday_is_outside_hours(pbx, make_config, start_daemon):
    pbx.register("101", "102", "103")
    config = rules_config(make_config, pbx, rules={"holidays": ["2026-12-07"]})
    daemon = await start_daemon(config, clock=Clock(MON_NOON))
    await daemon.store.learn(CLIENT, "101", time.time())
    placed = await call(pbx)  # a holiday for everyone, deputies too
    assert (placed.status, placed.dials) == ("OFFHOURS", [])


@pytest.mark.parametrize(
    ("order", "dials"),
    [
        (["blocked", "vip", "lookup", "hours", "presence", "deputy"], ["SIP/101"]),  # the VIP's
        (["blocked", "lookup", "vip", "hours", "presence", "deputy"], ["SIP/103"]),  # learned
    ],
)
async def test_the_order_of_vip_and_lookup(pbx, make_config, start_daemon, order, dials):
    pbx.register("101", "102", "103")
    daemon = await start_daemon(
        rules_config(make_config, pbx, rules={"order": order}), clock=Clock(MON_NOON)
    )
    await daemon.store.learn("+74957650001", "103", time.time())
    placed = await call(pbx, "+74957650001")
    assert [d for d, _ in placed.dials] == dials


@pytest.mark.parametrize(
    ("order", "dials", "status"),
    [
        (["blocked", "vip", "lookup", "hours", "presence", "deputy"], ["SIP/102"], "ANSWERED"),
        (["blocked", "vip", "lookup", "hours", "deputy", "presence"], [], "BUSY"),
    ],
)
async def test_the_order_of_presence_and_deputy(
    pbx, make_config, start_daemon, order, dials, status
):
    pbx.register("101", "102", "103")
    daemon = await start_daemon(
        rules_config(make_config, pbx, rules={"order": order}), clock=Clock(MON_NOON)
    )
    await daemon.store.learn(CLIENT, "101", time.time())
    pbx.set_device("SIP/101", "INUSE")
    await until(lambda: daemon.presence.state("101").value == "busy")
    placed = await call(pbx)
    assert ([d for d, _ in placed.dials], placed.status) == (dials, status)
