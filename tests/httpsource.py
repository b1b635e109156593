"""A minimal HTTP-backed source, shaped like a CRM connector, and a hostile HTTP server to
point it at. The fault tests use them to show that a source that hangs, fails, rate-limits,
answers garbage or a 50 MB body, or closes the connection costs the call nothing but that
source's own timeout.

The pattern a real connector (amoCRM, Bitrix24, Megaplan) must follow is all here:

* every network failure becomes a :class:`~icm.sources.SourceError` naming the source,
  the host and the reason (never the URL's query, never the token);
* the body is read at most ``max_body_bytes`` (a declared Content-Length above it is
  refused before reading; an undeclared one is cut while reading);
* the token comes from an environment variable (``token_env``), goes in a header, and is
  never part of a message.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import ClassVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from pydantic import Field

from icm.model import Answer
from icm.secrets import read_secret
from icm.sources import SourceContext, SourceError, SourceSettings, SourceTimeout

TOKEN_ENV = "ICM_TEST_CRM_TOKEN"


class HttpTestSettings(SourceSettings):
    url: str = "http://127.0.0.1:1/lookup"
    token_env: str = TOKEN_ENV
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)


class HttpTestSource:
    """``GET {url}?phone=+7...`` with ``Authorization: Bearer <token>``; 200 with
    ``{"extension": "101"}`` (or ``{"number": ...}``) is an answer, 404 is "unknown"."""

    name: ClassVar[str] = "crm"
    Settings: ClassVar[type[SourceSettings]] = HttpTestSettings

    def __init__(self, settings: SourceSettings, context: SourceContext | None = None) -> None:
        assert isinstance(settings, HttpTestSettings)
        self.settings = settings
        self.host = urlsplit(settings.url).netloc
        self._token = read_secret("the CRM token", settings.token_env, None, os.environ)
        self._session: aiohttp.ClientSession | None = None
        self.bytes_read = 0  # of the last answer: proves the body cap

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self._token.get_secret_value()}"}
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def lookup(self, number: str) -> Answer | None:
        assert self._session is not None, "start() first"
        self.bytes_read = 0
        try:
            async with self._session.get(self.settings.url, params={"phone": number}) as response:
                if response.status == 404:
                    return None
                if response.status == 429:
                    wait = response.headers.get("Retry-After", "?")
                    raise self._error(f"rate limited (HTTP 429, retry after {wait} s)")
                if response.status != 200:
                    raise self._error(f"HTTP {response.status}")
                body = await self._read(response)
        except aiohttp.ClientError as exc:
            raise self._error(f"connection failed ({type(exc).__name__})") from None
        except TimeoutError:
            raise SourceTimeout(self.name, "no answer in time", self.host) from None
        try:
            data = json.loads(body)
        except ValueError:
            raise self._error("the answer is not JSON") from None
        if not isinstance(data, dict):
            raise self._error("the answer is not a JSON object")
        if isinstance(data.get("extension"), str):
            return Answer(extension=data["extension"], detail="responsible user")
        if isinstance(data.get("number"), str):
            return Answer(number=data["number"], detail="responsible user's phone")
        raise self._error("the answer names no extension or number")

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.settings.max_body_bytes
        if response.content_length is not None and response.content_length > limit:
            raise self._error(f"answer of {response.content_length} bytes refused (limit {limit})")
        body = bytearray()
        while True:
            chunk = await response.content.read(limit + 1 - len(body))
            if not chunk:
                return bytes(body)
            body += chunk
            self.bytes_read = len(body)
            if len(body) > limit:
                raise self._error(f"answer larger than {limit} bytes, not read further")

    def _error(self, reason: str) -> SourceError:
        return SourceError(self.name, reason, self.host)


class HostileCrm:
    """An HTTP server on 127.0.0.1 whose paths misbehave: ``/ok`` (extension 102),
    ``/unknown`` (404), ``/hang`` (never answers), ``/trickle`` (headers, then a byte now
    and then), ``/500``, ``/429``, ``/garbage``, ``/huge`` (50 MB, undeclared length),
    ``/huge-declared`` (Content-Length 50 MB), ``/close`` (closes without answering)."""

    HUGE = 50 * 1024 * 1024

    def __init__(self) -> None:
        self.app = web.Application()
        for path, handler in {
            "/ok": self._ok,
            "/unknown": self._unknown,
            "/hang": self._hang,
            "/trickle": self._trickle,
            "/500": self._error,
            "/429": self._rate_limited,
            "/garbage": self._garbage,
            "/huge": self._huge,
            "/huge-declared": self._huge_declared,
            "/close": self._close,
        }.items():
            self.app.router.add_get(path, handler)
        self.requests: list[web.Request] = []
        self.authorizations: list[str] = []
        self.huge_sent = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _seen(self, request: web.Request) -> None:
        self.requests.append(request)
        self.authorizations.append(request.headers.get("Authorization", ""))

    async def _ok(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.json_response({"extension": "102"})

    async def _unknown(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.json_response({"error": "no such contact"}, status=404)

    async def _hang(self, request: web.Request) -> web.Response:
        self._seen(request)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"extension": ')
        while True:
            await asyncio.sleep(0.1)
            await response.write(b" ")

    async def _error(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=500, text="Internal Server Error")

    async def _rate_limited(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=429, headers={"Retry-After": "30"}, text="Too Many Requests")

    async def _garbage(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(
            body=b"\x00\xff<html>{{not json", headers={"Content-Type": "application/json"}
        )

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b'{"extension": "1' + b"0" * (64 * 1024 - 16)
        try:
            while self.huge_sent < self.HUGE:
                await response.write(chunk)
                self.huge_sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the source stopped reading and closed: expected
        return response

    async def _huge_declared(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = self.HUGE
        await response.prepare(request)
        try:
            for _ in range(self.HUGE // 65536):
                await response.write(b"0" * 65536)
                self.huge_sent += 65536
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def _close(self, request: web.Request) -> web.Response:
        self._seen(request)
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")
