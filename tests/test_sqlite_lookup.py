"""A call's lookup in the SQLite store is read on the event loop, not through a thread:
each trip through aiosqlite's thread is two thread wake-ups, and on a busy machine each
wake-up waits for a core (bench/realpbx_load.py measured tens of milliseconds)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from icm.store import Binding, StoreError
from icm.store.sqlite import SqliteStore

NUMBER = "+79161234567"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    made = SqliteStore(tmp_path / "icm.db")
    await made.open()
    yield made
    await made.close()


async def test_a_lookup_completes_without_waiting_for_a_thread(store: SqliteStore) -> None:
    await store.learn(NUMBER, "101", 1000.0, "inbound call")
    lookup = store.binding(NUMBER)
    # One step of the coroutine: it must finish there, never suspend on a future that a
    # thread resolves later.
    with pytest.raises(StopIteration) as finished:
        lookup.send(None)
    assert finished.value.value == Binding(NUMBER, "101", False, 1000.0, "inbound call")


async def test_a_lookup_sees_what_was_written_since_the_last_one(store: SqliteStore) -> None:
    """The loop's connection holds no read transaction between lookups."""
    assert await store.binding(NUMBER) is None
    await store.learn(NUMBER, "101", 1000.0)
    assert (await store.binding(NUMBER)).target == "101"
    # Written by another process (``icm bind``) while the daemon runs.
    other = SqliteStore(store.path)
    await other.open()
    try:
        await other.pin(NUMBER, "104")
    finally:
        await other.close()
    assert (await store.binding(NUMBER)).target == "104"


async def test_a_lookup_that_would_wait_for_a_lock_goes_through_the_thread(
    store: SqliteStore, tmp_path: Path
) -> None:
    """SQLITE_BUSY on the loop's connection: never wait on the loop; the thread's
    connection answers instead. The loop's connection is pointed at a database another
    connection keeps locked, to get a real SQLITE_BUSY from SQLite."""
    await store.learn(NUMBER, "101", 1000.0)
    locked = tmp_path / "locked.db"
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    assert store._direct is not None
    store._direct.close()
    store._direct = sqlite3.connect(locked, isolation_level=None, timeout=0)
    try:
        binding = await store.binding(NUMBER)
        assert binding is not None and binding.target == "101"
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_closed_store_refuses_lookups(tmp_path: Path) -> None:
    made = SqliteStore(tmp_path / "icm.db")
    await made.open()
    await made.close()
    with pytest.raises(StoreError, match="not open"):
        await made.binding(NUMBER)
