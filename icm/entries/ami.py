"""Routing requests from the shipped dialplan, over AMI.

The dialplan raises ``UserEvent(ICMRoute, ICMToken: <token>, ICMNumber: <number>)`` and
waits for ``ICM_REPLY`` on its channel to start with its token. This entry answers with one
``Setvar ICM_REPLY=token|status|dial|manager|source|dial_timeout`` (one action: the answer
lands whole or not at all), and only before the request's deadline: an answer that would
come late is dropped, never sent, and the channel is never moved (no Redirect).
The dialplan also reports how each call ended (``ICMResult``); that feeds a metric.

Overload: a request read long after Asterisk raised it (its ``Timestamp``, see
:mod:`icm.ami.lag`) waited in a backlog, and so did its caller. Past half its budget it
is answered TIMEOUT at once (the call goes back to its scenario now, not at the end of
its wait, and the daemon spends nothing on a lookup); past its budget it gets no answer
at all (the dialplan stopped waiting and already went on with TIMEOUT).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from icm.ami.client import AmiActionError, AmiClient, AmiError
from icm.ami.frames import Message
from icm.entries.base import Entry, decide, record
from icm.logs import Throttled
from icm.metrics import Metrics
from icm.model import Decision, RouteRequest, Status
from icm.numbers import is_digits
from icm.router import Router
from icm.snapshot import Snapshot

log = logging.getLogger(__name__)

MAX_TOKEN = 64
MAX_OUTCOMES = 10_000
MAX_IN_FLIGHT = 5_000  # routing requests decided at once
Claim = Callable[[RouteRequest], Awaitable[bool]]


class AmiEntry(Entry):
    """Routing requests raised by the dialplan as UserEvents, answered with one Setvar.

    :param claim: asked before deciding; False means another instance answers this
    call (several instances watching one Asterisk). Without claims this instance is the
    only one: while it stops, it answers at once (TIMEOUT) rather than let calls wait.
    """

    def __init__(
        self,
        ami: AmiClient,
        current: Callable[[], Snapshot],
        *,
        metrics: Metrics,
        claim: Claim | None = None,
    ) -> None:
        super().__init__(current, metrics=metrics)
        self.ami = ami
        self.claim = claim
        self._tasks: set[asyncio.Task[Any]] = set()
        self._bad = Throttled(log)
        self._late = Throttled(log, interval_s=5.0)
        # Tokens whose outcome was counted: the dialplan may report an outcome twice.
        self._outcomes: collections.OrderedDict[str, None] = collections.OrderedDict()
        # Told (uniqueid, extension) when the dialplan reports a deputy took the call.
        self.on_deputy: Callable[[str, str], None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def on_user_event(self, message: Message) -> None:
        kind = message.get("userevent")
        if kind == "ICMRoute":
            self._on_route(message)
        elif kind == "ICMResult":
            deputy = message.get("icmdeputy")
            if deputy.isdigit() and len(deputy) <= 10 and self.on_deputy is not None:
                self.on_deputy(message.get("uniqueid"), deputy)
            token = message.get("icmtoken")
            if token in self._outcomes:
                return
            self._outcomes[token] = None
            if len(self._outcomes) > MAX_OUTCOMES:
                self._outcomes.popitem(last=False)
            self.metrics.outcome(message.get("icmstatus"))

    async def drain(self, timeout: float) -> None:
        """Stop taking requests; let those in flight finish within ``timeout``."""
        self.accepting = False
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()

    def _on_route(self, message: Message) -> None:
        token, channel = message.get("icmtoken"), message.get("channel")
        if not (is_digits(token) and len(token) <= MAX_TOKEN) or not channel:
            self.metrics.answers_dropped.labels("malformed").inc()
            self._bad.warning(
                "ignored an ICMRoute event without a valid token or channel (call %s)",
                message.get("uniqueid")[:40] or "-",
            )
            return
        age = self.ami.lag.observe(message.get("timestamp"))
        request, snapshot = self.request(
            token,
            message.get("icmnumber") or message.get("calleridnum"),
            message.get("uniqueid"),
            channel,
            age_s=age,
        )
        if len(self._tasks) >= MAX_IN_FLIGHT:
            # A flood (a runaway dialplan, hostile input): the calls over the limit get
            # their dialplan's own TIMEOUT rather than take the daemon down.
            self.metrics.answers_dropped.labels("overloaded").inc()
            self._bad.warning("%d routing requests in flight: dropping new ones", MAX_IN_FLIGHT)
            return
        if not self.accepting:
            self.metrics.answers_dropped.labels("stopping").inc()
            if self.claim is None:  # nobody else will answer: send the call back now
                stopping = Decision(Status.TIMEOUT, reason="ICM is stopping")
                self._spawn(self._deliver(request, stopping))
            return
        self.metrics.requests.labels("ami").inc()
        if age < request.timing.shed_after_s:
            self._spawn(self._handle(request, snapshot.router))
        elif asyncio.get_running_loop().time() < request.timing.send_by(request.received):
            self.metrics.requests_shed.inc()
            self._late.warning(
                "call %s waited %.0f ms in a backlog before it was read: answered TIMEOUT "
                "at once (the daemon is overloaded)",
                request.uniqueid,
                age * 1000,
            )
            shed = Decision(Status.TIMEOUT, reason=f"waited {age * 1000:.0f} ms in a backlog")
            if self.claim is None:
                self._answer_now(request, shed)
            else:  # one instance answers, even TIMEOUT
                self._spawn(self._handle(request, snapshot.router, shed))
        else:
            self.metrics.answers_dropped.labels("late").inc()
            self._late.warning(
                "call %s waited %.0f ms in a backlog before it was read: no answer, the "
                "dialplan stopped waiting (the daemon is overloaded)",
                request.uniqueid,
                age * 1000,
            )

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(
        self, request: RouteRequest, router: Router, decided: Decision | None = None
    ) -> None:
        """Claim the call (several instances), decide (unless ``decided``), answer."""
        self.metrics.in_flight.inc()
        try:
            if self.claim is not None and not await self.claim(request):
                return
            decision = decided or await decide(router, request, "ami")
            delivered = await self._deliver(request, decision)
            total_ms = self.elapsed_ms(request)
            record(
                decision,
                request,
                self.metrics,
                entry="ami",
                total_ms=total_ms,
                delivered=delivered,
            )
        finally:
            self.metrics.in_flight.dec()

    async def _deliver(self, request: RouteRequest, decision: Decision) -> bool:
        loop = asyncio.get_running_loop()
        send_by = request.timing.send_by(request.received)
        if loop.time() < send_by:
            await self.ami.wait_logged_in(send_by - loop.time())
        if loop.time() >= send_by:
            reason = "late" if self.ami.logged_in else "ami_down"
            self.metrics.answers_dropped.labels(reason).inc()
            self._late.warning(
                "call %s: no answer sent, the %.0f ms budget is spent (%s)",
                request.uniqueid,
                request.timing.budget_s * 1000,
                "AMI is down" if reason == "ami_down" else "decision too slow",
            )
            return False
        try:
            sent = self.ami.action_now("Setvar", self._setvar(request, decision))
        except AmiError as exc:
            self.metrics.answers_dropped.labels("ami_down").inc()
            log.warning("call %s: answer not delivered: %s", request.uniqueid, exc)
            return False
        return await self._confirmed(request, sent)

    def _setvar(self, request: RouteRequest, decision: Decision) -> dict[str, str]:
        value = self.reply(request, decision)
        return {"Channel": request.channel, "Variable": "ICM_REPLY", "Value": value}

    def _answer_now(self, request: RouteRequest, decision: Decision) -> None:
        """Write the answer before returning: from inside a read of a backlog, a task
        would run only once the whole read is handled."""
        try:
            sent = self.ami.action_now("Setvar", self._setvar(request, decision))
        except AmiError as exc:
            self.metrics.answers_dropped.labels("ami_down").inc()
            log.warning("call %s: answer not delivered: %s", request.uniqueid, exc)
            return
        self._spawn(self._recorded(request, decision, sent))

    async def _recorded(
        self, request: RouteRequest, decision: Decision, sent: Awaitable[Message]
    ) -> None:
        delivered = await self._confirmed(request, sent)
        total_ms = self.elapsed_ms(request)
        record(decision, request, self.metrics, entry="ami", total_ms=total_ms, delivered=delivered)

    async def _confirmed(self, request: RouteRequest, sent: Awaitable[Message]) -> bool:
        """Whether Asterisk took the answer written."""
        try:
            await sent
        except AmiActionError as exc:
            gone = "no such channel" in str(exc).lower()
            self.metrics.answers_dropped.labels("caller_gone" if gone else "refused").inc()
            if gone:
                log.info("call %s: the caller hung up before the answer", request.uniqueid)
            else:
                log.warning("call %s: Asterisk refused the answer: %s", request.uniqueid, exc)
            return False
        except AmiError as exc:
            self.metrics.answers_dropped.labels("ami_down").inc()
            log.warning("call %s: answer not delivered: %s", request.uniqueid, exc)
            return False
        return True
