"""Several instances watching one Asterisk: exactly one acts on each call.

Every instance receives every AMI event. Before answering a routing request (or learning
a finished call) an instance claims it in the shared store: ``claim`` is "set if absent"
with a short expiry, so the first claim wins and the others stand aside. Each claim's
value is a token of its own, so a claim whose answer was lost and that the Redis client
sent again finds its own token and wins (it set the key the first time). No leader, no
election: when an instance dies, the others simply win every later claim.

If the store cannot be reached the claim is granted: answering a call twice is harmless
(the dialplan reads one answer; both carry the same token), leaving it unanswered is not.
"""

from __future__ import annotations

import asyncio
import logging
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
        try:
            async with asyncio.timeout(timeout_s):
                won = await self.store.claim(key, self._token(), self.ttl_s)
        except (StoreError, TimeoutError) as exc:
            self.metrics.claims.labels(kind, "unavailable").inc()
            reason = str(exc) or f"no answer within {timeout_s * 1000:.0f} ms"
            self._log.warning("cannot claim a call in the store (%s): acting on it anyway", reason)
            return True
        self.metrics.claims.labels(kind, "won" if won else "lost").inc()
        return won
