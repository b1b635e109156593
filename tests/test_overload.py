"""A daemon that cannot keep up with the event stream: a backlog is not a dead link, a
routing request that waited in the backlog is answered TIMEOUT at once (or, past its
budget, not at all), no event and no learned call is lost, and it recovers by itself.
Real TCP AMI to the simulated Asterisk; a slow event handler stands in for a busy CPU.
Asterisk's ``Timestamp:`` headers (``timestampevents = yes``) say when each event left."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from simpbx.pbx import route_request_frame

from .conftest import until
from .faultkit import Replies, finished_call

CLIENT = "+74951110101"


def stamped(frame: bytes, when: float) -> bytes:
    """``frame`` as Asterisk sends it with ``timestampevents = yes``."""
    head, _, rest = frame.partition(b"\r\n")
    privilege, _, rest = rest.partition(b"\r\n")
    return b"\r\n".join([head, privilege, f"Timestamp: {when:.6f}".encode(), rest])


def route(pbx, token: str, when: float) -> bytes:
    channel = pbx._channel("SIP/trunk", CLIENT)
    return stamped(route_request_frame(channel.snapshot(), token), when)


def statuses(replies: Replies) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for reply in replies.all:
        token, status = reply.value.split("|")[:2]
        out.setdefault(token, []).append(status)
    return out


async def test_a_request_that_waited_in_a_backlog_is_shed_at_once(pbx, make_config, start_daemon):
    pbx.register("101")
    daemon = await start_daemon(make_config(pbx.port, routing={"lookup_budget_ms": 2000}))
    await daemon.store.learn(CLIENT, "101", time.time())
    replies = Replies(pbx)
    pbx.ami.send_raw(route(pbx, "1001", time.time()))  # read as soon as it was raised
    await until(lambda: len(replies.all) == 1, timeout=5)
    # Read 1.3 s after Asterisk raised it: over half the 2 s budget, inside the budget.
    pbx.ami.send_raw(route(pbx, "1002", time.time() - 1.3))
    # Read 5 s after: the dialplan stopped waiting long ago.
    pbx.ami.send_raw(route(pbx, "1003", time.time() - 5.0))
    pbx.ami.send_raw(route(pbx, "1004", time.time()))  # and the next fresh one is routed
    await until(lambda: len(replies.all) == 3, timeout=5)
    await until(lambda: daemon.entry.in_flight == 0)
    assert statuses(replies) == {"1001": ["DIAL"], "1002": ["TIMEOUT"], "1004": ["DIAL"]}
    assert daemon.metrics.requests_shed._value.get() == 1
    assert daemon.metrics.answers_dropped.labels("late")._value.get() == 1


async def test_a_backlog_keeps_the_link_loses_nothing_and_recovers(pbx, make_config, start_daemon):
    """Three seconds of backlog (a handler that takes 3 ms an event) against a Ping given
    up on after 0.5 s and a 500 ms budget."""
    pbx.register("101", "102", "103", "104")
    daemon = await start_daemon(make_config(pbx.port))
    await daemon.store.learn(CLIENT, "101", time.time())
    handled = Counter()

    def slow(message):
        time.sleep(0.003)
        handled[message.name] += 1

    daemon._handlers["Hangup"].append(slow)
    replies = Replies(pbx)
    events_before = daemon.metrics.ami_events._value.get()
    calls, tokens, n = 0, [], 10**6  # channel names apart from the routed calls
    for chunk in range(50):
        batch = []
        for _ in range(10):
            n += 1
            batch.append(finished_call(n, f"+7916{n:07d}", str(101 + n % 4), time.time() - 120))
        tokens.append(f"{2000 + chunk}")
        batch.append(route(pbx, tokens[-1], time.time()))
        pbx.ami.send_raw(b"".join(batch))
        calls += 10
    sent_events = calls * 6 + len(tokens)
    await until(
        lambda: daemon.metrics.ami_events._value.get() - events_before == sent_events, timeout=60
    )
    await until(lambda: daemon.metrics.learned._value.get() == calls, timeout=30)
    await until(lambda: daemon.entry.in_flight == 0, timeout=5)
    # Recovered: the next request is routed as on a quiet day.
    pbx.ami.send_raw(route(pbx, "9999", time.time()))
    await until(lambda: "9999" in statuses(replies), timeout=5)
    answered = statuses(replies)
    assert answered.pop("9999") == ["DIAL"]
    # Each request: exactly one answer (DIAL, or TIMEOUT at once when it waited), or none
    # when it was read after its caller stopped waiting; and each is counted once.
    assert all(len(answers) == 1 for answers in answered.values()), answered
    assert {a[0] for a in answered.values()} <= {"DIAL", "TIMEOUT"}
    late = daemon.metrics.answers_dropped.labels("late")._value.get()
    assert late > 0  # the backlog was real: some were read after their budget
    assert len(answered) + late == len(tokens)
    shed = daemon.metrics.requests_shed._value.get()
    assert sum(a == ["TIMEOUT"] for a in answered.values()) == shed
    # The link was kept: not one reconnect, every event handled, every call learned.
    assert pbx.ami.logins == 1 and daemon.metrics.ami_reconnects._value.get() == 0
    assert handled["Hangup"] == calls * 2


def test_a_wrong_asterisk_clock_never_makes_a_fresh_request_old():
    """Asterisk on another host, its clock 10 s behind: requests are aged against the
    smallest delay seen lately, not against our clock."""
    from icm.ami.lag import Lag

    now = [1000.0]
    lag = Lag(clock=lambda: now[0], window_s=60)
    assert lag.observe(f"{now[0] - 10:.6f}") == 0.0  # fresh, on a clock 10 s behind
    now[0] += 1
    assert lag.observe(f"{now[0] - 10 - 0.7:.6f}") == pytest.approx(0.7)  # waited 0.7 s
    assert lag.observe("") == lag.observe("nan") == lag.observe("junk") == 0.0
    # The clocks drift apart by a second: within two windows the new baseline holds.
    for _ in range(3):
        now[0] += 61
        lag.observe(f"{now[0] - 11:.6f}")
    assert lag.observe(f"{now[0] - 11:.6f}") == 0.0


async def test_a_request_behind_a_long_queue_in_the_daemon_is_shed_without_timestamps(
    pbx, make_config, start_daemon
):
    """No Timestamp headers (timestampevents off): the daemon still sees its own lag. The
    request before waited 1.2 s between being read and being started on (a saturated
    loop); the next one would wait as long, over half its 2 s budget: TIMEOUT at once,
    which lets the daemon catch up, and the one after is routed again."""
    pbx.register("101")
    daemon = await start_daemon(make_config(pbx.port, routing={"lookup_budget_ms": 2000}))
    await daemon.store.learn(CLIENT, "101", time.time())
    stalled = []

    def stall_once(message):  # the loop is busy for 1.2 s right after the first request
        if message.get("icmtoken") == "3001" and not stalled:
            stalled.append(1)
            time.sleep(1.2)

    daemon._handlers["UserEvent"].append(stall_once)
    replies = Replies(pbx)
    frame = route_request_frame(pbx._channel("SIP/trunk", CLIENT).snapshot(), "3001")
    pbx.ami.send_raw(frame)
    await until(lambda: len(replies.all) == 1, timeout=5)
    for token in ("3002", "3003"):
        frame = route_request_frame(pbx._channel("SIP/trunk", CLIENT).snapshot(), token)
        pbx.ami.send_raw(frame)
        await until(lambda token=token: token in statuses(replies), timeout=5)
    assert statuses(replies) == {"3001": ["DIAL"], "3002": ["TIMEOUT"], "3003": ["DIAL"]}
    assert daemon.metrics.requests_shed._value.get() == 1


async def test_answers_awaiting_confirmation_hold_no_task(pbx, make_config, start_daemon):
    """Behind a backlog, Asterisk's confirmation of each Setvar comes seconds after the
    answer was written. Hundreds of answers awaiting it cost a future each, not a task
    and its coroutines (soak.py: RSS grew with the tasks in flight under overload)."""
    import asyncio

    pbx.register("101")
    daemon = await start_daemon(make_config(pbx.port, routing={"lookup_budget_ms": 5000}))
    await daemon.store.learn(CLIENT, "101", time.time())
    await until(lambda: daemon.ami.logged_in)
    tasks_before = len(asyncio.all_tasks())
    pbx.ami.freeze()  # Asterisk reads the answers but confirms none (yet)
    session = pbx.ami.sessions[0]
    count = 300
    session.writer.write(b"".join(route(pbx, f"{2000 + i}", time.time()) for i in range(count)))
    await until(lambda: len(daemon.ami._link.pending) == count, timeout=30)
    assert len(asyncio.all_tasks()) - tasks_before < 10
    assert daemon.entry.in_flight == count  # still counted as in flight
    pbx.ami.freeze(False)
