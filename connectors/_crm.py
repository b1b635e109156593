"""The shape every CRM source has. Like Home Assistant's ``DataUpdateCoordinator``, the
base class owns the machinery and a CRM writes only what is its own:

* :meth:`CrmSource.search`: the records holding the caller's number, one list per entity
  kind, the most wanted kind first;
* :meth:`CrmSource.fetch_users`: the CRM's users (refreshed in the background);
* :meth:`CrmSource.answer`: who is responsible for one record;
* and, where the CRM is not a plain bearer-token API, its address, its credentials and
  how a refused token looks.

The base class owns the rest: settings checked once, the HTTP client behind the
account's rate limit, the credentials ("refused → renew once → send again"), the user
map, start, close and ``wait_ready``, the pause after the CRM's own "too many
requests", and the choice among several records (the first kind in ``entities`` with a
record; within it, the most recently updated). A fourth CRM is one module of this shape
plus its tests (README, "Adding a CRM").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar, cast, get_args

from pydantic import AfterValidator

from connectors._auth import Credentials, FixedToken
from connectors._http_client import HttpClient, HttpSourceSettings, Reply
from connectors._mirror import Entry, Mirror
from connectors._oauth import Refresh, TokenKeeper
from connectors._users import CrmUser, UserMap
from icm.model import Answer
from icm.ratelimit import planning
from icm.secrets import SecretRef
from icm.sources import SourceContext, SourceRateLimited, SourceSettings

S = TypeVar("S", bound=HttpSourceSettings)


@dataclass(frozen=True, slots=True)
class Record:
    """One CRM record whose phone is the caller's: its kind (as written in ``entities``),
    id, last update (Unix time, 0 if unknown) and the CRM's own fields."""

    kind: str
    id: str
    data: Mapping[str, Any]
    updated: float = 0.0


def iso_time(value: object) -> float:
    """An ISO 8601 date-time as CRMs write it (``2026-01-01T10:00:00+03:00``, or inside
    ``{"value": ...}``) as Unix time; 0 if there is none."""
    if isinstance(value, Mapping):
        value = value.get("value")
    if not isinstance(value, str) or not value:
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def latest(records: list[Record]) -> Record:
    """The most recently updated record; the first one among equals."""
    return max(records, key=lambda record: record.updated)


def once_each(kinds: Any) -> AfterValidator:
    """A settings validator for ``entities``: at least one of ``kinds`` (a ``Literal``),
    each at most once."""
    names = ", ".join(get_args(kinds))

    def check(entities: list[str]) -> list[str]:
        if not entities or len(set(entities)) != len(entities):
            raise ValueError(f"expected each of {names} at most once")
        return entities

    return AfterValidator(check)


