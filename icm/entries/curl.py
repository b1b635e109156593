"""Routing requests over HTTP, for dialplans that use ``CURL()``.

``GET /route?number=NUMBER[&uniqueid=UNIQUEID]`` on the daemon's HTTP address (loopback
by default) answers one line, ``status|dial|manager|source|dial_timeout``, the same
fields as ``ICM_REPLY`` without the token. The body is empty when nobody knows the caller
and there is nothing to dial, so a dialplan that only checks for an empty answer falls
back by itself. A failure never answers 200 with an error text: it answers 500 with an
empty body (``CURL()`` returns the body whatever the status), the reason in the
``X-ICM-Error`` header.
"""

from __future__ import annotations

import logging

from aiohttp import web

from icm.entries.base import Entry, decide, record
from icm.model import Status

log = logging.getLogger(__name__)


class HttpEntry(Entry):
    """Routing requests over HTTP (``GET /route``), answered in the response body."""

    async def route(self, request: web.Request) -> web.Response:
        try:
            return await self._route(request)
        except Exception:  # whatever failed, CURL() must not read an error page as a status
            log.exception("HTTP entry: routing request failed")
            return _empty(500, "internal error (see the daemon's log)")

    async def _route(self, request: web.Request) -> web.Response:
        number = request.query.get("number", "")
        if not number:
            return _empty(400, "the number query parameter is missing")
        if not self.accepting:
            return _empty(503, "ICM is stopping")
        call, snapshot = self.request("", number, request.query.get("uniqueid", "")[:64])
        self.metrics.requests.labels("http").inc()
        self.metrics.in_flight.inc()
        try:
            decision = await decide(snapshot.router, call)
        finally:
            self.metrics.in_flight.dec()
        total_ms = self.elapsed_ms(call)
        record(decision, call, self.metrics, entry="http", total_ms=total_ms, delivered=True)
        if decision.status is Status.ERROR:
            return _empty(500, decision.reason)
        if decision.status is Status.NOTFOUND and not decision.dial:
            return web.Response(text="", content_type="text/plain")
        return web.Response(text=self.reply(call, decision), content_type="text/plain")


def _empty(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text="", headers={"X-ICM-Error": reason})
