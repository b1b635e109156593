"""What a source is, and how ICM finds the installed ones.

A source answers one question: who is responsible for this number? Each lives in one
module of ``connectors/`` (or in any installed package) as a class with:

* ``name``: the name administrators write in ``routing.sources``;
* ``Settings``: a pydantic model for its ``[sources.<name>]`` section (it may be empty);
* ``__init__(settings, context)`` and ``async start()``, ``async lookup(number)``,
  ``async close()``.

``lookup`` gets an E.164 number and returns an :class:`~icm.model.Answer` or ``None``
("I do not know this caller"). Any failure is raised as a :class:`SourceError`; the router
skips the source for this call and asks the next one. Sources are found through the
``icm.sources`` entry-point group, so a third-party package adds one without touching ICM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from icm.managers import Managers
    from icm.model import Answer
    from icm.numbers import Numbers
    from icm.store.base import Store

ENTRY_POINT_GROUP = "icm.sources"


class SourceError(Exception):
    """A source could not answer for this call. The message names the source and the reason
    (and the host, for remote sources), never a secret."""

    def __init__(self, source: str, reason: str, host: str = "") -> None:
        self.source = source
        self.reason = reason
        self.host = host
        where = f" ({host})" if host else ""
        super().__init__(f"{source}{where}: {reason}")


class SourceTimeout(SourceError):
    """The source did not answer within its own timeout."""


class SourceSettings(BaseModel):
    """Settings every source has; a source's own ``Settings`` extends it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    timeout_ms: int = Field(default=1000, ge=10, le=60_000)


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What ICM lends a source: the shared store, number rules and manager directory."""

    store: Store
    numbers: Numbers
    managers: Managers


class Source(Protocol):
    name: ClassVar[str]
    Settings: ClassVar[type[SourceSettings]]

    def __init__(self, settings: SourceSettings, context: SourceContext) -> None: ...

    async def start(self) -> None: ...

    async def lookup(self, number: str) -> Answer | None: ...

    async def close(self) -> None: ...


@cache
def installed_sources() -> Mapping[str, type[Source]]:
    """Every source installed in this environment, by name."""
    found: dict[str, type[Source]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = entry.load()
    return found