class CrmSource(ABC, Generic[S]):
    """A CRM as a source: the responsible user of the record holding the caller's number.

    :param settings: the CRM's own settings (a ``Settings`` instance).
    """

    name: ClassVar[str]
    Settings: ClassVar[type[SourceSettings]]
    remote: ClassVar[bool] = True
    # What the CRM calls its users, in explanations ("responsible employee 12").
    user_label: ClassVar[str] = "user"
    # Requests one lookup of a known caller makes: a burst lets a lookup begin only when
    # they can all go in time.
    requests_per_lookup: ClassVar[int] = 1
    # The entity kinds the CRM can keep a mirror of (see :meth:`changed`).
    mirrored: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: SourceSettings, context: SourceContext) -> None:
        if not isinstance(settings, self.Settings):
            raise TypeError(f"{self.name}: settings must be {self.Settings.__name__}")
        self.settings = cast(S, settings)
        self.context = context
        self.numbers = context.numbers
        base_url, self.account = self.address()
        self.http = HttpClient.for_account(
            self.name, self.settings, context, base_url, self.account
        )
        self.limiter = self.http.limiter
        self._clients = [self.http]
        self.credentials = self.make_credentials()
        self.users = UserMap(
            self.name, self.settings.users_refresh_s, self.fetch_users, metrics=context.metrics
        )
        self.mirror: Mirror | None = None
        if getattr(self.settings, "mirror", False) and self.mirrored:
            kinds = [k for k in getattr(self.settings, "entities", ()) if k in self.mirrored]
            self.mirror = Mirror(
                self.name,
                kinds,
                self.changed,
                interval_s=float(getattr(self.settings, "mirror_refresh_s", 60.0)),
                metrics=context.metrics,
            )

    # What each CRM writes.

    def address(self) -> tuple[str, str]:
        """The API's base URL, and the account's name (it keys the rate limit and the
        stored tokens): by default the settings' ``base_url`` for both."""
        base_url = str(getattr(self.settings, "base_url", ""))
        return base_url, base_url

    def make_credentials(self) -> Credentials:
        """How requests are authorised: by default, not at all."""
        return FixedToken(self.name, None)

    @abstractmethod
    def search(self, number: str) -> AsyncIterator[list[Record]]:
        """The records whose phone is ``number`` (verified, not merely found by a text
        search): one list per entity kind, in the order of ``entities``. Stop asking the
        CRM once a kind has a record: the next list is only asked for if this one is
        empty."""

    @abstractmethod
    async def fetch_users(self) -> dict[str, CrmUser]:
        """Every user of the CRM by id (raises a ``SourceError`` on failure)."""

    @abstractmethod
    def answer(self, record: Record) -> Answer | None:
        """Who is responsible for ``record`` (see :meth:`responsible`)."""

    async def changed(self, kind: str, since: float | None) -> list[Entry]:
        """The records of ``kind`` updated since ``since`` (every one if None), for the
        mirror; a CRM that lists ``mirrored`` kinds writes it."""
        raise NotImplementedError

    def sign(self, token: str, request: dict[str, Any]) -> dict[str, Any]:
        """A request carrying ``token``: by default as a bearer token."""
        if not token:
            return request
        headers = {**request.get("headers", {}), "Authorization": f"Bearer {token}"}
        return {**request, "headers": headers}

    def expired(self, reply: Reply) -> bool:
        """Whether ``reply`` refuses the token as expired (renew it, send again)."""
        return reply.status == 401

    # What the base class does.

    async def start(self) -> None:
        for client in self._clients:
            await client.start()
        self.credentials.start()
        self.users.start()
        if self.mirror is not None:
            self.mirror.start()

    async def close(self) -> None:
        if self.mirror is not None:
            await self.mirror.close()
        await self.users.close()
        await self.credentials.close()
        for client in reversed(self._clients):
            await client.close()

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait a little for the user map (``icm lookup``; the daemon never waits)."""
        await self.users.wait(timeout_s)

    async def lookup(self, number: str) -> Answer | None:
        mirrored = self._from_mirror(number)
        if mirrored is not None:
            return mirrored
        with planning(self.requests_per_lookup):
            async for records in self.search(number):
                if records:
                    return self.answer(latest(records))
        return None

    def _from_mirror(self, number: str) -> Answer | None:
        """The answer the mirror holds, without asking the CRM; None if it cannot say
        (not loaded, no record, or a kind before the hit that it does not mirror)."""
        if self.mirror is None or not self.mirror.ready:
            return None
        for kind in getattr(self.settings, "entities", ()):
            if kind not in self.mirror.kinds:
                return None
            entries = self.mirror.find(kind, number)
            if entries:
                entry = max(entries, key=lambda e: e.updated)
                answer = self.answer(Record(kind, entry.id, entry.data, entry.updated))
                return replace(answer, detail=f"{answer.detail}; from the mirror")
        return None

    async def send(self, method: str, path: str, **request: Any) -> Reply:
        """One request with the credentials (:meth:`HttpClient.request`'s arguments);
        refused as expired, the token is renewed once and the request sent once more."""
        token = await self.credentials.token()
        reply = await self.http.request(method, path, **self.sign(token, request))
        if self.credentials.renewable and self.expired(reply):
            token = await self.credentials.renew(stale=token)
            reply = await self.http.request(method, path, **self.sign(token, request))
        return reply

    def client(self, base_url: str, *, timeout_s: float, max_body: int) -> HttpClient:
        """Another HTTP client for this CRM (an OAuth server elsewhere), started and
        closed with the source."""
        client = HttpClient(self.name, base_url, timeout_s=timeout_s, max_body=max_body)
        self._clients.append(client)
        return client

    def oauth(self, refresh: Refresh, initial_refresh: SecretRef) -> TokenKeeper:
        """OAuth2 credentials for this account, kept in the store."""
        return TokenKeeper(
            self.name,
            self.context.store,
            refresh,
            initial_refresh=initial_refresh,
            key=f"oauth:{self.name}:{self.account}",
        )

    def too_many(self, reply: Reply, what: str = "429 too many requests") -> SourceRateLimited:
        """The CRM's own "too many requests": nothing more is sent for its ``Retry-After``
        (1 s if it names none)."""
        self.pause(reply.retry_after(1.0), what)
        return self.http.error(SourceRateLimited, what, reply.status)

    def pause(self, seconds: float, reason: str, scope: str = "") -> None:
        if self.limiter is not None:
            self.limiter.pause(seconds, reason, scope)

    def responsible(self, what: str, user_id: str, *, name: str = "") -> Answer:
        """The answer naming CRM user ``user_id`` as responsible for ``what`` (``contact
        101``), with what the user map knows of him (``name`` if it does not). A user the
        loaded map does not hold (deleted, or not a user at all) is no answer."""
        user = self.users.get(user_id)
        who = f"{self.user_label} {user_id}"
        if user is None and self.users.loaded:
            gone = f"{what}, responsible {who}{f' ({name})' if name else ''}"
            return Answer(
                user=user_id,
                name=name,
                responsible=False,
                detail=f"{gone} is not among {self.name}'s {self.user_label}s (deleted?)",
            )
        user = user or CrmUser(user_id, name=name)
        who += f" ({user.name})" if user.name else ""
        return Answer(
            user=user_id,
            name=user.name,
            email=user.email,
            active=user.active,
            detail=f"{what}, responsible {who}",
        )

    def nobody(self, what: str) -> Answer:
        """The answer for a record without a responsible user: no answer."""
        return Answer(responsible=False, detail=f"{what} has no responsible {self.user_label}")
