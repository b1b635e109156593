"""Routing requests over HTTP, for dialplans that use ``CURL()``.

``GET /route?number=NUMBER[&uniqueid=UNIQUEID]`` on the daemon's HTTP address (loopback
by default) answers one line, ``status|dial|manager|source|dial_timeout``, the same
fields as ``ICM_REPLY`` without the token, for every decision: ``NOTFOUND`` too, so that
an empty body only ever means "ICM did not answer". The shipped ``[icm-curl]`` context
reads an empty body (the daemon down, hung past ``CURLOPT(httptimeout)``, stopping) as
``TIMEOUT``, the status the AMI and FastAGI entries give in the same case. A decision
that failed is the line ``ERROR|...`` with status 500 (``CURL()`` returns the body
whatever the status); the reason is in the ``X-ICM-Error`` header, never in the body.
An empty ``number`` is a hidden caller ID (``ANONYMOUS``); a missing one is a 400.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable

from aiohttp import web

from icm.connections import ConnectionBudget
from icm.entries.base import Entry, decide, record, reply_line
from icm.logs import Throttled
from icm.metrics import Metrics
from icm.model import Decision, Status
from icm.snapshot import Snapshot

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64  # /route requests being decided at once; beyond: TIMEOUT at once


class HttpEntry(Entry):
    """Routing requests over HTTP (``GET /route``), answered in the response body.

    Under a flood it answers within the budget or not at all: with MAX_IN_FLIGHT
    requests being decided, a new connection is closed unread and a request already
    read is answered TIMEOUT at once (the scenario goes on); one that waited in the
    queues until its budget was spent gets no answer (the connection is closed: the
    dialplan reads that as TIMEOUT too, and an answer after the budget is one nobody
    waits for). The AMI entry shares the loop and keeps it.
    """

    def __init__(
        self,
        current: Callable[[], Snapshot],
        *,
        metrics: Metrics,
        connections: ConnectionBudget | None = None,
        key: str = "",
    ) -> None:
        super().__init__(current, metrics=metrics)
        self.key = key  # http.token: what the key= query parameter must be, if set
        self.connections = connections or ConnectionBudget()
        self.connections.overloaded = self.overloaded
        self.deciding = 0
        self._shed = Throttled(log)

    def overloaded(self) -> bool:
        """The in-flight cap reached: new connections are shed unread (requests already
        read get TIMEOUT)."""
        return self.deciding >= MAX_IN_FLIGHT

    async def route(self, request: web.Request) -> web.Response:
        try:
            return await self._route(request)
        except Exception:  # whatever failed, CURL() must not read an error page as a status
            log.exception("HTTP entry: routing request failed")
            return self._failed("internal error (see the daemon's log)")

    async def _route(self, request: web.Request) -> web.Response:
        if self.key and not hmac.compare_digest(
            request.query.get("key", "").encode(), self.key.encode()
        ):
            return _empty(403, "the key query parameter is wrong or missing (http.token)")
        if "number" not in request.query:
            return _empty(400, "the number query parameter is missing")
        number = request.query["number"]
        if not self.accepting:
            return _empty(503, "ICM is stopping")
        now = asyncio.get_running_loop().time()
        received = self.connections.first_seen(request.transport, now)
        call, snapshot = self.request("", number, request.query.get("uniqueid", "")[:64])
        call = call.arrived(received)
        self.metrics.requests.labels("http").inc()
        if now >= call.timing.send_by(received):
            return self._drop(request, "waited past the budget")
        if self.deciding >= MAX_IN_FLIGHT:
            self._shed.warning(
                "HTTP: %d /route requests being decided: TIMEOUT for the next ones", self.deciding
            )
            decision = Decision(Status.TIMEOUT, reason="too many HTTP requests at once")
            total_ms = self.elapsed_ms(call)
            record(decision, call, self.metrics, entry="http", total_ms=total_ms, delivered=True)
            return web.Response(text=self.reply(call, decision), content_type="text/plain")
        self.deciding += 1
        self.metrics.in_flight.inc()
        try:
            decision = await decide(snapshot.router, call, "curl")
        finally:
            self.deciding -= 1
            self.metrics.in_flight.dec()
        total_ms = self.elapsed_ms(call)
        if asyncio.get_running_loop().time() > call.timing.send_by(received):
            # Decided in time, but the loop ran it late: nobody waits for it any more.
            record(decision, call, self.metrics, entry="http", total_ms=total_ms, delivered=False)
            return self._drop(request, "answered past the budget")
        record(decision, call, self.metrics, entry="http", total_ms=total_ms, delivered=True)
        if decision.status is Status.ERROR:
            return self._failed(decision.reason)
        return web.Response(text=self.reply(call, decision), content_type="text/plain")

    def _drop(self, request: web.Request, why: str) -> web.Response:
        """No answer: the connection is closed (the dialplan reads TIMEOUT)."""
        self.metrics.answers_dropped.labels("late").inc()
        self._shed.warning("HTTP: a /route request not answered: %s", why)
        if request.transport is not None:
            request.transport.abort()
        return _empty(503, why)

    def _failed(self, reason: str) -> web.Response:
        """ERROR for the dialplan; the reason only in a header."""
        failed = reply_line(Decision(Status.ERROR), self.current().timing)
        return web.Response(
            status=500, text=failed, content_type="text/plain", headers={"X-ICM-Error": reason}
        )


def _empty(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text="", headers={"X-ICM-Error": reason})
