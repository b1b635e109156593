"""Choosing a store from its settings: a file path means SQLite, ``redis://`` and friends
mean Redis."""

from __future__ import annotations

from icm.store.base import Binding, Store, StoreError
from icm.store.sqlite import SqliteStore

__all__ = ["Binding", "SqliteStore", "Store", "StoreError", "is_shared", "open_store"]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://")


def is_shared(url: str) -> bool:
    """Whether several instances share this store (and must claim calls)."""
    return url.startswith(REDIS_SCHEMES)


def open_store(
    url: str, *, password: str | None = None, prefix: str = "icm:", timeout_s: float = 0.5
) -> Store:
    """The store named by ``url`` (not yet opened)."""
    if is_shared(url):
        from icm.store.redis import RedisStore

        return RedisStore(url, password=password, prefix=prefix, timeout_s=timeout_s)
    return SqliteStore(url.removeprefix("sqlite://"))
