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

import logging

from aiohttp import web

from icm.entries.base import Entry, decide, record, reply_line
from icm.model import Decision, Status

log = logging.getLogger(__name__)


class HttpEntry(Entry):
    """Routing requests over HTTP (``GET /route``), answered in the response body."""

    async def route(self, request: web.Request) -> web.Response:
        try:
            return await self._route(request)
        except Exception:  # whatever failed, CURL() must not read an error page as a status
            log.exception("HTTP entry: routing request failed")
            return self._failed("internal error (see the daemon's log)")

    async def _route(self, request: web.Request) -> web.Response:
        if "number" not in request.query:
            return _empty(400, "the number query parameter is missing")
        number = request.query["number"]
        if not self.accepting:
            return _empty(503, "ICM is stopping")
        call, snapshot = self.request("", number, request.query.get("uniqueid", "")[:64])
        self.metrics.requests.labels("http").inc()
        self.metrics.in_flight.inc()
        try:
            decision = await decide(snapshot.router, call, "curl")
        finally:
            self.metrics.in_flight.dec()
        total_ms = self.elapsed_ms(call)
        record(decision, call, self.metrics, entry="http", total_ms=total_ms, delivered=True)
        if decision.status is Status.ERROR:
            return self._failed(decision.reason)
        return web.Response(text=self.reply(call, decision), content_type="text/plain")

    def _failed(self, reason: str) -> web.Response:
        """ERROR for the dialplan; the reason only in a header."""
        failed = reply_line(Decision(Status.ERROR), self.current().timing)
        return web.Response(
            status=500, text=failed, content_type="text/plain", headers={"X-ICM-Error": reason}
        )


def _empty(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text="", headers={"X-ICM-Error": reason})
