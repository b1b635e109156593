"""Event times from Asterisk (issue 13.10): a ``Timestamp`` far from the daemon's own
clock is taken as "now", so a PBX clock a year ahead cannot make a binding stick against
every later conversation, nor hide it from the retention purge."""

from __future__ import annotations

import asyncio
import time

from icm.calls import CLOCK_TOLERANCE_S, CallTracker

from .conftest import until

CLIENT = "+79161234567"
YEAR_S = 365 * 86400


async def conversation(pbx, n: int, extension: str, start: float, end: float) -> None:
    """An inbound call answered by ``extension``, as Asterisk reports it with
    ``timestampevents = yes``: events stamped ``start`` and ``end``, 50 ms apart on the
    daemon's clock."""
    bridge, outside, inside = f"bridge-{n}", f"{n}.1", f"{n}.2"

    def emit(event: str, uniqueid: str, channel: str, callerid: str, when: float) -> None:
        pbx.emit(
            event,
            [
                ("Timestamp", f"{when:.6f}"),
                ("BridgeUniqueid", bridge),
                ("Channel", channel),
                ("CallerIDNum", callerid),
                ("Uniqueid", uniqueid),
            ],
        )

    emit("BridgeEnter", outside, f"SIP/trunk-{n:08x}", "89161234567", start)
    emit("BridgeEnter", inside, f"SIP/{extension}-{n:08x}", extension, start)
    await asyncio.sleep(0.05)
    emit("BridgeLeave", outside, f"SIP/trunk-{n:08x}", "89161234567", end)
    emit("BridgeLeave", inside, f"SIP/{extension}-{n:08x}", extension, end)
    emit("Hangup", inside, f"SIP/{extension}-{n:08x}", extension, end)
    emit("Hangup", outside, f"SIP/trunk-{n:08x}", "89161234567", end)


async def test_a_call_stamped_a_year_ahead_does_not_stick(pbx, make_config, start_daemon):
    pbx.register("101", "102")
    daemon = await start_daemon(make_config(pbx.port))
    now = time.time()
    await conversation(pbx, 1, "101", now + YEAR_S, now + YEAR_S + 30)
    await until(lambda: daemon.metrics.learned._value.get() == 1, timeout=5)
    first = await daemon.store.binding(CLIENT)
    assert first is not None and first.target == "101"
    assert first.at <= time.time() + 1  # learned at the daemon's time, not the PBX's
    # A later conversation with another manager, on a PBX whose clock is right again.
    later = time.time()
    await conversation(pbx, 2, "102", later, later + 30)
    await until(lambda: daemon.metrics.learned._value.get() == 2, timeout=5)
    assert (await daemon.store.binding(CLIENT)).target == "102"
    # And the purge removes it once it is old.
    assert await daemon.store.purge_learned(time.time() + 3600) == 1


def test_times_within_the_tolerance_are_kept_and_others_are_now():
    from icm.ami.frames import Message

    clock = 1_000_000.0
    tracker = CallTracker(lambda channel: None, lambda uniqueid, talks: None, lambda: clock)

    def when(stamp: str) -> float:
        return tracker._when(Message(True, "BridgeEnter", {"timestamp": stamp}))

    assert when(str(clock - 1.5)) == clock - 1.5  # a second or two of skew is real
    assert when(str(clock + CLOCK_TOLERANCE_S - 1)) == clock + CLOCK_TOLERANCE_S - 1
    assert when(str(clock + YEAR_S)) == clock
    assert when(str(clock - YEAR_S)) == clock
    assert when("nan") == clock and when("1e400") == clock and when("\u0661\u0662") == clock


async def test_a_bridge_that_only_grows_is_bounded(pbx, make_config, start_daemon):
    """20,000 BridgeEnter events into one bridge and never a BridgeLeave (issue 13.9):
    the bridge keeps MAX_MEMBERS channels, routing and the AMI link carry on."""
    from icm.calls import MAX_MEMBERS

    pbx.register("101")
    daemon = await start_daemon(make_config(pbx.port))
    await daemon.store.learn(CLIENT, "101", time.time())
    total = 20_000
    for i in range(total):
        pbx.emit(
            "BridgeEnter",
            [
                ("BridgeUniqueid", "conference"),
                ("Channel", f"SIP/trunk-{i:08x}"),
                ("CallerIDNum", f"8916{i:07d}"),
                ("Uniqueid", f"7.{i}"),
            ],
        )
        if i % 1000 == 999:
            await asyncio.sleep(0)  # let the simulator's writer run
    await until(lambda: daemon.metrics.ami_events._value.get() >= total, timeout=60)
    assert len(daemon.tracker._bridges["conference"]) == MAX_MEMBERS
    assert daemon.tracker.tracked() <= 2 * MAX_MEMBERS
    placed = await pbx.call("89161234567")
    assert placed.dials == [("SIP/101", "ANSWER")]
    assert daemon.ami.logged_in and pbx.ami.logins == 1
