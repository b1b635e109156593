"""OAuth2 tokens with a rotating refresh token (amoCRM, Bitrix24 applications), kept in the
store so that every instance and every restart uses the same, current pair.

A refresh token works once: refreshing returns a new pair and kills the old refresh
token. So:

* one refresh at a time across instances: a lock in the store (``add``, with a TTL in
  case its holder dies), and within a process one shared task;
* before using a refresh token, it is in the store (the first one, from the
  configuration, is written there before its first use); after refreshing, the new pair
  is written to the store before the new access token is used;
* an instance that waited for another's refresh, or that got a 401 with a token another
  instance already replaced, takes the new token from the store instead of refreshing.

After a restart the store's pair wins over the one in the configuration (which has been
used up). The access token is refreshed in the background before it expires, so calls do
not wait for it; after a 401 a call refreshes once and retries once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from pydantic import Field, model_validator

from connectors._auth import Shared
from connectors._http_client import HttpClient, HttpSourceSettings, Reply
from icm.secrets import SecretRef, secret_fields
from icm.sources import SourceAuthError, SourceBadResponse, SourceError
from icm.store import Store, StoreError

log = logging.getLogger(__name__)

_MARGIN_S = 60.0  # a token this close to its expiry is not used any more


@dataclass(frozen=True, slots=True)
class Tokens:
    """An OAuth2 pair: the access token, the refresh token and when the first expires."""

    access: str
    refresh: str
    expires_at: float  # Unix time

    def valid(self, now: float | None = None) -> bool:
        return bool(self.access) and self.expires_at - _MARGIN_S > (now or time.time())

    @classmethod
    def parse(cls, data: Any, default_lifetime_s: float | None = None) -> Tokens:
        """The pair in an OAuth2 token answer (``access_token``, ``refresh_token``,
        ``expires_in``); :class:`ValueError` if it holds none."""
        try:
            lifetime = float(data.get("expires_in", default_lifetime_s))
            access, refresh = str(data["access_token"]), str(data["refresh_token"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError("an OAuth answer without tokens") from None
        return cls(access, refresh, time.time() + lifetime)


Refresh = Callable[[str], Awaitable[Tokens]]


class OAuthSettings(HttpSourceSettings):
    """Settings of a CRM that may authorise as an OAuth2 application (``auth = "oauth"``).

    A CRM's settings describe each secret field (``Field(description=...)``: messages
    name it so), say what else OAuth needs (``oauth_needs``) and give ``client_secret``
    its own default variable.
    """

    oauth_needs: ClassVar[tuple[str, ...]] = ("client_id",)

    client_id: str = ""
    client_secret: SecretRef = SecretRef()
    refresh_token: SecretRef = Field(
        SecretRef(), description="the first refresh token of the OAuth application"
    )

    @model_validator(mode="after")
    def _oauth_needs(self) -> OAuthSettings:
        if self.oauth and not all(getattr(self, name) for name in self.oauth_needs):
            raise ValueError(f"auth = 'oauth' needs {' and '.join(self.oauth_needs)}")
        return self

    @property
    def oauth(self) -> bool:
        return getattr(self, "auth", "") == "oauth"

    def secrets(self) -> dict[str, str]:
        """Without OAuth, the CRM's own secret; with it, the application's secret and,
        if named, the first refresh token."""
        fields = type(self).model_fields
        described = {name: fields[name].description or name for name in secret_fields(type(self))}
        if not self.oauth:
            return {k: v for k, v in described.items() if k not in _OAUTH_SECRETS}
        wanted = _OAUTH_SECRETS if self.refresh_token.named else _OAUTH_SECRETS[:1]
        return {name: described[name] for name in wanted}


_OAUTH_SECRETS = ("client_secret", "refresh_token")


def tokens_in(
    reply: Reply, client: HttpClient, advice: str, default_lifetime_s: float | None = None
) -> Tokens:
    """The pair in the CRM's answer to a refresh; :class:`~icm.sources.SourceAuthError`
    if it refused (``advice`` says what the administrator must do)."""
    if reply.status != 200:
        refused = f"OAuth refresh refused (HTTP {reply.status}): {advice}"
        raise client.error(SourceAuthError, refused, reply.status)
    try:
        return Tokens.parse(reply.json(), default_lifetime_s)
    except ValueError:
        raise client.error(SourceBadResponse, "OAuth refresh answer without tokens") from None


class TokenKeeper:
    """OAuth2 tokens kept in the store, refreshed once at a time across instances.

    :param refresh: exchanges a refresh token for new tokens (the CRM's own endpoint);
        raises :class:`~icm.sources.SourceAuthError` when refused.
    :param initial_refresh: the refresh token from the configuration, used only while the
        store holds none.
    :param key: where the pair lives in the store (``oauth:<source>``).
    :param lock_ttl_s: how long a refresh may hold the lock (longer than its timeout).
    """

    renewable = True

    def __init__(
        self,
        source: str,
        store: Store,
        refresh: Refresh,
        *,
        initial_refresh: SecretRef | None,
        key: str,
        lock_ttl_s: float = 15.0,
    ) -> None:
        self.source = source
        self.store = store
        self._refresh = refresh
        self._initial = initial_refresh
        self.key = key
        self.lock_ttl_s = lock_ttl_s
        self._tokens: Tokens | None = None
        self._renewal: Shared[str] = Shared(f"{source}-oauth")
        self._owner = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self.refreshes = 0  # refreshes this instance made

    async def token(self) -> str:
        """A valid access token: from memory, else the store, else refreshed."""
        if self._tokens is not None and self._tokens.valid():
            return self._tokens.access
        stored = await self._load()
        if stored is not None and stored.valid():
            self._tokens = stored
            return stored.access
        return await self.renew(stale=stored.access if stored else None)

    async def renew(self, stale: str | None) -> str:
        """A new access token after ``stale`` was refused (or expired): one refresh for
        every caller in this process, and none if another instance already made one."""
        return await self._renewal.run(lambda: self._renew(stale))

    def start(self) -> None:
        """Refresh in the background before the access token expires."""
        if self._task is None:
            self._task = asyncio.create_task(self._ahead(), name=f"{self.source}-oauth-ahead")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        await self._renewal.close()

    async def _ahead(self) -> None:
        while True:
            try:
                await self.token()
                tokens = self._tokens
                assert tokens is not None
                lifetime = max(tokens.expires_at - time.time(), 0.0)
                await asyncio.sleep(max(lifetime - max(2 * _MARGIN_S, lifetime * 0.1), 1.0))
                await self.renew(stale=tokens.access)
            except SourceError as exc:
                log.warning("%s: OAuth token not refreshed ahead of time (%s)", self.source, exc)
                await asyncio.sleep(30)

    async def _renew(self, stale: str | None) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_ttl_s
        while True:
            current = await self._load()
            if current is not None and current.access != stale and current.valid():
                self._tokens = current  # another instance refreshed meanwhile
                return current.access
            if await self._lock():
                break
            if loop.time() > deadline:
                raise SourceError(self.source, "another instance's token refresh did not finish")
            await asyncio.sleep(0.05)
        try:
            current = await self._load()
            if current is not None and current.access != stale and current.valid():
                self._tokens = current
                return current.access
            if current is None:
                if self._initial is None or not self._initial.get_secret_value():
                    raise SourceAuthError(
                        self.source,
                        "no OAuth tokens yet (expected refresh_token_env or refresh_token_file "
                        "with the first refresh token)",
                    )
                # The first refresh token is in the store before it is ever used.
                current = Tokens("", self._initial.get_secret_value(), 0.0)
                await self._save(current)
            fresh = await self._refresh(current.refresh)
            self._tokens = fresh
            self.refreshes += 1
            try:
                await self._save(fresh)  # before the new access token is used
            except SourceError as exc:
                # The old refresh token is dead already: keep going on the new pair.
                log.error(
                    "%s: OAuth tokens refreshed but not stored (%s): other instances and a "
                    "restart will need the integration authorised again",
                    self.source,
                    exc.reason,
                )
            else:
                log.info("%s: OAuth tokens refreshed", self.source)
            return fresh.access
        finally:
            await self._unlock()

    async def _load(self) -> Tokens | None:
        try:
            raw = await self.store.get(self.key)
        except StoreError as exc:
            if self._tokens is not None:
                return self._tokens
            raise SourceError(self.source, f"cannot read OAuth tokens ({exc})") from exc
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return Tokens(str(data["access"]), str(data["refresh"]), float(data["expires_at"]))
        except (ValueError, KeyError, TypeError):
            raise SourceError(self.source, "the stored OAuth tokens are unreadable") from None

    async def _save(self, tokens: Tokens) -> None:
        try:
            await self.store.set(self.key, json.dumps(asdict(tokens)))
        except StoreError as exc:
            raise SourceError(self.source, f"cannot store OAuth tokens ({exc})") from exc

    async def _lock(self) -> bool:
        try:
            return await self.store.claim(f"{self.key}:lock", self._owner, self.lock_ttl_s)
        except StoreError as exc:
            raise SourceError(self.source, f"cannot lock the OAuth refresh ({exc})") from exc

    async def _unlock(self) -> None:
        with contextlib.suppress(StoreError):
            if await self.store.get(f"{self.key}:lock") == self._owner:
                await self.store.delete(f"{self.key}:lock")
