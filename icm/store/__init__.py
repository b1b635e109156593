"""Choosing a store from its URL: a file path means SQLite, ``redis://`` means Redis."""

from __future__ import annotations

from icm.store.base import Binding, Store, StoreError
from icm.store.sqlite import SqliteStore

__all__ = ["Binding", "SqliteStore", "Store", "StoreError", "open_store"]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://")


def open_store(url: str) -> Store:
    """The store named by ``url`` (not yet opened)."""
    if url.startswith(REDIS_SCHEMES):
        raise StoreError(
            f"store {url.split('://')[0]}:// is not available in this build "
            "(expected a SQLite file path)"
        )
    return SqliteStore(url.removeprefix("sqlite://"))
