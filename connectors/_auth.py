"""How a CRM source proves who it is: a token it sends with each request, and what it
does when the CRM refuses that token.

* :class:`FixedToken`: a token that is never renewed (amoCRM's long-lived token; none at
  all for a Bitrix24 webhook, whose URL is the secret).
* :class:`StoredLogin`: a token got by logging in (Megaplan's password grant), shared
  through the store by every instance, kept over restarts, got again when refused.
* :class:`connectors._oauth.TokenKeeper`: OAuth2 with a rotating refresh token.

Each renews at most once at a time: every request refused meanwhile waits for the same
renewal (:class:`Shared`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from icm.secrets import SecretRef
from icm.store import Store, StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Credentials(Protocol):
    """What a CRM source asks for a token, and for a new one after a refusal."""

    renewable: bool

    async def token(self) -> str: ...

    async def renew(self, stale: str) -> str: ...

    def start(self) -> None: ...

    async def close(self) -> None: ...


class Shared(Generic[T]):
    """One run of a coroutine at a time, its result shared by every caller who asked
    while it ran (a renewal that many refused requests wait for)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[T] | None = None

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work``'s result: started now, or the run already under way."""
        if self._task is None:
            self._task = asyncio.create_task(_awaited(work), name=self.name)
            self._task.add_done_callback(self._done)
        return await asyncio.shield(self._task)

    def _done(self, task: asyncio.Task[T]) -> None:
        self._task = None
        if not task.cancelled():
            task.exception()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _awaited(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


class FixedToken:
    """A token that is never renewed; a refusal is final until the administrator makes a
    new one. A JWT's expiry is announced in the log two weeks ahead.

    :param what: names the token in log lines ("the long-lived token").
    """

    renewable = False

    def __init__(self, source: str, secret: SecretRef | None, what: str = "the token") -> None:
        self.source = source
        self.secret = secret
        self.what = what

    async def token(self) -> str:
        return self.secret.get_secret_value() if self.secret is not None else ""

    async def renew(self, stale: str) -> str:
        return stale

    def start(self) -> None:
        if self.secret is not None:
            _warn_expiry(self.source, self.what, self.secret.get_secret_value())

    async def close(self) -> None:
        return None


Login = Callable[[], Awaitable[tuple[str, float]]]


class StoredLogin:
    """A token got by logging in, kept in the store (``key``) for every instance and
    over restarts, and got again when the CRM refuses it.

    :param login: logs in; returns the token and its lifetime in seconds (raises a
        :class:`~icm.sources.SourceError` when refused).
    """

    renewable = True

    def __init__(self, source: str, store: Store, login: Login, *, key: str) -> None:
        self.source = source
        self.store = store
        self._login = login
        self.key = key
        self._token = ""
        self._renewal: Shared[str] = Shared(f"{source}-login")

    async def token(self) -> str:
        if not self._token:
            self._token = await self._stored() or await self.renew(stale="")
        return self._token

    async def renew(self, stale: str) -> str:
        """A token other than ``stale``: another instance's, or a new login."""
        return await self._renewal.run(lambda: self._log_in(stale))

    def start(self) -> None:
        return None

    async def close(self) -> None:
        await self._renewal.close()

    async def _log_in(self, stale: str) -> str:
        stored = await self._stored()
        if stored and stored != stale:  # another instance logged in meanwhile
            self._token = stored
            return stored
        token, lifetime_s = await self._login()
        self._token = token
        try:
            await self.store.set(self.key, token, ttl_s=max(lifetime_s - 60, 60.0))
        except StoreError as exc:
            log.warning("%s: cannot share the token through the store (%s)", self.source, exc)
        return token

    async def _stored(self) -> str | None:
        try:
            return await self.store.get(self.key)
        except StoreError:
            return None


def _warn_expiry(source: str, what: str, token: str) -> None:
    """JWTs carry their expiry (amoCRM's long-lived tokens: 1 day to 5 years): say so
    before it hits."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        expires = float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return
    left_days = (expires - time.time()) / 86400
    when = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d")
    if left_days < 0:
        log.error("%s: %s expired on %s: make a new one", source, what, when)
    elif left_days < 14:
        log.warning("%s: %s expires on %s: make a new one", source, what, when)
