"""The daemon's HTTP side: ``/metrics`` for Prometheus, ``/healthz`` (the process is
alive) and ``/readyz`` (it can route calls: logged in to AMI, store open)."""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST

from icm.config import HttpSettings, split_host_port
from icm.connections import HTTP_IDLE_S, ConnectionBudget, GatedSite
from icm.logs import Throttled
from icm.metrics import Metrics
from icm.numbers import is_digits
from icm.safetext import shown

log = logging.getLogger(__name__)

Readiness = Callable[[], dict[str, object]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpServer:
    """The daemon's HTTP server: metrics, health and readiness (entries add routes).

    :param readiness: returns the readiness report; ``ready`` (bool) decides the
    status code (200 or 503)."""

    def __init__(
        self,
        settings: HttpSettings,
        metrics: Metrics,
        readiness: Readiness,
        *,
        budget: ConnectionBudget | None = None,
    ) -> None:
        self.settings = settings
        self.budget = budget or ConnectionBudget()
        self.metrics = metrics
        self.readiness = readiness
        self.app = web.Application(middlewares=[self._known_hosts])
        self._hosts = frozenset(["localhost", *settings.hosts])
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        host, port = split_host_port(self.settings.listen)
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            logger=_server_log(),
            keepalive_timeout=HTTP_IDLE_S,
        )
        await self._runner.setup()
        site = GatedSite(self._runner, host, port, self.budget)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _known_hosts(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Only requests addressed to this machine by address, as localhost, or by a name
        in ``http.hosts``: a page in a browser on the box that got a name of its own
        resolved to 127.0.0.1 (DNS rebinding) sends that name, and is refused."""
        host = request.headers.get("Host")
        if host is not None and not self.known_host(host):
            return web.Response(
                status=421, text="", headers={"X-ICM-Error": "unknown host name (http.hosts)"}
            )
        return await handler(request)

    def known_host(self, host: str) -> bool:
        """Whether a Host header names this daemon: an IP address, localhost, or one of
        ``http.hosts``, with or without a port."""
        if host.startswith("["):
            name, _, rest = host[1:].partition("]")
            if rest and not (rest.startswith(":") and is_digits(rest[1:])):
                return False
        else:
            name, sep, port = host.rpartition(":")
            if not sep or not is_digits(port):
                name = host
        name = name.lower().rstrip(".")
        if name in self._hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        report = self.readiness()
        status = 200 if report.get("ready") else 503
        return web.Response(
            text=json.dumps(report, indent=1) + "\n",
            status=status,
            content_type="application/json",
        )


class _BadRequests(logging.Filter):
    """aiohttp logs a malformed or over-long request (the peer's doing, not a fault of
    ours) as a traceback at ERROR: one throttled warning line instead."""

    def __init__(self) -> None:
        super().__init__()
        self._log = Throttled(log)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        self._log.warning("HTTP: refused a bad request from %s: %s", peer, shown(exc.message))
        return False


def _server_log() -> logging.Logger:
    """The logger aiohttp's server writes to, with bad requests made one line."""
    server = logging.getLogger("icm.http.server")
    if not any(isinstance(f, _BadRequests) for f in server.filters):
        server.addFilter(_BadRequests())
    return server
