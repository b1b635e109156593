"""Routing requests over FastAGI, for sites that prefer ``AGI()`` to a UserEvent.

The shipped ``[icm-agi]`` context runs ``AGI(agi://127.0.0.1:4573/route,TOKEN[,NUMBER])``.
The channel waits inside AGI while the router decides, then this entry sets the same
``ICM_REPLY`` (``token|status|dial|manager|source|timeout``) with ``SET VARIABLE`` and
closes; the dialplan goes on exactly as with the AMI entry. A daemon that is down fails
at once (``AGISTATUS=FAILURE``) and the call goes back to its scenario.

panoramisk's FastAGI ``Request`` speaks the command protocol; the AGI environment is read
here, with a time and size bound (panoramisk's own reader spins forever on a connection
closed before the environment ends: see tests/test_panoramisk_evidence.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from panoramisk.fast_agi import Request

from icm.config import AgiSettings, split_host_port
from icm.connections import ConnectionBudget
from icm.entries.base import Entry, decide, record
from icm.logs import Throttled
from icm.metrics import Metrics
from icm.numbers import is_digits
from icm.snapshot import Snapshot

log = logging.getLogger(__name__)

MAX_ENVIRONMENT = 16_384  # bytes of agi_* lines
ENVIRONMENT_TIMEOUT = 2.0


class AgiEntry(Entry):
    """Routing requests over FastAGI: a server on ``agi.listen`` answering with SET VARIABLE."""

    def __init__(
        self,
        settings: AgiSettings,
        current: Callable[[], Snapshot],
        *,
        metrics: Metrics,
        budget: ConnectionBudget | None = None,
    ) -> None:
        super().__init__(current, metrics=metrics)
        self.settings = settings
        self.budget = budget or ConnectionBudget()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._bad = Throttled(log)
        self.port = 0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        host, port = split_host_port(self.settings.listen)
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, timeout: float) -> None:
        """Close the port; let requests in flight finish within ``timeout``."""
        self.accepting = False
        if self._server is not None:
            self._server.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.budget.take("AGI"):
            writer.transport.abort()
            return
        try:
            await self._serve_counted(reader, writer)
        finally:
            self.budget.give_back()

    async def _serve_counted(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._bad.warning("AGI: connection failed: %s", exc)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        env = await _read_environment(reader)
        if env is None:
            self._bad.warning("AGI: a connection closed or stalled before its environment ended")
            return
        script = env.get("agi_network_script", "")
        token = env.get("agi_arg_1", "")
        if script != "route" or not (is_digits(token) and len(token) <= 64) or not self.accepting:
            self.metrics.answers_dropped.labels("malformed" if self.accepting else "stopping").inc()
            self._bad.warning("AGI: ignored a request for %r without a valid token", script[:40])
            return
        request, snapshot = self.request(
            token,
            env.get("agi_arg_2") or env.get("agi_callerid", ""),
            env.get("agi_uniqueid", ""),
            env.get("agi_channel", ""),
        )
        self.metrics.requests.labels("agi").inc()
        self.metrics.in_flight.inc()
        try:
            decision = await decide(snapshot.router, request, "agi")
            value = self.reply(request, decision)
            agi = Request(app=None, headers=env, reader=reader, writer=writer)
            async with asyncio.timeout(2.0):
                result = await agi.send_command(f'SET VARIABLE ICM_REPLY "{value}"')
            delivered = result.get("status_code") == 200
            if not delivered:
                # HANGUP, or 511 on a dead channel: the caller left while ICM decided.
                self.metrics.answers_dropped.labels("caller_gone").inc()
                log.info("AGI: call %s: the caller hung up before the answer", request.uniqueid)
        except (ValueError, TimeoutError, OSError) as exc:
            # Asterisk closed the channel (the caller hung up) or the link broke.
            self.metrics.answers_dropped.labels("caller_gone").inc()
            log.info("AGI: call %s: answer not delivered (%s)", request.uniqueid, exc)
            return
        finally:
            self.metrics.in_flight.dec()
        total_ms = self.elapsed_ms(request)
        record(decision, request, self.metrics, entry="agi", total_ms=total_ms, delivered=delivered)


async def _read_environment(reader: asyncio.StreamReader) -> dict[str, str] | None:
    """The ``agi_*: value`` lines up to the blank line; None if the peer closes, stalls or
    sends too much first."""
    env: dict[str, str] = {}
    size = 0
    try:
        async with asyncio.timeout(ENVIRONMENT_TIMEOUT):
            while True:
                line = await reader.readline()
                size += len(line)
                if not line or size > MAX_ENVIRONMENT:
                    return None
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if not text:
                    return env
                key, sep, value = text.partition(": ")
                if sep:
                    env[key] = value
    except (TimeoutError, ValueError):
        return None
