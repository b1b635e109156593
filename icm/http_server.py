"""The daemon's HTTP side: ``/metrics`` for Prometheus, ``/healthz`` (the process is
alive) and ``/readyz`` (it can route calls: logged in to AMI, store open)."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from icm.config import HttpSettings, split_host_port
from icm.metrics import Metrics

Readiness = Callable[[], dict[str, object]]


class HttpServer:
    """The daemon's HTTP server: metrics, health and readiness (entries add routes).

    :param readiness: returns the readiness report; ``ready`` (bool) decides the
    status code (200 or 503)."""

    def __init__(self, settings: HttpSettings, metrics: Metrics, readiness: Readiness) -> None:
        self.settings = settings
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
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
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
