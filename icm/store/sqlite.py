"""The embedded store: one SQLite file, used through aiosqlite so the event loop never
blocks on disk. WAL mode lets ``icm bind`` and friends write while the daemon runs, and
keeps every committed write across a crash of the daemon.

One exception, the lookup of a call's binding (``binding``): it is read on the event
loop itself, from a read-only connection of its own that never waits for a lock. A
primary-key read of pages already in memory takes microseconds; the round trip through
aiosqlite's thread costs two thread wake-ups, ~0.5 ms on a quiet machine and tens of
milliseconds on a busy one, where every wake-up waits for a core (bench/realpbx_load.py).
A read that would have to wait (SQLITE_BUSY: a writer is resetting the WAL) goes through
the thread as before."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from icm.store.base import Binding, LearnedRow, StoreError

_AIOSQLITE_LOG = logging.getLogger("aiosqlite")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS learned (
    number TEXT PRIMARY KEY, extension TEXT NOT NULL, at REAL NOT NULL, note TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS learned_at ON learned(at);
CREATE TABLE IF NOT EXISTS pinned (
    number TEXT PRIMARY KEY, target TEXT NOT NULL, at REAL NOT NULL, note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL);
CREATE INDEX IF NOT EXISTS kv_expires ON kv(expires);
"""

_BINDING = """
SELECT target, at, note, 1 FROM pinned WHERE number = ?
UNION ALL
SELECT extension, at, note, 0 FROM learned WHERE number = ? AND at >= ?
ORDER BY 4 DESC LIMIT 1
"""


# Four values a row, within SQLite's limit on variables (999 before 3.32, 32,766 since).
_ROWS_PER_STATEMENT = 512 if sqlite3.sqlite_version_info >= (3, 32) else 128


def _padded(items: list[Any]) -> list[Any]:
    """``items`` repeated at the end up to a power of two: statements come in ten shapes,
    not one per size (sqlite3 caches 128 prepared statements; 512-row ones are big)."""
    size = 1 << (len(items) - 1).bit_length()
    return items + [items[-1]] * (size - len(items))


def _learn_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    return (
        f"INSERT INTO learned VALUES {values} ON CONFLICT(number) DO UPDATE SET"
        " extension = excluded.extension, at = excluded.at, note = excluded.note"
        " WHERE excluded.at >= learned.at"
    )


