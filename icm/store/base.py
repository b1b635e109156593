"""The store: what ICM remembers between calls and shares between instances.

Two kinds of data:

* bindings: number -> manager. *Learned* ones come from answered calls (the last
  conversation wins); *pinned* ones are set by an administrator and win over learned ones.
* a small key-value space with expiry, used for per-call claims between instances, source
  caches and shared tokens. ``add`` is "set if absent", the primitive claims and locks use;
  ``claim`` is the same, made safe to retry (it also holds when the key already names the
  caller); ``incr`` is an atomic counter with expiry, for rate limits shared by instances.

SQLite (embedded, the default) and Redis implement this same interface and pass the same
contract tests (``tests/test_store_contract.py``). Any failure of the backing service is
raised as :class:`StoreError`; callers decide what it means for the call in hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

LearnedRow = tuple[str, str, float, str]  # number, extension, at, note (see Store.learn)


class StoreError(Exception):
    """The store could not serve a request (service down, disk full, corrupt file)."""


@dataclass(frozen=True, slots=True)
class Binding:
    """``number`` (E.164) is served by ``target`` (an extension, or an E.164 number for a
    pinned binding). ``at`` is when it was learned or pinned (Unix time)."""

    number: str
    target: str
    pinned: bool
    at: float
    note: str = ""


class Store(Protocol):
    """Where learned bindings, caches and claims live (SQLite or Redis)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise :class:`StoreError` if the store cannot serve requests right now."""
        ...

    async def binding(self, number: str, *, learned_since: float = 0.0) -> Binding | None:
        """The pinned binding for ``number``, else the learned one if learned at or after
        ``learned_since``; None if neither."""
        ...

    async def learn(self, number: str, extension: str, at: float, note: str = "") -> bool:
        """Record that ``number`` last talked with ``extension`` at time ``at``. A record
        older than the one kept is ignored (returns False)."""
        ...

    async def learn_many(self, rows: Sequence[LearnedRow]) -> list[bool]:
        """:meth:`learn` for each ``(number, extension, at, note)`` row, in order, in as few
        round trips as the backend allows; whether each changed a binding."""
        ...

    async def forget(self, number: str) -> bool:
        """Drop what was learned about ``number`` (pinned bindings stay)."""
        ...

    async def pin(self, number: str, target: str, note: str = "") -> None: ...

    async def unpin(self, number: str) -> bool: ...

    async def bindings(self, *, pinned: bool, limit: int = 1000) -> list[Binding]:
        """Pinned (or learned) bindings, newest first."""
        ...

    async def purge_learned(self, before: float) -> int:
        """Drop learned bindings older than ``before``; returns how many."""
        ...

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None: ...

    async def add(self, key: str, value: str, ttl_s: float) -> bool:
        """Set ``key`` only if it is absent (or expired); True if this call set it."""
        ...

    async def claim(self, key: str, owner: str, ttl_s: float) -> bool:
        """Hold ``key`` for ``owner`` for ``ttl_s``: True if it was absent (or expired) and
        now holds ``owner``, or already held ``owner``. Unlike :meth:`add` this may be
        retried: a command whose answer was lost (a timeout, then the client's retry)
        already set the key, and the retry finds its own ``owner`` there. Claims and
        locks use it, each with an ``owner`` of its own."""
        ...

    async def delete(self, *keys: str) -> int: ...

    async def incr(self, key: str, ttl_s: float) -> int:
        """Add one to the counter ``key`` and return its new value, atomically. A key that
        is absent (or expired) starts at 1 and expires ``ttl_s`` seconds later; counting
        does not extend the expiry (a fixed window, as Redis INCR + EXPIRE NX)."""
        ...
