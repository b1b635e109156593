"""What the interpreter needs from the channel and the PBX around it."""

from __future__ import annotations

import asyncio
from typing import Protocol


class ChannelHost(Protocol):
    """What the interpreter needs from the (fake) channel and PBX around it."""

    name: str
    uniqueid: str
    caller_num: str
    caller_name: str
    variables: dict[str, str]
    globals: dict[str, str]
    hangup_requested: asyncio.Event
    soft_hangups: set[str]
    """Why a hangup is pending, Asterisk's softhangup flags: "dev" (the caller or the
    device hung up), "timeout" (``TIMEOUT(absolute)`` ran out). ``hangup_requested`` is
    set while one is pending; change both through :func:`soft_hangup`."""

    async def user_event(self, name: str, body: list[tuple[str, str]]) -> None: ...

    async def dial(self, dialstring: str, timeout_s: float | None, options: str) -> str: ...

    async def app(self, name: str, args: list[str]) -> None: ...

    async def curl(self, url: str, options: dict[str, str]) -> str:
        """``CURL(url)``: the body whatever the HTTP status, "" if the request failed.
        ``options`` are the channel's ``CURLOPT()`` settings (conntimeout, httptimeout)."""
        ...


def soft_hangup(channel: ChannelHost, cause: str = "dev") -> None:
    """``ast_softhangup``: ask the channel to hang up, for ``cause``."""
    channel.soft_hangups.add(cause)
    channel.hangup_requested.set()


def clear_soft_hangup(channel: ChannelHost, cause: str) -> None:
    """``ast_channel_clear_softhangup``: withdraw one cause; the channel is alive again
    only when no other cause is pending."""
    channel.soft_hangups.discard(cause)
    if not channel.soft_hangups:
        channel.hangup_requested.clear()
