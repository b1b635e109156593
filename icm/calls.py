"""Who talked with whom: conversations between external numbers and extensions, from AMI
bridge events.

A *conversation* is a stretch of time during which a bridge held exactly two channels:
one of an extension's phones (``SIP/101-...``) and one external party. The external
party's number is the number the extension dialled (outbound: from DialBegin) or the
channel's caller ID (inbound). When the external channel hangs up, the tracker reports
every conversation it had, in order; after a transfer the last one is with the manager
the client finally talked to. What counts as worth learning is the learner's business.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from icm.ami.frames import Message

_DIGITS = re.compile(r"\+?[0-9]{5,}")
# How far an event's Timestamp may be from the daemon's clock (PBX on another host,
# events queued for a moment) before the daemon's clock is used instead.
CLOCK_TOLERANCE_S = 300.0
MAX_TRACKED = 20_000  # channels followed at once; beyond that new ones are ignored
# Channels followed in one bridge. A conversation is two; a conference may be more, and
# learns nothing (no pair). A bound keeps the cost of each event constant: BridgeEnter
# events without BridgeLeave would otherwise grow one bridge for ever, each event
# costing as much as the bridge is big.
MAX_MEMBERS = 32


@dataclass(frozen=True, slots=True)
class Conversation:
    """A stretch of talk between one extension and one external number."""

    number: str  # the external party's number as Asterisk showed it (not normalised)
    extension: str
    started: float  # Unix time
    ended: float
    outbound: bool

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass(slots=True)
class _Party:
    """One channel in a bridge: an extension's phone or an external party."""

    uniqueid: str
    extension: str | None  # set for an extension's phone
    number: str  # the external number (for an external party)


@dataclass(slots=True)
class _Segment:
    """The conversation a two-party bridge holds now."""

    internal: _Party
    external: _Party
    started: float


@dataclass(slots=True)
class _External:
    """An external channel followed until it hangs up, with its conversations."""

    number: str
    outbound: bool
    seen: float
    conversations: list[Conversation] = field(default_factory=list)


FinishedCall = Callable[[str, list[Conversation]], None]


