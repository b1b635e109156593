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

    async def user_event(self, name: str, body: list[tuple[str, str]]) -> None: ...

    async def dial(self, dialstring: str, timeout_s: float | None, options: str) -> str: ...

    async def app(self, name: str, args: list[str]) -> None: ...

    async def curl(self, url: str, options: dict[str, str]) -> str:
        """``CURL(url)``: the body whatever the HTTP status, "" if the request failed.
        ``options`` are the channel's ``CURLOPT()`` settings (conntimeout, httptimeout)."""
        ...
