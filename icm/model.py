"""Plain values passed between the parts: a routing request, a source's answer, a decision.

None of these know about AMI, HTTP or storage; the router turns a :class:`RouteRequest`
into a :class:`Decision`, and the entry that received the request delivers it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class Status(enum.StrEnum):
    """What the daemon decided. ``DIAL`` means "ring the manager"; the dialplan turns it
    into the dial's outcome (ANSWERED, NOANSWER, BUSY, OFFLINE). Every other status is
    final unless a default number is dialled, in which case it is kept when nobody
    answers."""

    DIAL = "DIAL"
    NOTFOUND = "NOTFOUND"
    NOTCONNECTED = "NOTCONNECTED"
    OFFLINE = "OFFLINE"
    BUSY = "BUSY"
    EXCEPTION = "EXCEPTION"
    ANONYMOUS = "ANONYMOUS"
    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"
    OFFHOURS = "OFFHOURS"  # the manager (or the company) is not at work, no deputy free
    BLOCKED = "BLOCKED"  # the caller is blocked ([rules] blocked): never connected


class Presence(enum.StrEnum):
    """Whether a manager's phone can take a call now."""

    AVAILABLE = "available"
    BUSY = "busy"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Timing:
    """The time limits of one request, fixed when it arrives: the lookup budget (the
    longest a caller waits for the daemon), the dial timeout sent with the answer, and
    what follows from the budget."""

    budget_s: float
    dial_timeout_s: int

    @property
    def answer_margin_s(self) -> float:
        """Time kept inside the budget for the answer's way back: the Setvar (AGI command,
        HTTP body) reaching Asterisk and the dialplan seeing it (WaitForCondition looks
        every 20 ms), plus the request's own way here."""
        return min(0.1, self.budget_s / 5)

    @property
    def claim_timeout_s(self) -> float:
        """How long claiming a call in a shared store may take before it is granted
        anyway: two thirds of the budget (claims queue behind each other under a burst;
        a store that hangs still leaves the sources a third)."""
        return self.budget_s * 2 / 3

    @property
    def dialplan_wait_s(self) -> float:
        """How long the dialplan waits for an answer (global ICM_WAIT): the lookup budget
        itself, "the longest a caller waits". The daemon decides and answers inside it."""
        return round(self.budget_s, 2)

    @property
    def shed_after_s(self) -> float:
        """A request that waited this long in a backlog before the daemon read it is
        answered TIMEOUT at once (the call goes back to its scenario now) rather than
        routed: half the budget."""
        return self.budget_s / 2

    def send_by(self, received: float) -> float:
        """The last moment (loop time) an answer to a request received then is sent."""
        return received + self.budget_s - self.answer_margin_s

    def deadline(self, received: float) -> float:
        """When the decision must be made (loop time): a little before :meth:`send_by`,
        to send it."""
        return self.send_by(received) - min(0.05, self.budget_s / 10)


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One request from the dialplan: "who serves this caller?".

    :param token: the dialplan's own token; the answer carries it back.
    :param number: the raw number to look up (the caller ID unless the scenario gave one).
    :param received: loop time it arrived.
    :param deadline: loop time by which the decision must be made (0: none).
    :param timing: the time limits it keeps until its answer, whatever a reload changes.
    """

    token: str
    number: str
    uniqueid: str = ""
    channel: str = ""
    received: float = 0.0
    deadline: float = 0.0
    timing: Timing = Timing(1.5, 20)

    def arrived(self, received: float) -> RouteRequest:
        """The same request, arrived at ``received`` (earlier than its handler ran: it
        waited in the loop's queue), its deadline moved with it."""
        if received >= self.received:
            return self
        return replace(self, received=received, deadline=self.timing.deadline(received))


@dataclass(frozen=True, slots=True)
class Answer:
    """A source's answer: the responsible manager, as the source knows him.

    A source names an ``extension`` (a PBX extension), or an external ``number``
    (E.164), or only a CRM user (``user``, with his ``email`` when the CRM has one) that
    ICM maps to an extension through ``[managers]``; an answer with none of them means
    the manager is not connected to the PBX. ``active`` False: the CRM says the user is
    fired or deactivated, which counts as no answer (the next source is asked).
    ``responsible`` False: the source knows the caller but names nobody ICM can use (no
    responsible set, a user the CRM no longer knows): no answer as well, and ``detail``
    says why.
    """

    extension: str | None = None
    number: str | None = None
    user: str | None = None
    name: str = ""
    mobiles: tuple[str, ...] = ()
    detail: str = ""
    email: str | None = None
    active: bool = True
    responsible: bool = True
    away: str = ""  # the source says the manager is not at work now (why), e.g. Bitrix24


@dataclass(frozen=True, slots=True)
class Step:
    """One line of a decision's explanation."""

    source: str
    # answered, no-answer, inactive, skipped, error, timeout, cut, not-needed, exception,
    # invalid
    outcome: str
    ms: float
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "outcome": self.outcome,
            "ms": round(self.ms, 3),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Check:
    """One rule's part in a decision: what it found at that moment.

    ``outcome``: passed (nothing to do), matched, found, away, offline, busy, deputy,
    decided (it settled the call), skipped (nothing to check yet or any more)."""

    rule: str
    outcome: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "outcome": self.outcome, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Fallback:
    """A deputy the dialplan dials when the first dial ends in one of ``on``
    (DIALSTATUS values: BUSY, NOANSWER, CHANUNAVAIL)."""

    extension: str
    dial: str
    on: tuple[str, ...]


@dataclass(slots=True)
class Decision:
    """Where a call goes, and why.

    :param dial: the Dial() string to ring, empty to send the call back to its scenario.
    :param manager: the chosen manager's extension (or external number), if any.
    :param deputy: the deputy ``dial`` rings instead of the manager, if any.
    :param fallback: the deputy to ring when ringing the manager fails, if any.
    """

    status: Status
    number: str = ""
    dial: str = ""
    manager: str = ""
    manager_name: str = ""
    source: str = ""
    reason: str = ""
    steps: list[Step] = field(default_factory=list)
    lookup_ms: float = 0.0
    rule: str = ""  # the rule that decided (blocked, vip, lookup, hours, presence, deputy)
    checks: list[Check] = field(default_factory=list)
    deputy: str = ""  # the deputy dialled instead of the manager
    fallback: Fallback | None = None

    def as_dict(self) -> dict[str, object]:
        fallback = self.fallback
        return {
            "status": self.status.value,
            "number": self.number,
            "dial": self.dial,
            "manager": self.manager,
            "manager_name": self.manager_name,
            "source": self.source,
            "reason": self.reason,
            "lookup_ms": round(self.lookup_ms, 3),
            "steps": [step.as_dict() for step in self.steps],
            "rule": self.rule,
            "deputy": self.deputy,
            "fallback": (
                {"deputy": fallback.extension, "dial": fallback.dial, "on": list(fallback.on)}
                if fallback
                else None
            ),
            "checks": [check.as_dict() for check in self.checks],
        }
