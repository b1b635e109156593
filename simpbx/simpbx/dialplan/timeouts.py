"""``TIMEOUT(absolute)`` (``funcs/func_timeout.c``): hang the channel up after a delay.

Reading gives the seconds left with three decimals ("0" when none is set); writing
``sscanf("%ld%lf")``-parses the value, and 0, a negative or an unreadable value cancels it.
When it runs out the channel gets the "timeout" soft hangup; the PBX loop then jumps to the
``T`` extension of the current context if there is one (see ``Interpreter._pbx_loop``)."""

from __future__ import annotations

import asyncio

from simpbx.dialplan.clib import scan_float, scan_int
from simpbx.dialplan.errors import DialplanError
from simpbx.dialplan.host import ChannelHost, soft_hangup


def parse_offset(value: str) -> float:
    """The offset ``timeout_write`` takes: ``%30ld`` whole seconds, then ``%30lf`` read from
    what follows (so "1.500" is 1 s and 0.5 s); 0 means none."""
    scanned = scan_int(value)
    if scanned is None:
        return 0.0
    seconds, pos = scanned
    if seconds < 0:
        return 0.0
    fraction = scan_float(value[pos:])
    return seconds + (fraction or 0.0)


class AbsoluteTimeout:
    """One channel's ``whentohangup``."""

    def __init__(self, channel: ChannelHost) -> None:
        self.channel = channel
        self._when: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def read(self, args: str) -> str:
        if not args[:1] or args[:1] not in "aA":
            raise_unsupported(args)
        if self._when is None:
            return "0"
        left_ms = int((self._when - asyncio.get_running_loop().time()) * 1000)
        return f"{left_ms / 1000.0:.3f}"

    def write(self, args: str, value: str) -> None:
        if not args[:1] or args[:1] not in "aA":
            raise_unsupported(args)
        self.set(parse_offset(value))

    def set(self, offset_s: float) -> None:
        """``ast_channel_setwhentohangup_tv``: from now, or cancel with 0."""
        self.cancel()
        if offset_s > 0:
            loop = asyncio.get_running_loop()
            self._when = loop.time() + offset_s
            self._timer = loop.call_later(offset_s, soft_hangup, self.channel, "timeout")

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._when = None


def raise_unsupported(args: str) -> None:
    raise DialplanError(f"TIMEOUT({args}) is not supported (only TIMEOUT(absolute))")
