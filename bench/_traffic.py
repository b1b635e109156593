"""PBX traffic for the benchmarks, as the wire carries it to ICM's AMI user.

One *call* is the life of an inbound call answered by a manager, as Asterisk 20 sends it
through the shipped ``manager_icm.conf`` eventfilter (so only events ICM reads): the
phone rings, the trunk channel dials it, both enter a bridge, talk for a minute (the
``Timestamp:`` headers say so, as with ``timestampevents = yes``), leave, hang up, the
phone is idle again, and the dialplan reports the outcome. Every channel event carries the
full channel snapshot, as Asterisk's do. Twelve events, ~5 KB; each call is from a new
number, so each teaches the daemon one binding (a SQLite write).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

from simpbx.ami_server import frame
from simpbx.pbx import route_request_frame

EVENTS_PER_CALL = 12
MANAGERS = [str(e) for e in range(101, 121)]  # inside routing.extensions = ["100-199"]


def _snapshot(prefix: str, channel: str, number: str, uid: str, linked: str, state: str):
    return [
        (f"{prefix}Channel", channel),
        (f"{prefix}ChannelState", "6" if state == "Up" else "4"),
        (f"{prefix}ChannelStateDesc", state),
        (f"{prefix}CallerIDNum", number),
        (f"{prefix}CallerIDName", "Иван Петров" if not prefix else "<unknown>"),
        (f"{prefix}ConnectedLineNum", "<unknown>"),
        (f"{prefix}ConnectedLineName", "<unknown>"),
        (f"{prefix}Language", "ru"),
        (f"{prefix}AccountCode", ""),
        (f"{prefix}Context", "from-trunk" if not prefix else "from-internal"),
        (f"{prefix}Exten", "74951230000"),
        (f"{prefix}Priority", "1"),
        (f"{prefix}Uniqueid", uid),
        (f"{prefix}Linkedid", linked),
    ]


def call(n: int, *, at: float | None = None) -> list[bytes]:
    """The twelve events of call ``n`` (caller +7916…, manager 101-120), starting at
    ``at`` (default: two minutes ago; the daemon takes a Timestamp further than five
    minutes from its own clock as "now", and a call would then last no time at all)."""
    if at is None:
        at = time.time() - 120
    number = f"8916{n % 10_000_000:07d}"
    manager = MANAGERS[n % len(MANAGERS)]
    uid, callee_uid = f"1700000000.{2 * n}", f"1700000000.{2 * n + 1}"
    trunk, phone = f"SIP/trunk-{n:08x}", f"SIP/{manager}-{n:08x}"
    caller = _snapshot("", trunk, number, uid, uid, "Up")
    callee = _snapshot("", phone, manager, callee_uid, uid, "Up")
    dest = _snapshot("Dest", phone, manager, callee_uid, uid, "Ringing")
    bridge = [
        ("BridgeUniqueid", f"b{n:08x}-0000-4000-8000-000000000000"),
        ("BridgeType", "basic"),
        ("BridgeTechnology", "simple_bridge"),
        ("BridgeCreator", "<unknown>"),
        ("BridgeName", "<unknown>"),
        ("BridgeVideoSourceMode", "none"),
    ]
    call_ = ("Privilege", "call,all")
    start, end = at, at + 60.0

    def event(name: str, when: float, *headers: tuple[str, str], privilege=call_) -> bytes:
        return frame([("Event", name), privilege, ("Timestamp", f"{when:.6f}"), *headers])

    device = f"SIP/{manager}"
    return [
        event("DeviceStateChange", start, ("Device", device), ("State", "RINGING")),
        event("DialBegin", start, *caller, *dest, ("DialString", manager)),
        event("DeviceStateChange", start, ("Device", device), ("State", "INUSE")),
        event("BridgeEnter", start, *bridge, ("BridgeNumChannels", "1"), *caller),
        event("BridgeEnter", start, *bridge, ("BridgeNumChannels", "2"), *callee),
        event("BridgeLeave", end, *bridge, ("BridgeNumChannels", "1"), *callee),
        event("Hangup", end, *callee, ("Cause", "16"), ("Cause-txt", "Normal Clearing")),
        event("BridgeLeave", end, *bridge, ("BridgeNumChannels", "0"), *caller),
        event("Hangup", end, *caller, ("Cause", "16"), ("Cause-txt", "Normal Clearing")),
        event("DeviceStateChange", end, ("Device", device), ("State", "NOT_INUSE")),
        event(
            "ExtensionStatus",
            end,
            ("Exten", manager),
            ("Context", "ext-local"),
            ("Hint", device),
            ("Status", "0"),
            ("StatusText", "Idle"),
        ),
        event(
            "UserEvent",
            end,
            *caller,
            ("UserEvent", "ICMResult"),
            ("ICMToken", f"{n}"),
            ("ICMStatus", "ANSWERED"),
            ("ICMDialStatus", "ANSWER"),
            privilege=("Privilege", "user,all"),
        ),
    ]


def calls(first: int = 1) -> Iterator[list[bytes]]:
    """Call after call, each from a new number."""
    for n in itertools.count(first):
        yield call(n)


def stream(events: int, first: int = 1) -> bytes:
    """``events`` events (rounded up to whole calls) as one blob of wire bytes."""
    out: list[bytes] = []
    for frames in calls(first):
        out += frames
        if len(out) >= events:
            break
    return b"".join(out)


route_request = route_request_frame  # the simulator's own
