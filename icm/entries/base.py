"""What every entry does with a request once it has one: decide, then log and count the
decision the same way, whichever way the request came in."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

from icm.metrics import Metrics
from icm.model import Decision, RouteRequest, Status, Step, Timing
from icm.ratelimit import Priority, asking
from icm.router import Router
from icm.safetext import shown
from icm.snapshot import Snapshot

log = logging.getLogger("icm.decision")


class Entry:
    """One way requests come in (AMI, FastAGI, HTTP): where it finds the daemon's current
    snapshot, and whether it still takes requests."""

    def __init__(self, current: Callable[[], Snapshot], *, metrics: Metrics) -> None:
        self.current = current
        self.metrics = metrics
        self.accepting = True

    def request(
        self,
        token: str,
        number: str,
        uniqueid: str = "",
        channel: str = "",
        *,
        age_s: float = 0.0,
    ) -> tuple[RouteRequest, Snapshot]:
        """A request received now (``age_s`` ago, if it waited in a backlog before it was
        read), and the snapshot it keeps until it is answered: its router, and its time
        limits (the decision's deadline is the budget minus a little time kept to deliver
        the answer)."""
        snapshot = self.current()
        now = asyncio.get_running_loop().time() - age_s
        request = RouteRequest(
            token=token,
            number=number,
            uniqueid=uniqueid,
            channel=channel,
            received=now,
            deadline=snapshot.timing.deadline(now),
            timing=snapshot.timing,
        )
        return request, snapshot

    @staticmethod
    def elapsed_ms(request: RouteRequest) -> float:
        """Milliseconds since the request arrived (queueing included)."""
        return (asyncio.get_running_loop().time() - request.received) * 1000

    @staticmethod
    def reply(request: RouteRequest, decision: Decision) -> str:
        """``token|status|dial|manager|source|dial_timeout|deputy|fallback|fallback_dial|
        fallback_on`` (no token: no leading field)."""
        return reply_line(decision, request.timing, request.token)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.@+\-]")


def reply_line(decision: Decision, timing: Timing, token: str = "") -> str:
    """``token|status|dial|manager|source|dial_timeout|deputy|fallback|fallback_dial|
    fallback_on`` (no token: no leading field). The deputy fields come after the first
    six, which keep their places: a dialplan from before deputies reads them as ever.
    ``deputy``: the deputy ``dial`` rings instead of the manager; ``fallback`` and
    ``fallback_dial``: the deputy rung when the manager's dial ends in one of
    ``fallback_on`` (DIALSTATUS values joined by ``-``, e.g. ``BUSY-NOANSWER``)."""
    fallback = decision.fallback
    fields = [*reply_fields(decision), str(timing.dial_timeout_s)]
    if decision.deputy or fallback:  # else the line is exactly what it was before deputies
        fields += [
            _UNSAFE.sub("_", decision.deputy),
            _UNSAFE.sub("_", fallback.extension) if fallback else "",
            fallback.dial if fallback else "",
            "-".join(fallback.on) if fallback else "",
        ]
    return "|".join([token, *fields] if token else fields)


async def decide(router: Router, request: RouteRequest, entry: str) -> Decision:
    """The router's decision; ERROR (the call goes back to its scenario) if it fails. A
    live call's CRM requests take their turn with the other entries' (``entry``)."""
    try:
        with asking(priority=Priority.LIVE, lane=entry):
            return await router.route(request)
    except Exception:
        log.exception("routing failed for call %s", request.uniqueid or request.token)
        return Decision(Status.ERROR, reason="internal error (see the daemon's log)")


def reply_fields(decision: Decision) -> list[str]:
    """status, dial, manager, source: safe to place in a channel variable."""
    return [
        decision.status.value,
        decision.dial,
        _UNSAFE.sub("_", decision.manager),
        _UNSAFE.sub("_", decision.source),
    ]


def record(
    decision: Decision,
    request: RouteRequest,
    metrics: Metrics,
    *,
    entry: str,
    total_ms: float,
    delivered: bool,
) -> None:
    """One log line and the metrics for a decision."""
    metrics.decisions.labels(decision.status.value, decision.source or "none").inc()
    metrics.rule_decisions.labels(decision.rule or "none", decision.status.value).inc()
    if delivered:
        metrics.decision_seconds.observe(total_ms / 1000)
    steps = " ".join(_step(step) for step in decision.steps) or "-"
    manager = decision.manager + (f" ({decision.manager_name})" if decision.manager_name else "")
    log.info(
        "%s call=%s number=%s status=%s manager=%s source=%s rule=%s dial=%s lookup_ms=%.1f "
        "total_ms=%.1f steps=%s reason=%r%s",
        entry,
        shown(request.uniqueid or "-"),
        shown(decision.number or request.number or "-"),
        decision.status.value,
        manager or "-",
        decision.source or "-",
        decision.rule or "-",
        decision.dial or "-",
        decision.lookup_ms,
        total_ms,
        steps,
        decision.reason,
        "" if delivered else " (not delivered)",
        extra={
            "uniqueid": shown(request.uniqueid),
            "status": decision.status.value,
            "source": decision.source,
            "manager": decision.manager,
            "rule": decision.rule,
            "deputy": decision.deputy,
            "lookup_ms": round(decision.lookup_ms, 3),
            "total_ms": round(total_ms, 3),
            "delivered": delivered,
        },
    )


def _step(step: Step) -> str:
    """``source:outcome:ms``, and why for a source that failed or was skipped."""
    text = f"{step.source}:{step.outcome}:{step.ms:.1f}ms"
    if step.outcome not in ("answered", "no-answer") and step.detail:
        text += f"({step.detail})"
    return text
