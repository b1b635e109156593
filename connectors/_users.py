"""A CRM's users (employees) by id: who is active, his name and e-mail, and his PBX
extension where the CRM holds one. Refreshed in the background (never on a call's path).
Once the map is loaded, a user missing from it is one the CRM no longer knows (deleted);
before that, nothing is known of him and he is taken as he is named."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from connectors._refresh import Refresher
from icm.metrics import Metrics


@dataclass(frozen=True, slots=True)
class CrmUser:
    id: str
    name: str = ""
    email: str | None = None
    active: bool = True
    extension: str | None = None
    mobile: str | None = None


class UserMap:
    """:param fetch: every user of the CRM (raises SourceError on failure)."""

    def __init__(
        self,
        source: str,
        interval_s: float,
        fetch: Callable[[], Awaitable[dict[str, CrmUser]]],
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.users: dict[str, CrmUser] = {}
        self._fetch = fetch
        self.refresher = Refresher(source, "user map", interval_s, self._load, metrics=metrics)

    async def _load(self) -> None:
        self.users = await self._fetch()

    def get(self, user_id: str) -> CrmUser | None:
        return self.users.get(user_id)

    @property
    def loaded(self) -> bool:
        """Whether the map was fetched at least once."""
        return self.refresher.ready.is_set()

    def start(self) -> None:
        self.refresher.start()

    async def wait(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) for the first attempt to load the map; True if the
        map is loaded."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.refresher.tried.wait()
        except TimeoutError:
            pass
        return self.refresher.ready.is_set()

    async def close(self) -> None:
        await self.refresher.close()
