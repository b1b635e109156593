"""Routing requests from the shipped dialplan, over AMI.

The dialplan raises ``UserEvent(ICMRoute, ICMToken: <token>, ICMNumber: <number>)`` and
waits for ``ICM_REPLY`` on its channel to start with its token. This entry answers with one
``Setvar ICM_REPLY=token|status|dial|manager|source|dial_timeout`` (one action: the answer
lands whole or not at all), and only before the request's deadline: an answer that would
come late is dropped, never sent, and the channel is never moved (no Redirect).
The dialplan also reports how each call ended (``ICMResult``); that feeds a metric.

Overload: a request read long after Asterisk raised it (its ``Timestamp``, see
:mod:`icm.ami.lag`) waited in a backlog, and so did its caller; a request read by a
daemon whose own queue is long (the last request waited that long between being read
and being started on) will wait there too. Past half its budget that way it is answered
TIMEOUT at once (the call goes back to its scenario now, not at the end of its wait, and
the daemon spends nothing on a lookup, which lets it catch up); read past its budget it
gets no answer at all (the dialplan stopped waiting and already went on with TIMEOUT).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
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
QUEUE_SEEN_S = 1.0  # how long the wait of the last request started on is taken as current
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
        # Those deciding (claim, lookup): bounded by MAX_IN_FLIGHT. An answer written and
        # awaiting Asterisk's confirmation costs little and does not count.
        self._deciding: set[asyncio.Task[Any]] = set()
        # Answers written, awaiting Asterisk's confirmation.
        self._confirming: set[asyncio.Future[Message]] = set()
        self._bad = Throttled(log)
        self._late = Throttled(log, interval_s=5.0)
        # How long the last request waited between being read and being started on (the
        # event loop's own queue), and when that was seen.
        self._queued_s = 0.0
        self._queued_at = -math.inf
        # Tokens whose outcome was counted: the dialplan may report an outcome twice.
        self._outcomes: collections.OrderedDict[str, None] = collections.OrderedDict()
        # Told (uniqueid, extension) when the dialplan reports a deputy took the call.
        self.on_deputy: Callable[[str, str], None] | None = None

    @property
    def in_flight(self) -> int:
        """Requests being decided or answered, and answers awaiting confirmation."""
        return len(self._tasks) + len(self._confirming)

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
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        if self._confirming:  # the answers those tasks wrote, confirmed
            await asyncio.wait(list(self._confirming), timeout=max(0.0, until - loop.time()))
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
        if len(self._deciding) >= MAX_IN_FLIGHT:
            # A flood (a runaway dialplan, hostile input): the calls over the limit get
            # their dialplan's own TIMEOUT rather than take the daemon down.
            self.metrics.answers_dropped.labels("overloaded").inc()
            self._bad.warning("%d routing requests in flight: dropping new ones", MAX_IN_FLIGHT)
            return
        if not self.accepting:
            self.metrics.answers_dropped.labels("stopping").inc()
            if self.claim is None:  # nobody else will answer: send the call back now
                stopping = Decision(Status.TIMEOUT, reason="ICM is stopping")
                self._spawn(self._deliver(request, stopping, recorded=False))
            return
        self.metrics.requests.labels("ami").inc()
        now = asyncio.get_running_loop().time()
        queued = self._queued()
        if age + queued < request.timing.shed_after_s:
            self._spawn(self._handle(request, snapshot.router, parsed=now), deciding=True)
        elif now < request.timing.send_by(request.received):
            self.metrics.requests_shed.inc()
            self._late.warning(
                "call %s: %.0f ms behind (%.0f ms in Asterisk's backlog, %.0f ms in this "
                "daemon's queue): answered TIMEOUT at once (the daemon is overloaded)",
                request.uniqueid,
                (age + queued) * 1000,
                age * 1000,
                queued * 1000,
            )
            reason = f"{(age + queued) * 1000:.0f} ms behind: the daemon is overloaded"
            shed = Decision(Status.TIMEOUT, reason=reason)
            if self.claim is None:
                self._answer_now(request, shed, parsed=now)
            else:  # one instance answers, even TIMEOUT
                self._spawn(self._handle(request, snapshot.router, shed, parsed=now), deciding=True)
        else:
            self.metrics.answers_dropped.labels("late").inc()
            self._late.warning(
                "call %s waited %.0f ms in a backlog before it was read: no answer, the "
                "dialplan stopped waiting (the daemon is overloaded)",
                request.uniqueid,
                age * 1000,
            )

    def _queued(self) -> float:
        """How long a request now waits in this daemon before it is started on: what the
        last one waited, if it is recent (a saturated loop starts requests all the time)."""
        now = asyncio.get_running_loop().time()
        return self._queued_s if now - self._queued_at < QUEUE_SEEN_S else 0.0

    def _started(self, parsed: float) -> None:
        now = asyncio.get_running_loop().time()
        self._queued_s, self._queued_at = now - parsed, now

    def _spawn(self, work: Coroutine[Any, Any, object], *, deciding: bool = False) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if deciding:
            self._deciding.add(task)
            task.add_done_callback(self._deciding.discard)

    async def _handle(
        self,
        request: RouteRequest,
        router: Router,
        decided: Decision | None = None,
        *,
        parsed: float,
    ) -> None:
        """Claim the call (several instances), decide (unless ``decided``), answer."""
        self._started(parsed)
        self.metrics.in_flight.inc()
        try:
            if self.claim is not None and not await self.claim(request):
                return
            decision = decided or await decide(router, request, "ami")
            self._deciding.discard(asyncio.current_task())  # type: ignore[arg-type]
            await self._deliver(request, decision)
        finally:
            self.metrics.in_flight.dec()

    async def _deliver(
        self, request: RouteRequest, decision: Decision, *, recorded: bool = True
    ) -> None:
        """Send the answer unless its budget is spent (waiting for a lost link meanwhile);
        ``recorded``: log the decision and count it once Asterisk confirms it."""
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
            if recorded:
                self._record(request, decision, delivered=False)
            return
        self._send(request, decision, recorded=recorded)

    def _setvar(self, request: RouteRequest, decision: Decision) -> dict[str, str]:
        value = self.reply(request, decision)
        return {"Channel": request.channel, "Variable": "ICM_REPLY", "Value": value}

    def _answer_now(self, request: RouteRequest, decision: Decision, *, parsed: float) -> None:
        """Write the answer before returning: from inside a read of a backlog, a task
        would run only once the whole read is handled."""
        # When the loop gets round to this is this daemon's own queue (see _queued).
        asyncio.get_running_loop().call_soon(self._started, parsed)
        self._send(request, decision, recorded=True)

    def _send(self, request: RouteRequest, decision: Decision, *, recorded: bool) -> None:
        """Write the answer now. Asterisk's confirmation is awaited by no task (behind a
        backlog thousands may be awaited at once): :meth:`_confirmed` takes it."""
        try:
            sent = self.ami.action_now("Setvar", self._setvar(request, decision))
        except AmiError as exc:
            self.metrics.answers_dropped.labels("ami_down").inc()
            self._late.warning("call %s: answer not delivered: %s", request.uniqueid, exc)
            if recorded:
                self._record(request, decision, delivered=False)
            return
        self._confirming.add(sent)
        sent.add_done_callback(functools.partial(self._confirmed, request, decision, recorded))

    def _confirmed(
        self,
        request: RouteRequest,
        decision: Decision,
        recorded: bool,
        sent: asyncio.Future[Message],
    ) -> None:
        """Whether Asterisk took the answer written: counted, and the decision logged."""
        self._confirming.discard(sent)
        error = AmiError("cancelled") if sent.cancelled() else sent.exception()
        if isinstance(error, AmiActionError):
            gone = "no such channel" in str(error).lower()
            self.metrics.answers_dropped.labels("caller_gone" if gone else "refused").inc()
            if gone:
                log.info("call %s: the caller hung up before the answer", request.uniqueid)
            else:
                log.warning("call %s: Asterisk refused the answer: %s", request.uniqueid, error)
        elif error is not None:
            self.metrics.answers_dropped.labels("ami_down").inc()
            self._late.warning("call %s: answer not delivered: %s", request.uniqueid, error)
        if recorded:
            self._record(request, decision, delivered=error is None)

    def _record(self, request: RouteRequest, decision: Decision, *, delivered: bool) -> None:
        total_ms = self.elapsed_ms(request)
        record(decision, request, self.metrics, entry="ami", total_ms=total_ms, delivered=delivered)
