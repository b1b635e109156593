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

A source that asks a remote service sets ``remote = True``: ICM then wraps it in a
cache, single-flight and circuit breaker (:mod:`icm.guard`), and its settings extend
:class:`icm.guard.RemoteSourceSettings`. Secrets a source needs are
:class:`~icm.secrets.SecretRef` fields named by its settings' ``secrets()``; ICM reads
them from the ``<name>_env`` variable or the ``<name>_file`` file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import ConfigDict, Field, model_validator

from icm.secrets import WithSecrets

if TYPE_CHECKING:
    from icm.managers import Managers
    from icm.metrics import Metrics
    from icm.model import Answer
    from icm.numbers import Numbers
    from icm.store.base import Store

ENTRY_POINT_GROUP = "icm.sources"


class SourceError(Exception):
    """A source could not answer for this call. The message names the source and the reason
    (and the host, for remote sources), never a secret or a URL.

    The subclasses say what kind of failure it was, like aiohttp's client errors::

        SourceError
        ├── SourceTimeout            no answer within the source's own time
        ├── SourceSkipped            not asked at all (circuit open, paused)
        │   └── SourceThrottled      no request slot in time (ICM's own rate limit)
        ├── SourceConnectionError    not reached, or the connection dropped
        └── SourceResponseError      it answered, with an error (``status``)
            ├── SourceAuthError      credentials or rights refused
            ├── SourceRateLimited    the source's own "too many requests"
            └── SourceBadResponse    not the answer its API documents

    :param status: the HTTP (or the API's own) status, where there is one; else 0.
    """

    def __init__(self, source: str, reason: str, host: str = "", *, status: int = 0) -> None:
        self.source = source
        self.reason = reason
        self.host = host
        self.status = status
        where = f" ({host})" if host else ""
        super().__init__(f"{source}{where}: {reason}")


class SourceTimeout(SourceError):
    """The source did not answer within its own timeout."""


class SourceSkipped(SourceError):
    """The source was not asked for this call (circuit open, backing off after a rate
    limit): nothing was waited for."""


class SourceThrottled(SourceSkipped):
    """ICM's own rate limit had no request slot for this lookup within its time: it was
    refused at once, and the CRM was not asked (nor counted against)."""


class SourceConnectionError(SourceError):
    """The source could not be reached, or the connection dropped before the whole answer."""


class SourceResponseError(SourceError):
    """The source answered with an error: an HTTP error status, or an error in the body."""


class SourceAuthError(SourceResponseError):
    """The source refused ICM's credentials or their rights (a refused token, login or
    token refresh, no rights)."""


class SourceRateLimited(SourceResponseError):
    """The source said "too many requests" (its own limit, not ICM's)."""


class SourceBadResponse(SourceResponseError):
    """The answer is not what the source's API documents (not JSON, another shape, too
    large)."""


class SourceSettings(WithSecrets):
    """Settings every source has; a source's own ``Settings`` extends it. A source sets
    its own default lookup timeout with ``default_timeout_ms``; its secrets are
    :class:`~icm.secrets.SecretRef` fields named by ``secrets()``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    default_timeout_ms: ClassVar[int] = 1000

    timeout_ms: int = Field(default=1000, ge=10, le=60_000)

    @model_validator(mode="before")
    @classmethod
    def _own_default_timeout(cls, data: Any) -> Any:
        if isinstance(data, dict) and "timeout_ms" not in data:
            return {**data, "timeout_ms": cls.default_timeout_ms}
        return data


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What ICM lends a source: the shared store, number rules and manager directory.

    :param shared: the store is shared by several instances (Redis): rate limits and
        single-flight then also hold across instances.
    :param metrics: the daemon's metrics, if any.
    """

    store: Store
    numbers: Numbers
    managers: Managers
    shared: bool = False
    metrics: Metrics | None = None


class Source(Protocol):
    """What a source module provides (see the module docstring)."""

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
