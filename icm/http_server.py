"""The daemon's HTTP side: ``/metrics`` for Prometheus, ``/healthz`` (the process is
alive) and ``/readyz`` (it can route calls: logged in to AMI, store open)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST

from icm.config import HttpSettings, split_host_port
from icm.connections import HTTP_IDLE_S, ConnectionBudget, GatedSite
from icm.logs import Throttled
from icm.metrics import Metrics
from icm.safetext import shown

log = logging.getLogger(__name__)

Readiness = Callable[[], dict[str, object]]


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
        self.app = web.Application()
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
