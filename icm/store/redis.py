"""The shared store: Redis (redis-py asyncio with hiredis), for several ICM instances.

Same interface and contract as the SQLite store. Layout, under a key prefix (``icm:``):

* ``learned:<number>`` / ``pinned:<number>``: hashes ``t`` (target), ``at``, ``n`` (note);
  ``learned`` / ``pinned``: sorted sets of numbers by time, for listing and purging;
* ``kv:<key>``: strings with a millisecond expiry (claims, caches, tokens).

URLs: ``redis://host:6379/0``, ``rediss://`` (TLS; ``?ssl_ca_certs=/path`` and friends),
``unix:///run/redis.sock``, and ``redis+sentinel://host:26379,host2:26379/mymaster/0``
for a Sentinel-managed master. The password never sits in the URL: it comes from the
environment or a file (``store.password_env`` / ``store.password_file``).
Every failure of Redis is raised as :class:`~icm.store.base.StoreError`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from icm.store.base import Binding, StoreError
from icm.store.batch import Batcher

T = TypeVar("T")
MAX_CONNECTIONS = 32
POOL_WAIT_S = 5.0  # callers bound their own waits; the pool must not fail them first

# Keep the newer of two conversations: never overwrite a record learned later.
_LEARN = """
local at = tonumber(ARGV[2])
local current = redis.call('HGET', KEYS[1], 'at')
if current and tonumber(current) > at then return 0 end
redis.call('HSET', KEYS[1], 't', ARGV[1], 'at', ARGV[2], 'n', ARGV[3])
redis.call('ZADD', KEYS[2], at, ARGV[4])
return 1
"""
# Set if absent, or already ours: a retried claim whose first attempt set the key wins.
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return 1 end
if held then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_INCR = """
local value = redis.call('INCR', KEYS[1])
if value == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return value
"""


class RedisStore:
    """The store on Redis, shared by several instances.

    :param url: see the module docstring.
    :param password: from the environment or a file, never from the URL.
    :param timeout_s: how long one Redis command may take before it counts as a failure.
    """

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        prefix: str = "icm:",
        timeout_s: float = 0.5,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._password = password
        self._timeout = timeout_s
        self._redis: Redis | None = None
        # Claims and lookups asked for in one turn of the loop (a burst): one round trip.
        self._claims = Batcher(self._claim_many)
        self._bindings = Batcher(self._binding_many)
        parts = urlsplit(url)
        self.where = f"{parts.scheme}://{parts.hostname or parts.path}" + (
            f":{parts.port}" if parts.port else ""
        )

    def __repr__(self) -> str:
        return f"RedisStore({self.where!r})"

    async def open(self) -> None:
        options: dict[str, Any] = {
            "password": self._password,
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "decode_responses": True,
            # One quick retry on a fresh connection after Redis restarted.
            "retry": Retry(NoBackoff(), 1),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "health_check_interval": 10,
        }
        if self.url.startswith("redis+sentinel://"):
            self._redis = self._sentinel(options)
        else:
            # A bounded pool: a burst of calls waits for a connection instead of opening
            # one per concurrent command.
            pool = BlockingConnectionPool.from_url(
                self.url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_S, **options
            )
            self._redis = Redis(connection_pool=pool)
        self._learn = self._redis.register_script(_LEARN)
        self._incr = self._redis.register_script(_INCR)
        # Nothing is sent yet: a Redis that is down at start-up is not fatal. The daemon's
        # health check reports it, and routing goes on with sources that do not need it.

    def _sentinel(self, options: dict[str, Any]) -> Redis:
        parts = urlsplit(self.url)
        hosts = []
        for item in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = item.rpartition(":")
            hosts.append((host or item, int(port or 26379)))
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise StoreError(f"{self.where}: a Sentinel URL needs the master's name")
        db = int(path[1]) if len(path) > 1 else 0
        # The Sentinels' own connections: no password of the master's, the same timeouts.
        timeouts = {"socket_timeout": self._timeout, "socket_connect_timeout": self._timeout}
        sentinel = Sentinel(hosts, sentinel_kwargs=timeouts, **options)
        return sentinel.master_for(path[0], db=db)

    async def close(self) -> None:
        await self._claims.close()
        await self._bindings.close()
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.aclose()

    async def ping(self) -> None:
        await self._run(lambda r: r.ping())

    # -- bindings ---------------------------------------------------------------------
    async def binding(self, number: str, *, learned_since: float = 0.0) -> Binding | None:
        pinned, learned = await self._bindings(number)
        if pinned:
            return _binding(number, pinned, True)
        if learned and float(learned["at"]) >= learned_since:
            return _binding(number, learned, False)
        return None

    async def _binding_many(
        self, numbers: Sequence[str]
    ) -> list[tuple[dict[str, str], dict[str, str]]]:
        """The pinned and learned records of each number, in one round trip."""

        async def fetch(r: Redis) -> list[dict[str, str]]:
            async with r.pipeline(transaction=False) as pipe:
                for number in numbers:
                    pipe.hgetall(self._key("pinned", number))
                    pipe.hgetall(self._key("learned", number))
                return list(await pipe.execute())

        rows = await self._run(fetch)
        return list(zip(rows[0::2], rows[1::2], strict=True))

    async def learn(self, number: str, extension: str, at: float, note: str = "") -> bool:
        keys = [self._key("learned", number), self._key("learned")]
        changed = await self._run(lambda r: self._learn(keys, [extension, repr(at), note, number]))
        return bool(changed)

    async def learn_many(self, rows: Sequence[tuple[str, str, float, str]]) -> list[bool]:
        """:meth:`learn` for each row, pipelined: one round trip for the whole batch."""
        if not rows:
            return []
        index = self._key("learned")

        async def write(r: Redis) -> list[int]:
            async with r.pipeline(transaction=False) as pipe:
                for number, extension, at, note in rows:
                    keys = [self._key("learned", number), index]
                    await self._learn(keys, [extension, repr(at), note, number], client=pipe)
                return list(await pipe.execute())

        return [bool(changed) for changed in await self._run(write)]

    async def forget(self, number: str) -> bool:
        return await self._drop("learned", number)

    async def pin(self, number: str, target: str, note: str = "") -> None:
        at = time.time()

        async def write(r: Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hset(self._key("pinned", number), mapping={"t": target, "at": at, "n": note})
                pipe.zadd(self._key("pinned"), {number: at})
                await pipe.execute()

        await self._run(write)

    async def unpin(self, number: str) -> bool:
        return await self._drop("pinned", number)

    async def bindings(self, *, pinned: bool, limit: int = 1000) -> list[Binding]:
        kind = "pinned" if pinned else "learned"

        async def fetch(r: Redis) -> list[Binding]:
            numbers = await r.zrevrange(self._key(kind), 0, limit - 1)
            async with r.pipeline(transaction=False) as pipe:
                for number in numbers:
                    pipe.hgetall(self._key(kind, number))
                rows = await pipe.execute()
            return [_binding(n, row, pinned) for n, row in zip(numbers, rows, strict=True) if row]

        return await self._run(fetch)

    async def purge_learned(self, before: float) -> int:
        async def purge(r: Redis) -> int:
            index = self._key("learned")
            numbers = await r.zrangebyscore(index, "-inf", f"({before!r}")
            for start in range(0, len(numbers), 500):
                chunk = numbers[start : start + 500]
                async with r.pipeline(transaction=False) as pipe:
                    pipe.delete(*(self._key("learned", n) for n in chunk))
                    pipe.zrem(index, *chunk)
                    await pipe.execute()
            return len(numbers)

        return await self._run(purge)

    # -- key-value --------------------------------------------------------------------
    async def get(self, key: str) -> str | None:
        value = await self._run(lambda r: r.get(self._key("kv", key)))
        return value if value is None else str(value)

    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        await self._run(lambda r: r.set(self._key("kv", key), value, px=px))

    async def add(self, key: str, value: str, ttl_s: float) -> bool:
        px = max(1, int(ttl_s * 1000))
        return bool(await self._run(lambda r: r.set(self._key("kv", key), value, px=px, nx=True)))

    async def claim(self, key: str, owner: str, ttl_s: float) -> bool:
        """:meth:`add`, safe to retry: redis-py re-sends a command whose answer timed out
        (``retry``), and the first attempt may have set the key already. Claims asked
        for in the same turn of the loop go in one pipeline."""
        px = max(1, int(ttl_s * 1000))
        return await self._claims((self._key("kv", key), owner, px))

    async def _claim_many(self, claims: Sequence[tuple[str, str, int]]) -> list[bool]:
        async def run(r: Redis) -> list[int]:
            # EVAL, not EVALSHA: a pipeline of registered scripts first asks Redis
            # whether it has them (one more round trip); Redis caches EVAL's script too.
            async with r.pipeline(transaction=False) as pipe:
                for key, owner, px in claims:
                    pipe.eval(_CLAIM, 1, key, owner, px)
                return list(await pipe.execute())

        return [bool(won) for won in await self._run(run)]

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        return int(await self._run(lambda r: r.delete(*(self._key("kv", k) for k in keys))))

    async def incr(self, key: str, ttl_s: float) -> int:
        """Add one to a counter that expires ``ttl_s`` after it was created."""
        px = max(1, int(ttl_s * 1000))
        return int(await self._run(lambda r: self._incr([self._key("kv", key)], [px])))

    # -- internals ----------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _drop(self, kind: str, number: str) -> bool:
        async def drop(r: Redis) -> int:
            async with r.pipeline(transaction=True) as pipe:
                pipe.delete(self._key(kind, number))
                pipe.zrem(self._key(kind), number)
                deleted, _ = await pipe.execute()
            return int(deleted)

        return bool(await self._run(drop))

    async def _run(self, command: Callable[[Redis], Awaitable[T]]) -> T:
        if self._redis is None:
            raise StoreError(f"Redis store {self.where} is not open")
        try:
            return await command(self._redis)
        except AuthenticationError as exc:
            raise StoreError(f"Redis store {self.where}: {self._auth_problem(exc)}") from exc
        except (RedisError, OSError) as exc:
            if "NOAUTH" in str(exc):
                raise StoreError(f"Redis store {self.where}: {self._auth_problem(exc)}") from exc
            raise StoreError(f"Redis store {self.where}: {exc or type(exc).__name__}") from exc

    def _auth_problem(self, exc: Exception) -> str:
        """What an administrator does about a refused login (redis-py's own words speak
        of HELLO and RESP versions)."""
        if not self._password:
            return (
                "Redis needs a password (expected it in the variable named by "
                "store.password_env, ICM_REDIS_PASSWORD by default, or in store.password_file)"
            )
        return f"Redis refused the password ({exc})"


def _binding(number: str, row: dict[str, str], pinned: bool) -> Binding:
    return Binding(number, row["t"], pinned, float(row["at"]), row.get("n", ""))