def _prepare(path: Path) -> None:
    """Check that ``path`` can hold the database, before a connection (and its thread) is
    made, and create the file readable by its owner only: it holds OAuth tokens, and
    SQLite gives the -wal and -shm files the database file's permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_file():
        raise sqlite3.OperationalError("not a regular file (expected a database file path)")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if os.fstat(fd).st_size == 0:
            os.fchmod(fd, 0o600)  # new (or empty): whatever the umask
    finally:
        os.close(fd)
    sqlite3.connect(path).close()


class SqliteStore:
    """The embedded store: one SQLite file, for one instance.

    :param path: the database file (created with its directory if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        # Lookups on a connection (and a thread) of their own: a call's lookup never
        # waits behind the learner's writes; WAL lets it read what was committed.
        self._reader: aiosqlite.Connection | None = None
        # A call's binding, read on the loop (never waits: busy_timeout 0).
        self._direct: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def open(self) -> None:
        # aiosqlite logs every statement with its parameters at DEBUG; the kv table holds
        # OAuth tokens, so its logger never goes below INFO.
        if _AIOSQLITE_LOG.level < logging.INFO:
            _AIOSQLITE_LOG.setLevel(logging.INFO)
        try:
            await asyncio.to_thread(_prepare, self.path)
        except (sqlite3.Error, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise StoreError(f"cannot open SQLite store {self.path}: {reason}") from None
        opened: list[aiosqlite.Connection] = []
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
            opened.append(db)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.executescript(_SCHEMA)
            reader = await aiosqlite.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None
            )
            opened.append(reader)
            await reader.execute("PRAGMA busy_timeout=5000")
            direct = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, timeout=0
            )
        except (sqlite3.Error, OSError) as exc:
            for connection in opened:  # their threads would keep the process alive
                await connection.close()
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
        self._db, self._reader, self._direct = db, reader, direct

    async def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        for connection in (self._reader, self._db):
            if connection is not None:
                await connection.close()
        self._db = self._reader = self._direct = None

    async def ping(self) -> None:
        await self._read("SELECT 1", ())

    async def binding(self, number: str, *, learned_since: float = 0.0) -> Binding | None:
        args = (number, number, learned_since)
        rows = self._read_now(_BINDING, args)
        if rows is None:
            rows = await self._read(_BINDING, args)
        if not rows:
            return None
        target, at, note, pinned = rows[0]
        return Binding(number, target, bool(pinned), at, note)

    async def learn(self, number: str, extension: str, at: float, note: str = "") -> bool:
        [changed] = await self.learn_many([(number, extension, at, note)])
        return changed

    async def learn_many(self, rows: Sequence[LearnedRow]) -> list[bool]:
        """Two round trips to SQLite's thread per 512 rows (what is kept, then one
        multi-row statement), where a statement a row costs two round trips a row, each
        waiting for a busy event loop (bench/ingest.py: 2,700 rows/s against 7,000+)."""
        changed: list[bool] = []
        for i in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = list(rows[i : i + _ROWS_PER_STATEMENT])
            numbers = _padded(list({row[0] for row in chunk}))
            marks = ", ".join("?" * len(numbers))
            sql = f"SELECT number, at FROM learned WHERE number IN ({marks})"
            kept: dict[str, float] = dict(await self._fetch(sql, numbers))
            for number, _, at, _ in chunk:  # what the statement does, row by row
                newer = number not in kept or at >= kept[number]
                if newer:
                    kept[number] = at
                changed.append(newer)
            # The padding repeats the last row: writing it again changes nothing.
            padded = _padded(chunk)
            await self._fetch(_learn_sql(len(padded)), [value for row in padded for value in row])
        return changed

    async def forget(self, number: str) -> bool:
        return await self._write("DELETE FROM learned WHERE number = ?", (number,)) > 0

    async def pin(self, number: str, target: str, note: str = "") -> None:
        await self._write(
            "INSERT OR REPLACE INTO pinned VALUES (?, ?, ?, ?)",
            (number, target, time.time(), note),
        )

    async def unpin(self, number: str) -> bool:
        return await self._write("DELETE FROM pinned WHERE number = ?", (number,)) > 0

    async def bindings(self, *, pinned: bool, limit: int = 1000) -> list[Binding]:
        table, column = ("pinned", "target") if pinned else ("learned", "extension")
        rows = await self._fetch(
            f"SELECT number, {column}, at, note FROM {table} ORDER BY at DESC LIMIT ?", (limit,)
        )
        return [Binding(number, target, pinned, at, note) for number, target, at, note in rows]

    async def purge_learned(self, before: float) -> int:
        purged = await self._write("DELETE FROM learned WHERE at < ?", (before,))
        await self._write(
            "DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?", (time.time(),)
        )
        return purged

    async def get(self, key: str) -> str | None:
        rows = await self._read(
            "SELECT value FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)",
            (key, time.time()),
        )
        return rows[0][0] if rows else None

    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        expires = None if ttl_s is None else time.time() + ttl_s
        await self._write("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, expires))

    async def add(self, key: str, value: str, ttl_s: float) -> bool:
        now = time.time()
        changed = await self._write(
            "INSERT INTO kv VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
            " value = excluded.value, expires = excluded.expires"
            " WHERE kv.expires IS NOT NULL AND kv.expires <= ?",
            (key, value, now + ttl_s, now),
        )
        return changed > 0

    async def claim(self, key: str, owner: str, ttl_s: float) -> bool:
        now = time.time()
        changed = await self._write(
            "INSERT INTO kv VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
            " value = excluded.value, expires = excluded.expires"
            " WHERE (kv.expires IS NOT NULL AND kv.expires <= ?) OR kv.value = excluded.value",
            (key, owner, now + ttl_s, now),
        )
        return changed > 0

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        marks = ",".join("?" * len(keys))
        now = time.time()
        live = await self._write(
            f"DELETE FROM kv WHERE key IN ({marks}) AND (expires IS NULL OR expires > ?)",
            (*keys, now),
        )
        await self._write(f"DELETE FROM kv WHERE key IN ({marks})", keys)  # expired ones
        return live

    async def incr(self, key: str, ttl_s: float) -> int:
        now = time.time()
        rows = await self._fetch(
            "INSERT INTO kv VALUES (?, '1', ?) ON CONFLICT(key) DO UPDATE SET"
            " value = CASE WHEN kv.expires IS NOT NULL AND kv.expires <= ?"
            " THEN '1' ELSE CAST(CAST(kv.value AS INTEGER) + 1 AS TEXT) END,"
            " expires = CASE WHEN kv.expires IS NOT NULL AND kv.expires <= ?"
            " THEN excluded.expires ELSE kv.expires END"
            " RETURNING value",
            (key, now + ttl_s, now, now),
        )
        return int(rows[0][0])

    def _read_now(self, sql: str, args: tuple[Any, ...]) -> list[Any] | None:
        """A read on the loop's own connection; None if it would have to wait (locked,
        busy: the thread's connection then waits its turn)."""
        if self._direct is None:
            raise StoreError(f"SQLite store {self.path} is not open")
        try:
            return self._direct.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    async def _read(self, sql: str, args: Iterable[Any]) -> list[Any]:
        """A read on the reader connection, in one round trip to its thread."""
        if self._reader is None:
            raise StoreError(f"SQLite store {self.path} is not open")
        try:
            return list(await self._reader.execute_fetchall(sql, tuple(args)))
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    async def _fetch(self, sql: str, args: Iterable[Any]) -> list[Any]:
        """Execute and fetch on the writer, in one round trip to its thread."""
        db = self._connection()
        try:
            return list(await db.execute_fetchall(sql, tuple(args)))
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    async def _write(self, sql: str, args: Iterable[Any]) -> int:
        db = self._connection()
        try:
            async with db.execute(sql, tuple(args)) as cursor:
                return cursor.rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError(f"SQLite store {self.path} is not open")
        return self._db
