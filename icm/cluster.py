"""Several instances watching one Asterisk: exactly one acts on each call.

Every instance receives every AMI event. Before answering a routing request (or learning
a finished call) an instance claims it in the shared store: ``claim`` is "set if absent"
with a short expiry, so the first claim wins and the others stand aside. Each claim's
value is a token of its own, so a claim whose answer was lost and that the Redis client
sent again finds its own token and wins (it set the key the first time). No leader, no
election: when an instance dies, the others simply win every later claim.

If the store cannot be reached the claim is granted: answering a call twice is harmless
(the dialplan reads one answer; both carry the same token), leaving it unanswered is not.
A claim that is merely slow because this process is busy (a burst of calls) is not
granted: the store answers other claims meanwhile, so it is alive, and its answer decides.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket

from icm.logs import Throttled
from icm.metrics import Metrics
from icm.model import RouteRequest
from icm.store import Store, StoreError

log = logging.getLogger(__name__)


def instance_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class Claims:
    """Claims calls in the shared store, so that one instance acts on each.

    :param ttl_s: how long a claim lives (longer than any decision).

    How long a claim may take before it is granted anyway is the caller's
    :attr:`icm.model.Timing.claim_timeout_s`: under a burst of calls, claims queue behind
    each other, so it is a good part of the lookup budget, not a network round trip.
    """

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        instance: str | None = None,
        ttl_s: float = 30.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.instance = instance or instance_name()
        self.ttl_s = ttl_s
        self._log = Throttled(log)
        # Loop time the store last answered a claim: a store that answers others is alive.
        self._answered_at = -math.inf

    def _token(self) -> str:
        """This instance's name and a part of its own for one claim: the same call claimed
        twice by one instance (a repeated event) is still answered once."""
        return f"{self.instance}:{secrets.token_hex(4)}"

    async def route(self, request: RouteRequest) -> bool:
        """True if this instance answers ``request``."""
        key = f"claim:route:{request.token}"
        return await self._claim("route", key, request.timing.claim_timeout_s)

    async def learn(self, uniqueid: str, timeout_s: float) -> bool:
        """True if this instance learns the call ``uniqueid``."""
        return await self._claim("learn", f"claim:learn:{uniqueid}", timeout_s)

    async def _claim(self, kind: str, key: str, timeout_s: float) -> bool:
        """The store's answer to the claim. Granted without it only when the store is
        unreachable (an error), or answers nothing for ``timeout_s`` while this process
        keeps up. A claim still waiting after ``timeout_s`` while the store answers other
        claims, or while this process fell behind (a stalled loop), waits inside this busy
        process (a burst), not on the store: its answer decides."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        claim = asyncio.ensure_future(self.store.claim(key, self._token(), self.ttl_s))
        grace = min(0.02, timeout_s / 10)
        wait_s = timeout_s
        stalled = False  # this process fell behind while the claim waited
        try:
            while True:
                due = loop.time() + wait_s
                await asyncio.wait({claim}, timeout=wait_s)
                if claim.done():
                    break
                stalled |= loop.time() - due > timeout_s / 4
                if not stalled and self._answered_at <= started:
                    # Judge the store only once this process has caught up with what it
                    # has read: a short wait that itself passes on time.
                    due = loop.time() + grace
                    await asyncio.wait({claim}, timeout=grace)
                    if claim.done():
                        break
                    stalled |= loop.time() - due > grace
                    if not stalled and self._answered_at <= started:
                        claim.add_done_callback(_forget)
                        reason = f"no answer within {timeout_s * 1000:.0f} ms"
                        return self._unavailable(kind, reason)
                # The store answers other claims, or this process was too busy to tell:
                # the store's answer decides (the client's own timeout bounds the wait).
                wait_s = grace
            won = claim.result()
        except StoreError as exc:
            return self._unavailable(kind, str(exc))
        except asyncio.CancelledError:
            claim.cancel()
            raise
        self._answered_at = loop.time()
        self.metrics.claims.labels(kind, "won" if won else "lost").inc()
        return won

    def _unavailable(self, kind: str, reason: str) -> bool:
        self.metrics.claims.labels(kind, "unavailable").inc()
        self._log.warning("cannot claim a call in the store (%s): acting on it anyway", reason)
        return True


def _forget(claim: asyncio.Future[bool]) -> None:
    """A claim given up on: its outcome is read so that nothing is logged about it."""
    if not claim.cancelled():
        claim.exception()
