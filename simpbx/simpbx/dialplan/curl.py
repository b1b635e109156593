"""CURL() and CURLOPT() on a channel: the options set, and the bodies fetched."""

from __future__ import annotations

from collections.abc import Callable

from simpbx.dialplan.errors import DialplanError
from simpbx.dialplan.host import ChannelHost

_SIMULATED_OPTIONS = ("conntimeout", "httptimeout")


class Curl:
    """A channel's CURLOPT() settings and the bodies its CURL() calls fetched."""

    def __init__(self) -> None:
        self.options: dict[str, str] = {}
        self.results: list[str] = []

    async def prefetch(
        self,
        data: str,
        substitute: Callable[[str], str],
        channel: ChannelHost,
    ) -> str:
        """CURL() does network I/O, which substitution (synchronous here, blocking in
        Asterisk) cannot await: each ``${CURL(url)}`` is fetched first, its arguments
        substituted, and replaced by a reference to the result that substitution reads."""
        out = []
        pos = 0
        while (start := data.find("${CURL(", pos)) >= 0:
            depth, end = 0, start
            for end in range(start, len(data)):
                if data.startswith("${", end):
                    depth += 1
                elif data[end] == "}":
                    depth -= 1
                    if depth == 0:
                        break
            inner = data[start + len("${CURL(") : end]
            url = substitute(inner[: inner.rfind(")")] if ")" in inner else inner)
            self.results.append(await channel.curl(url, dict(self.options)))
            out.append(data[pos:start] + f"${{CURL({len(self.results) - 1})}}")
            pos = end + 1
        out.append(data[pos:])
        return "".join(out)

    def result(self, args: str) -> str:
        """``${CURL(n)}`` as :meth:`prefetch` left it: the n-th body fetched."""
        if not args.isdigit() or int(args) >= len(self.results):
            raise DialplanError(f"CURL({args}) was not fetched")
        return self.results[int(args)]

    def option(self, name: str) -> str:
        return self.options.get(name.lower(), "")

    def set_option(self, name: str, value: str) -> None:
        if name.lower() not in _SIMULATED_OPTIONS:
            raise DialplanError(f"CURLOPT({name}) is not simulated")
        self.options[name.lower()] = value
