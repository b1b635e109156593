"""Helpers for the fault tests: when each answer reached the simulated Asterisk, and a
table of where each call went."""

from __future__ import annotations

import time
from dataclasses import dataclass

from simpbx.pbx import Call, FakeAsterisk


@dataclass(frozen=True)
class Reply:
    at: float  # time.monotonic() when the AMI server read the Setvar
    channel: str
    value: str  # token|status|dial|manager|source|dial_timeout


class Replies:
    """Every ``Setvar ICM_REPLY`` the simulated Asterisk receives, with its arrival time
    (``time.monotonic()``, the clock of ``Call.started``)."""

    def __init__(self, pbx: FakeAsterisk) -> None:
        self.all: list[Reply] = []
        pbx.ami.on_action = self._on_action

    def _on_action(self, user: str, headers: dict[str, str]) -> None:
        if headers.get("action", "").lower() == "setvar" and headers.get("variable") == "ICM_REPLY":
            self.all.append(Reply(time.monotonic(), headers.get("channel", ""), headers["value"]))

    def of(self, call: Call) -> list[Reply]:
        return [r for r in self.all if r.channel == call.channel]

    def delay(self, call: Call) -> float | None:
        """Seconds from the call entering the dialplan to its answer arriving, if any."""
        replies = self.of(call)
        return replies[0].at - call.started if replies else None


def where(calls: list[Call], replies: Replies) -> list[tuple[str, str, str, str, str]]:
    """(caller, ICM_STATUS, ICM_SOURCE, dials, answer delay) per call: what each fault test
    asserts, and prints when it fails."""
    rows = []
    for call in calls:
        delay = replies.delay(call)
        rows.append(
            (
                call.caller,
                call.status,
                call.variables.get("ICM_SOURCE", ""),
                ",".join(f"{d}:{s}" for d, s in call.dials) or "-",
                "no answer" if delay is None else f"{delay * 1000:.0f} ms",
            )
        )
    return rows


def finished_call(n: int, number: str, extension: str, at: float) -> bytes:
    """The AMI events of an inbound call from ``number`` answered at ``extension``, one
    minute long (Asterisk's ``Timestamp:`` headers say so), as the wire carries them."""
    from simpbx.ami_server import frame

    caller = [
        ("Channel", f"SIP/trunk-{n:08x}"),
        ("CallerIDNum", number),
        ("Uniqueid", f"1700000000.{n}"),
    ]
    phone = [
        ("Channel", f"SIP/{extension}-{n:08x}"),
        ("CallerIDNum", extension),
        ("Uniqueid", f"1700000000.{n}.1"),
    ]
    bridge = [("BridgeUniqueid", f"bridge-{n}"), ("BridgeType", "basic")]

    def event(name: str, when: float, *headers: tuple[str, str]) -> bytes:
        stamp = ("Timestamp", f"{when:.6f}")
        return frame([("Event", name), ("Privilege", "call,all"), stamp, *headers])

    end = at + 60
    return b"".join(
        [
            event("BridgeEnter", at, *bridge, *caller),
            event("BridgeEnter", at, *bridge, *phone),
            event("BridgeLeave", end, *bridge, *phone),
            event("Hangup", end, *phone, ("Cause", "16")),
            event("BridgeLeave", end, *bridge, *caller),
            event("Hangup", end, *caller, ("Cause", "16")),
        ]
    )
