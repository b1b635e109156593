"""A CRM's clients by phone number, kept in memory, for a CRM whose limit a burst of
calls would exhaust (amoCRM: 7 requests a second). Loaded whole in the background, then
every ``interval_s`` only what changed since (the CRM's ``updated_at``), and whole again
every ``full_every`` refreshes (deleted records leave no trace in "changed since"). A
lookup asks it first: a caller it holds costs no request; one it does not (a client
added since, a kind it does not hold) is searched in the CRM as always.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from connectors._refresh import Refresher
from icm.metrics import Metrics

# (kind, since) -> the records of that kind changed since (all if since is None)
Fetch = Callable[[str, float | None], Awaitable[list["Entry"]]]


@dataclass(frozen=True, slots=True)
class Entry:
    """One record as the mirror keeps it: its key, when it was updated, its numbers
    (E.164) and what the answer needs."""

    kind: str
    id: str
    updated: float
    numbers: tuple[str, ...]
    data: dict[str, object] = field(default_factory=dict)


class Mirror:
    """:param kinds: the entity kinds mirrored (the others are always searched)."""

    def __init__(
        self,
        source: str,
        kinds: Iterable[str],
        fetch: Fetch,
        *,
        interval_s: float,
        full_every: int = 60,
        metrics: Metrics | None = None,
    ) -> None:
        self.kinds = tuple(kinds)
        self._fetch = fetch
        self.full_every = full_every
        self._entries: dict[tuple[str, str], Entry] = {}
        self._index: dict[str, set[tuple[str, str]]] = {}
        self._since: dict[str, float] = {}
        self._loads = 0
        self.refresher = Refresher(source, "mirror", interval_s, self._load, metrics=metrics)

    @property
    def ready(self) -> bool:
        return self.refresher.ready.is_set()

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, kind: str, number: str) -> list[Entry]:
        """The records of ``kind`` holding ``number``."""
        keys = self._index.get(number, set())
        return [self._entries[key] for key in sorted(keys) if key[0] == kind]

    def start(self) -> None:
        self.refresher.start()

    async def close(self) -> None:
        await self.refresher.close()

    async def _load(self) -> None:
        whole = self._loads % self.full_every == 0
        fetched = {
            kind: await self._fetch(kind, None if whole else self._since.get(kind))
            for kind in self.kinds
        }
        if whole:
            self._entries, self._index = {}, {}
        for kind, entries in fetched.items():
            for entry in entries:
                self._put(entry)
                self._since[kind] = max(self._since.get(kind, 0.0), entry.updated)
        self._loads += 1

    def _put(self, entry: Entry) -> None:
        key = (entry.kind, entry.id)
        old = self._entries.get(key)
        for number in old.numbers if old is not None else ():
            self._index.get(number, set()).discard(key)
        self._entries[key] = entry
        for number in entry.numbers:
            self._index.setdefault(number, set()).add(key)
