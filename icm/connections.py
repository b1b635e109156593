"""Connections from outside (HTTP, FastAGI) kept within the process's file descriptors.

Each accepted connection costs a descriptor. Idle or half-sent connections held open by
a hostile local user would otherwise use them all, and then the AMI link could not
reconnect, the store could not open a file and every entry would stop answering. So:

- the HTTP and AGI sides share one :class:`ConnectionBudget`: at most the descriptor
  limit minus a reserve (:data:`RESERVE_FDS`, for AMI, the store, the CRMs, the logs);
  a connection over it is closed at once;
- an HTTP connection lives at most :data:`HTTP_CONNECTION_S` (a routing request is
  answered within the lookup budget; a half-sent request is not waited for), and an
  idle keep-alive one :data:`HTTP_IDLE_S` (aiohttp's ``keepalive_timeout``);
- the soft descriptor limit is raised to the hard one at start-up;
- "Too many open files" is one throttled log line, not a traceback per attempt.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import struct
import weakref
from collections.abc import Callable
from typing import Any

from aiohttp import web

from icm.logs import Throttled

log = logging.getLogger(__name__)

RESERVE_FDS = 128  # descriptors never given to HTTP or AGI connections
MAX_CONNECTIONS = 4096  # HTTP and AGI connections at once, whatever the limit
HTTP_CONNECTION_S = 10.0  # an HTTP connection's whole life, keep-alive included
HTTP_IDLE_S = 5.0  # an idle keep-alive HTTP connection
LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
ACCEPT_BATCH = 32  # connections accepted in one turn of the loop
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY:
        return hard
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft


class ConnectionBudget:
    """How many HTTP and AGI connections may be open at once, and how many are."""

    def __init__(self, limit: int | None = None) -> None:
        if limit is None:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            soft = MAX_CONNECTIONS + RESERVE_FDS if soft == resource.RLIM_INFINITY else soft
            limit = min(MAX_CONNECTIONS, max(16, soft - RESERVE_FDS))
        self.limit = limit
        self.open = 0
        self.refused = 0
        self.shed = 0  # connections closed unread while the HTTP entry was overloaded
        self.overloaded: Callable[[], bool] = lambda: False
        self._log = Throttled(log)
        # When each HTTP connection was accepted, until its first request is read: a
        # request waits in the loop's queue before its handler runs, and that counts
        # against the caller's budget too.
        self._accepted: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()

    def accepted(self, transport: object, at: float) -> None:
        self._accepted[transport] = at

    def first_seen(self, transport: asyncio.BaseTransport | None, now: float) -> float:
        """When the request on ``transport`` arrived: when the kernel received its last
        bytes (it may have waited in the listen queue before the loop accepted it, and in
        the loop's queue after), else its connection's accept time for the first request
        on it, else ``now``."""
        if transport is None:
            return now
        accepted = self._accepted.pop(transport, now)
        idle = _since_last_data(transport)
        return min(now, accepted) if idle is None else min(now, now - idle)

    def take(self, entry: str) -> bool:
        """One more connection, if the budget allows it."""
        if self.open >= self.limit:
            self.refused += 1
            self._log.warning(
                "%s: %d connections open (the limit): a new one is closed at once", entry, self.open
            )
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


def _since_last_data(transport: asyncio.BaseTransport) -> float | None:
    """Seconds since the kernel last received data on this TCP connection (Linux
    ``TCP_INFO.tcpi_last_data_recv``), or None where that is not known."""
    sock = transport.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < _LAST_DATA_RECV + 4:
        return None
    (milliseconds,) = struct.unpack_from("I", info, _LAST_DATA_RECV)
    return float(milliseconds / 1000)


# struct tcp_info: 8 bytes of u8 fields, then u32 rto, ato, snd_mss, rcv_mss, unacked,
# sacked, lost, retrans, fackets, last_data_sent, last_ack_sent, last_data_recv.
_LAST_DATA_RECV = 8 + 11 * 4
_TCP_INFO_SIZE = 104


class _Guarded(asyncio.Protocol):
    """An aiohttp connection within the budget and its time limit: every protocol
    callback is passed to aiohttp's own handler."""

    def __init__(
        self,
        budget: ConnectionBudget,
        handler: Any,
        lifetime_s: float,
        overloaded: Callable[[], bool],
    ) -> None:
        self._budget = budget
        self._overloaded = overloaded
        self._handler = handler
        self._lifetime = lifetime_s
        self._timer: asyncio.TimerHandle | None = None
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._overloaded():
            # Shed at the cheapest point: no parsing, no answer (the dialplan reads an
            # empty body as TIMEOUT), the descriptor back at once.
            self._budget.shed += 1
            transport.abort()  # type: ignore[attr-defined]
            return
        if not self._budget.take("HTTP"):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._counted = True
        loop = asyncio.get_running_loop()
        self._budget.accepted(transport, loop.time())
        self._timer = loop.call_later(self._lifetime, transport.abort)  # type: ignore[attr-defined]
        self._handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:
            return
        self._counted = False
        self._budget.give_back()
        if self._timer is not None:
            self._timer.cancel()
        self._handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._counted:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._counted else None

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


class GatedSite(web.TCPSite):
    """aiohttp's TCP site, each connection within the budget and its time limit."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        budget: ConnectionBudget,
        lifetime_s: float = HTTP_CONNECTION_S,
    ) -> None:
        super().__init__(runner, host, port)
        self._budget = budget
        self._lifetime = lifetime_s

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        budget, lifetime = self._budget, self._lifetime

        def guarded() -> asyncio.Protocol:
            return _Guarded(budget, server(), lifetime, budget.overloaded)

        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in (self._host or "") else socket.AF_INET
        listening = socket.create_server((self._host, self._port), family=family)
        try:
            # asyncio accepts up to ``backlog`` connections in one go, each then set up
            # in the loop: small batches, so that AMI is read between them under a flood.
            self._server = await loop.create_server(guarded, sock=listening, backlog=ACCEPT_BATCH)
        except BaseException:
            listening.close()
            raise
        # ...while the kernel keeps a deep queue: a burst waits there (TCP_INFO still
        # tells each request's age) rather than having its handshakes dropped.
        listening.listen(LISTEN_BACKLOG)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


def quiet_out_of_fds(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Make "Too many open files" (and ENFILE, ENOBUFS) on accept one throttled line;
    other loop errors go to the previous handler. Returns a function that undoes it."""
    throttled = Throttled(log)
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_FDS:
            throttled.warning(
                "out of file descriptors (%s): new connections wait; raise LimitNOFILE (ulimit -n)",
                exc.strerror or exc,
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
    return lambda: loop.set_exception_handler(previous)