class CallTracker:
    """Follows bridges to tell who talked with whom.

    :param extension_of: the extension a channel name belongs to, or None.
    :param on_finished: called with (uniqueid, conversations) when an external channel
        that talked hangs up."""

    def __init__(
        self,
        extension_of: Callable[[str], str | None],
        on_finished: FinishedCall,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._extension_of = extension_of
        self._on_finished = on_finished
        self._clock = clock
        self._dialled: dict[str, tuple[str, float]] = {}  # callee uniqueid -> (number, seen)
        self._bridges: dict[str, dict[str, _Party]] = {}
        self._segments: dict[str, _Segment] = {}  # bridge -> current conversation
        self._externals: dict[str, _External] = {}  # uniqueid -> external party's record
        self._bridge_of: dict[str, str] = {}  # uniqueid -> the bridge it is in
        self._bridge_seen: dict[str, float] = {}  # bridge -> last enter

    def on_dial_begin(self, message: Message) -> None:
        """Remember the number a phone dialled, to name the callee channel."""
        if self._extension_of(message.get("channel")) is None:
            return
        dest = message.get("destuniqueid")
        if not dest or self._extension_of(message.get("destchannel")) is not None:
            return
        found = _DIGITS.findall(message.get("dialstring"))
        number = found[-1] if found else message.get("exten")
        if number and len(self._dialled) < MAX_TRACKED:
            self._dialled[dest] = (number, self._when(message))

    def on_bridge_enter(self, message: Message) -> None:
        bridge, uniqueid = message.get("bridgeuniqueid"), message.get("uniqueid")
        if not bridge or not uniqueid:
            return
        members = self._bridges.get(bridge)
        if members is None:
            if len(self._bridges) >= MAX_TRACKED:
                return
            members = self._bridges[bridge] = {}
        when = self._when(message)
        if self._bridge_of.get(uniqueid, bridge) != bridge:  # moved without a BridgeLeave
            self._leave(uniqueid, when)
        if uniqueid not in members and len(members) >= MAX_MEMBERS:
            return
        members[uniqueid] = self._party(message)
        self._bridge_of[uniqueid] = bridge
        self._bridge_seen[bridge] = when
        self._update(bridge, when)

    def on_bridge_leave(self, message: Message) -> None:
        self._leave(message.get("uniqueid"), self._when(message))

    def on_hangup(self, message: Message) -> None:
        uniqueid = message.get("uniqueid")
        self._dialled.pop(uniqueid, None)
        self._leave(uniqueid, self._when(message))
        record = self._externals.pop(uniqueid, None)
        if record is not None and record.conversations:
            self._on_finished(uniqueid, record.conversations)

    def sweep(self, max_age_s: float = 6 * 3600) -> int:
        """Forget calls not heard of for ``max_age_s`` (their Hangup was lost, e.g. while
        the AMI link was down). Returns how many were dropped."""
        limit = self._clock() - max_age_s
        dropped = 0
        for uniqueid, (_, seen) in list(self._dialled.items()):
            if seen < limit:
                del self._dialled[uniqueid]
                dropped += 1
        for uniqueid, record in list(self._externals.items()):
            if record.seen < limit:
                del self._externals[uniqueid]
                dropped += 1
        for bridge, seen in list(self._bridge_seen.items()):
            if seen < limit:
                self._forget_bridge(bridge)
                dropped += 1
        return dropped

    def tracked(self) -> int:
        return len(self._dialled) + len(self._bridge_of) + len(self._externals)

    def _leave(self, uniqueid: str, when: float) -> None:
        bridge = self._bridge_of.pop(uniqueid, None)
        members = self._bridges.get(bridge) if bridge else None
        if bridge is None or members is None:
            return
        members.pop(uniqueid, None)
        self._update(bridge, when)
        if not members:
            self._forget_bridge(bridge)

    def _forget_bridge(self, bridge: str) -> None:
        self._segments.pop(bridge, None)
        self._bridge_seen.pop(bridge, None)
        for uniqueid in self._bridges.pop(bridge, {}):
            self._bridge_of.pop(uniqueid, None)

    def _party(self, message: Message) -> _Party:
        uniqueid = message.get("uniqueid")
        extension = self._extension_of(message.get("channel"))
        if extension is not None:
            return _Party(uniqueid, extension, "")
        dialled = self._dialled.get(uniqueid)
        number = dialled[0] if dialled else message.get("calleridnum")
        if uniqueid not in self._externals and len(self._externals) < MAX_TRACKED:
            self._externals[uniqueid] = _External(number, dialled is not None, self._when(message))
        return _Party(uniqueid, None, number)

    def _update(self, bridge: str, when: float) -> None:
        """Close the bridge's conversation if its pair changed; open the new one."""
        in_bridge = self._bridges.get(bridge, {})
        members = list(in_bridge.values()) if len(in_bridge) == 2 else []
        pair = None
        if len(members) == 2:
            internal = [p for p in members if p.extension is not None]
            external = [p for p in members if p.extension is None]
            if len(internal) == 1 and len(external) == 1:
                pair = (internal[0], external[0])
        current = self._segments.get(bridge)
        if current is not None and (
            pair is None
            or (current.internal.uniqueid, current.external.uniqueid)
            != (pair[0].uniqueid, pair[1].uniqueid)
        ):
            del self._segments[bridge]
            self._close(current, when)
            current = None
        if current is None and pair is not None:
            self._segments[bridge] = _Segment(pair[0], pair[1], when)

    def _close(self, segment: _Segment, when: float) -> None:
        record = self._externals.get(segment.external.uniqueid)
        if record is None:
            return
        assert segment.internal.extension is not None
        record.seen = when
        record.conversations.append(
            Conversation(
                segment.external.number,
                segment.internal.extension,
                segment.started,
                when,
                record.outbound,
            )
        )

    def _when(self, message: Message) -> float:
        """The event's ``Timestamp`` (Asterisk's ``timestampevents``), or now. A time
        further than CLOCK_TOLERANCE_S from the daemon's clock is taken as now: a PBX
        clock a year ahead would otherwise learn a binding no later call replaces and
        the retention purge never removes."""
        now = self._clock()
        stamp = message.get("timestamp")
        if stamp and stamp.isascii():
            try:
                when = float(stamp)
            except ValueError:
                pass
            else:
                # nan or inf would be learned as a time no later call can replace
                # (or that the store refuses, blocking learning).
                if math.isfinite(when) and abs(when - now) <= CLOCK_TOLERANCE_S:
                    return when
        return now
