"""The HTTP side every CRM source shares: one aiohttp session per source, bounded time,
bounded bodies, rate limits, and every transport failure turned into a typed
:class:`~icm.sources.SourceError` (timeout, connection, bad response) that names the
source, the host and the reason only (never a URL: a Bitrix24 webhook URL holds its
secret code).

Retries: a ringing call cannot afford them, with one exception: a request that finds its
connection closed before any answer (a keep-alive connection the server dropped) is sent
once more at once. aiohttp does so itself for idempotent methods (GET: RFC 9112 section
9.3.1); tenacity does it here for the POST requests a caller declares idempotent
(Bitrix24's reads). Everything else fails for this call; the next source is asked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, TypeVar

import aiohttp
from pydantic import AfterValidator, Field
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_none
from yarl import URL

from icm import __version__
from icm.guard import RemoteSourceSettings
from icm.metrics import Metrics
from icm.ratelimit import RateLimiter, current
from icm.sources import (
    SourceBadResponse,
    SourceConnectionError,
    SourceContext,
    SourceError,
    SourceTimeout,
)

log = logging.getLogger(__name__)

USER_AGENT = f"icm/{__version__}"
# The methods aiohttp (3.9+, aio-libs/aiohttp#7363) sends again itself when the connection
# drops before an answer.
_RETRIED_BY_AIOHTTP = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_CHUNK = 64 * 1024
_ON_THE_WIRE = 1 / 3  # of the timeout: the most a request is left when it is sent
_LEAST_S = 0.05  # the least
_UNREAD = object()

E = TypeVar("E", bound=SourceError)


class HttpSourceSettings(RemoteSourceSettings):
    """Settings every HTTP (CRM) source has; each CRM sets its own defaults."""

    # Responses larger than this are refused (the source is skipped for the call).
    max_body_bytes: int = Field(default=2_000_000, ge=10_000, le=100_000_000)
    # Client-side rate limit: sustained requests per second, and the burst allowed...
    rate_per_s: float = Field(default=5.0, gt=0, le=1000)
    burst: int = Field(default=5, ge=1, le=1000)
    # ...kept this much under the limit per second: the CRM counts requests as they
    # arrive, and the network (or a pause here) brings requests closer together.
    margin_ms: int = Field(default=150, ge=0, le=1000)
    # The CRM counts requests in any one second (amoCRM): never more than the rate in any
    # second plus the margin, whatever the burst.
    per_second: ClassVar[bool] = False
    # Seconds between background refreshes of the CRM's user (employee) map.
    users_refresh_s: float = Field(default=300.0, ge=5, le=86_400)


def http_address(example: str) -> AfterValidator:
    """A settings validator: an http(s) address (like ``example``), kept without its
    trailing slash; an empty value stays empty (a field that is not always needed)."""

    def check(value: str) -> str:
        url = URL(value)
        if value and (url.scheme not in ("http", "https") or not url.host):
            raise ValueError(f"{value!r} is not an address (expected e.g. {example!r})")
        return value.rstrip("/")

    return AfterValidator(check)


class _StaleConnection(SourceConnectionError):
    """The server closed the connection before answering (a pooled keep-alive one)."""


@dataclass(slots=True)
class Reply:
    """One HTTP response, read whole: status, headers and body."""

    source: str
    host: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    _parsed: Any = field(default=_UNREAD, repr=False, compare=False)

    def json(self) -> Any:
        """The body as JSON (parsed once); :class:`SourceBadResponse` if it is not JSON."""
        if self._parsed is _UNREAD:
            try:
                self._parsed = json.loads(self.body)
            except (ValueError, UnicodeDecodeError):
                raise SourceBadResponse(
                    self.source,
                    f"malformed JSON in an HTTP {self.status} response",
                    self.host,
                    status=self.status,
                ) from None
        return self._parsed

    def retry_after(self, default: float, cap: float = 300.0) -> float:
        """Seconds the server asks to wait (``Retry-After``), else ``default``."""
        value = self.headers.get("Retry-After", "").strip()
        if not value:
            return default
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                return default
        return min(max(seconds, 0.0), cap)


class HttpClient:
    """One CRM account over HTTP: a session, its rate limit and typed errors.

    :param base_url: the API's address; relative paths are joined to it. Absolute URLs
        (pagination links) must point at the same host and scheme.
    :param timeout_s: the most one request may take (the router's limit usually cuts first).
    """

    def __init__(
        self,
        source: str,
        base_url: str,
        *,
        timeout_s: float,
        max_body: int,
        limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.source = source
        self.base = URL(base_url if base_url.endswith("/") else base_url + "/")
        self.host = self.base.host or "?"
        self.timeout_s = timeout_s
        self.max_body = max_body
        self.limiter = limiter
        self.metrics = metrics
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        self._session: aiohttp.ClientSession | None = None
        self._usual_s: float | None = None  # the CRM's usual answer time, once known

    @classmethod
    def for_account(
        cls,
        source: str,
        settings: HttpSourceSettings,
        context: SourceContext,
        base_url: str,
        account: str,
    ) -> HttpClient:
        """The client of one CRM account, behind that account's rate limit (shared by all
        instances when the store is)."""
        limiter = RateLimiter(
            source,
            settings.rate_per_s,
            settings.burst,
            margin_s=settings.margin_ms / 1000,
            per_second=settings.per_second,
            store=context.store,
            shared=context.shared,
            key=f"{source}:{account}",
        )
        return cls(
            source,
            base_url,
            timeout_s=settings.timeout_ms / 1000,
            max_body=settings.max_body_bytes,
            limiter=limiter,
            metrics=context.metrics,
        )

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=20, ttl_dns_cache=300, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, raise_for_status=False
            )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def error(self, kind: type[E], reason: str, status: int = 0) -> E:
        """A ``kind`` of :class:`SourceError` naming this source and host."""
        return kind(self.source, reason, self.host, status=status)

    def url(self, path: str, query: str | None = None) -> URL:
        """``path`` joined to the base URL; ``query``: an already encoded query string."""
        if path.startswith(("http://", "https://")):
            url = URL(path)
            if (url.scheme, url.host, url.port) != (self.base.scheme, self.host, self.base.port):
                raise self.error(SourceBadResponse, "a link points at another host (refused)")
        else:
            url = self.base.join(URL(path.lstrip("/"), encoded=True))
        if query is not None:
            url = url.with_query(None)
            url = URL(f"{url}?{query}", encoded=True)
        return url

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        query: str | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        scope: str = "",
        limited: bool = True,
        timeout_s: float | None = None,
    ) -> Reply:
        """Send one request and read the whole (bounded) response, whatever its status.

        :param query: a complete, already encoded query string (Megaplan's JSON one).
        :param idempotent: a POST that only reads, so it may be sent twice.
        :param scope: the rate limiter's scope (a Bitrix24 method paused on its own).
        :param limited: False for requests outside the account's limit (token refresh).
        :param timeout_s: instead of the client's own timeout.
        """
        if self._session is None:
            raise self.error(SourceError, "not started")
        url = self.url(path, query)
        if params:
            url = url.update_query(params)
        if self.limiter is not None and limited:
            wait_by, send_by = self._send_by()
            await self.limiter.acquire(scope, by=wait_by, last=send_by)
        timeout_s = timeout_s or self.timeout_s
        # aiohttp already sends an idempotent method (GET) twice on a dropped connection.
        if not idempotent or method in _RETRIED_BY_AIOHTTP:
            return await self._send(method, url, json_body, form, headers, timeout_s)
        attempts = AsyncRetrying(
            retry=retry_if_exception_type(_StaleConnection),
            stop=stop_after_attempt(2),
            wait=wait_none(),
            reraise=True,
        )
        async for attempt in attempts:
            with attempt:
                return await self._send(method, url, json_body, form, headers, timeout_s)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_by(self) -> tuple[float | None, float | None]:
        """(until when to wait for a request's slot, until when to send it at all).

        * Sent at all only while it leaves the CRM three times its usual answer time (at
          most a third of the timeout) before the lookup's own time is up: a request the
          CRM leaves unanswered is then the CRM's failure, not ICM's lateness.
        * Waited for only while the CRM, answering in its usual time, would answer before
          the caller stops waiting: a slot that comes later would serve nobody.
        """
        asker = current()
        if asker.by is None:
            return None, None
        most = self.timeout_s * _ON_THE_WIRE
        usual = self._usual_s
        reserve = most if usual is None else min(most, max(_LEAST_S, 3 * usual))
        end = asker.timeout_at if asker.timeout_at is not None else asker.by
        send_by = end - reserve
        return min(asker.by - (usual or 0.0), send_by), send_by

    def _answered_in(self, seconds: float) -> None:
        """Note how long the CRM took to answer (a moving average)."""
        usual = self._usual_s
        self._usual_s = seconds if usual is None else usual + 0.2 * (seconds - usual)

    async def _send(
        self,
        method: str,
        url: URL,
        json_body: Any,
        form: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        timeout_s: float,
    ) -> Reply:
        assert self._session is not None
        started = time.perf_counter()
        result = "error"
        received = False
        try:
            async with self._session.request(
                method,
                url,
                json=json_body,
                data=form,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                received = True
                body = await self._read(response)
                result = f"{response.status // 100}xx"
                self._answered_in(time.perf_counter() - started)
                return Reply(self.source, self.host, response.status, dict(response.headers), body)
        except TimeoutError:
            result = "timeout"
            raise SourceTimeout(
                self.source, f"no response within {timeout_s * 1000:.0f} ms", self.host
            ) from None
        except aiohttp.ClientConnectorError:
            raise self.error(SourceConnectionError, "cannot connect") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if received or not isinstance(exc, aiohttp.ServerDisconnectedError):
                raise self.error(SourceConnectionError, "connection dropped") from None
            raise self.error(_StaleConnection, "connection dropped") from None
        except aiohttp.ClientPayloadError:
            dropped = "connection dropped (truncated response)"
            raise self.error(SourceConnectionError, dropped) from None
        except aiohttp.ClientResponseError:
            raise self.error(SourceBadResponse, "malformed HTTP response") from None
        except aiohttp.ClientError as exc:
            failed = f"HTTP client error ({type(exc).__name__})"
            raise self.error(SourceConnectionError, failed) from None
        finally:
            if self.metrics is not None:
                self.metrics.source_requests.labels(self.source, result).inc()
            log.debug(
                "%s %s %s: %s in %.1f ms",
                self.source,
                method,
                self.host,
                result,
                (time.perf_counter() - started) * 1000,
            )

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        length = response.content_length
        if length is not None and length > self.max_body:
            too_large = f"response too large ({length} bytes > {self.max_body})"
            raise self.error(SourceBadResponse, too_large, response.status)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self.max_body:
                too_large = f"response too large (over {self.max_body} bytes)"
                raise self.error(SourceBadResponse, too_large, response.status)
            chunks.append(chunk)
        return b"".join(chunks)
