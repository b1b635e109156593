"""How long an event waited before the daemon read it, on Asterisk's own clock.

With ``timestampevents = yes`` in manager.conf, Asterisk stamps every event (and its Ping
reply) with the time it sent it. An event read long after its stamp waited in a backlog:
in Asterisk's queue, the socket, or the daemon's own read buffer. The caller behind a
routing request has been waiting just as long.

The two clocks need not agree (Asterisk on another host): the smallest delay seen lately
is taken as the clocks' difference plus the fastest way here, and the age is what is
beyond it. Until a fresh event has been seen the baseline is high, so the age is
underestimated, never overestimated: a wrong clock can make the daemon shed less, never
shed a call that did not wait.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

WINDOW_S = 120.0  # the baseline is the smallest delay seen in the last one or two windows


class Lag:
    """Ages of events, from their ``Timestamp`` header.

    :param clock: wall clock (seconds since the epoch), as Asterisk's stamps are.
    """

    def __init__(self, clock: Callable[[], float] = time.time, window_s: float = WINDOW_S) -> None:
        self._clock = clock
        self._window_s = window_s
        self._current = math.inf  # smallest delay in the current window
        self._previous = math.inf
        self._since = clock()

    def observe(self, stamp: str) -> float:
        """Seconds the event stamped ``stamp`` waited beyond the usual delay; 0.0 when it
        carries no usable stamp."""
        if not stamp:
            return 0.0
        try:
            sent = float(stamp)
        except ValueError:
            return 0.0
        if not math.isfinite(sent):
            return 0.0
        now = self._clock()
        if now - self._since >= self._window_s:
            self._previous, self._current, self._since = self._current, math.inf, now
        delay = now - sent
        self._current = min(self._current, delay)
        return max(0.0, delay - min(self._current, self._previous))
