"""The ICM database source: the manager who last talked with the caller.

Answers from the store: a binding pinned by an administrator (``icm bind``) first, else
the manager of the last conversation learned within ``retention_days``.
What it answers from is learned by :class:`icm.learner.Learner` from finished calls; its
settings (``[sources.icmdb]``) are :class:`icm.learner.LearnSettings`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import ClassVar

from icm.config import EXTENSION
from icm.learner import LearnSettings
from icm.model import Answer
from icm.sources import SourceContext, SourceError, SourceSettings
from icm.store import StoreError

IcmDbSettings = LearnSettings


class IcmDbSource:
    """The ICM database as a source: pinned bindings first, then the last conversation."""

    name: ClassVar[str] = "icmdb"
    Settings: ClassVar[type[SourceSettings]] = IcmDbSettings

    def __init__(self, settings: SourceSettings, context: SourceContext) -> None:
        assert isinstance(settings, IcmDbSettings)
        self.settings = settings
        self.store = context.store

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def lookup(self, number: str) -> Answer | None:
        since = time.time() - self.settings.retention_days * 86400
        try:
            binding = await self.store.binding(number, learned_since=since)
        except StoreError as exc:
            raise SourceError(self.name, f"store unavailable: {exc}") from exc
        if binding is None:
            return None
        when = _date(binding.at)
        detail = f"pinned {when}" if binding.pinned else f"last talked {when}"
        if binding.note:
            detail += f" ({binding.note})"
        if EXTENSION.match(binding.target):
            return Answer(extension=binding.target, detail=detail)
        return Answer(number=binding.target, detail=detail)


def _date(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
