"""Megaplan (API v3, cloud or on-premise): the responsible employee of the client (person or
company) whose phone is the caller's.

* Auth: ``POST /api/v3/auth/access_token`` with ``grant_type=password`` for a service
  account; the token is kept in the store (shared by instances, kept over restarts) and
  ICM logs in again on a 401.
* Requests: GET parameters are one JSON object, percent-encoded as the whole query string
  (``?%7B%22q%22%3A...``; a literal ``+`` would reach the server as a space). Every answer
  is ``{"meta": {"status", "errors"}, "data"}`` and an error may come with HTTP 200, so
  ``meta.status`` decides.
* Lookup: ``/api/v3/contractorCompany/search`` with the last 10 digits (it returns people
  and companies), then the full card of the best candidates (``/contractorHuman/{id}``,
  ``/contractorCompany/{id}``): its ``contactInfo`` phones are checked against the
  caller's number, and the responsible is the first ``Employee`` in ``responsibles``.
* Megaplan holds no extension: employees are mapped through ``[managers.<ext>] ids =
  { megaplan = ... }`` or their e-mail. The employee map (``/api/v3/employee``, paged with
  ``pageAfter``) says who still works (``isWorking``); refreshed in the background.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from pydantic import Field, field_validator

from connectors._http_client import HttpClient, HttpSourceSettings, Reply, http_address
from connectors._phones import same_number, tail
from connectors._users import CrmUser, UserMap
from icm.model import Answer
from icm.numbers import Numbers
from icm.secrets import SecretRef
from icm.sources import SourceContext, SourceError, SourceSettings
from icm.store import Store, StoreError

log = logging.getLogger(__name__)

Entity = Literal["human", "company"]
_TYPES = {"ContractorHuman": "human", "ContractorCompany": "company"}
_PATHS = {"human": "contractorHuman", "company": "contractorCompany"}


def json_query(params: dict[str, Any]) -> str:
    """Megaplan's query string: the parameters as one JSON object, every reserved
    character percent-encoded (``+`` as ``%2B``)."""
    return quote(json.dumps(params, ensure_ascii=False, separators=(",", ":")), safe="")


class MegaplanSettings(HttpSourceSettings):
    # The account's address: https://<account>.megaplan.ru, or your own server's.
    base_url: str
    # The service account ICM logs in as (it must see the clients).
    username: str = Field(min_length=1)
    password: SecretRef = SecretRef(env="ICM_MEGAPLAN_PASSWORD")
    entities: list[Entity] = ["human", "company"]
    # Search results considered, and full cards fetched to check the phone.
    search_limit: int = Field(default=20, ge=1, le=100)
    max_cards: int = Field(default=3, ge=1, le=10)
    default_timeout_ms: ClassVar[int] = 1500
    # Megaplan publishes no limit; one client library keeps to 5 requests/s.
    rate_per_s: float = Field(default=5.0, gt=0, le=50)
    burst: int = Field(default=5, ge=1, le=50)

    @field_validator("base_url")
    @classmethod
    def _address(cls, value: str) -> str:
        return http_address(value, "https://example.megaplan.ru")

    @field_validator("entities")
    @classmethod
    def _entities(cls, entities: list[str]) -> list[str]:
        if not entities or len(set(entities)) != len(entities):
            raise ValueError("expected each of human, company at most once")
        return entities

    def secrets(self) -> dict[str, str]:
        return {"password": "the Megaplan service account's password"}


class MegaplanSource:
    name: ClassVar[str] = "megaplan"
    Settings: ClassVar[type[SourceSettings]] = MegaplanSettings
    remote: ClassVar[bool] = True

    def __init__(self, settings: SourceSettings, context: SourceContext) -> None:
        assert isinstance(settings, MegaplanSettings)
        self.settings = settings
        self.numbers: Numbers = context.numbers
        self.store: Store = context.store
        self.http = HttpClient.for_account(
            self.name, settings, context, settings.base_url, settings.base_url
        )
        self.limiter = self.http.limiter
        self.users = UserMap(
            self.name, settings.users_refresh_s, self._fetch_employees, metrics=context.metrics
        )
        self._token = ""
        self._login_task: asyncio.Task[str] | None = None
        self._key = f"token:{self.name}:{settings.base_url}:{settings.username}"
        self.logins = 0

    async def start(self) -> None:
        await self.http.start()
        self.users.start()

    async def close(self) -> None:
        await self.users.close()
        if self._login_task is not None:
            self._login_task.cancel()
            await asyncio.gather(self._login_task, return_exceptions=True)
        await self.http.close()

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait a little for the user map (``icm lookup``; the daemon never waits)."""
        await self.users.wait(timeout_s)

    async def lookup(self, number: str) -> Answer | None:
        found = await self._get(
            "api/v3/contractorCompany/search",
            {"q": tail(number), "limit": self.settings.search_limit},
        )
        order = {kind: i for i, kind in enumerate(self.settings.entities)}
        candidates = [
            c
            for c in _items(found)
            if _TYPES.get(str(c.get("contentType"))) in order and self._may_match(c, number)
        ]
        ranked = sorted(candidates, key=lambda c: order[_TYPES[str(c["contentType"])]])
        cards = await asyncio.gather(*(self._card(c) for c in ranked[: self.settings.max_cards]))
        for card in cards:
            if card is not None and self._has_phone(card, number):
                return self._answer(card)
        return None

    def _may_match(self, card: dict[str, Any], number: str) -> bool:
        """A reduced card without contact data may match; one with it must."""
        infos = card.get("contactInfo")
        if not isinstance(infos, list) or not infos:
            return True
        return self._has_phone(card, number)

    def _has_phone(self, card: dict[str, Any], number: str) -> bool:
        for info in card.get("contactInfo") or ():
            if (
                isinstance(info, dict)
                and info.get("type") == "phone"
                and same_number(self.numbers, info.get("value"), number)
            ):
                return True
        return False

    async def _card(self, reduced: dict[str, Any]) -> dict[str, Any] | None:
        kind = _TYPES[str(reduced["contentType"])]
        ident = str(reduced.get("id") or "")
        if not ident.isdigit():
            return None
        card = await self._get(f"api/v3/{_PATHS[kind]}/{ident}", None)
        return card if isinstance(card, dict) else None

    def _answer(self, card: dict[str, Any]) -> Answer:
        kind = _TYPES.get(str(card.get("contentType")), "client")
        what = f"{kind} {card.get('id')}"
        for responsible in card.get("responsibles") or ():
            if isinstance(responsible, dict) and responsible.get("contentType") == "Employee":
                user_id = str(responsible.get("id"))
                user = self.users.get(user_id) or CrmUser(
                    user_id, name=str(responsible.get("name") or "")
                )
                who = f"employee {user_id}" + (f" ({user.name})" if user.name else "")
                return Answer(
                    user=user_id,
                    name=user.name,
                    email=user.email,
                    active=user.active,
                    detail=f"{what}, responsible {who}",
                )
        return Answer(detail=f"{what} has no responsible employee")

    # The API envelope.

    async def _get(self, path: str, params: dict[str, Any] | None) -> Any:
        """``data`` of a GET; :class:`SourceError` for any error, wherever it is said."""
        query = json_query(params) if params else None
        token = await self._access_token()
        reply = await self.http.request("GET", path, query=query, headers=_bearer(token))
        status, data = self._unwrap(reply)
        if status == 401:
            token = await self._relogin(stale=token)
            reply = await self.http.request("GET", path, query=query, headers=_bearer(token))
            status, data = self._unwrap(reply)
        if status != 200:
            raise self._failure(status, reply)
        return data

    def _unwrap(self, reply: Reply) -> tuple[int, Any]:
        """(the status that counts, data): ``meta.status`` when there is one."""
        if not reply.body:
            return reply.status, None
        try:
            body = reply.json()
        except SourceError:
            if reply.status != 200:
                return reply.status, None
            raise
        meta = body.get("meta") if isinstance(body, dict) else None
        if not isinstance(meta, dict):
            if reply.status == 200:
                raise self.http.error("unexpected JSON (no meta)")
            return reply.status, None
        status = meta.get("status")
        status = status if isinstance(status, int) else reply.status
        if reply.status != 200:
            status = reply.status
        return status, body.get("data")

    def _failure(self, status: int, reply: Reply) -> SourceError:
        if status == 401:
            return self.http.error("401 unauthorized after logging in again")
        if status == 429:
            self.limiter.pause(reply.retry_after(1.0), "429 too many requests")
            return self.http.error("429 too many requests")
        if status == 403:
            return self.http.error("403 forbidden: the service account may not see this")
        if status == 422:
            return self.http.error("422 request error")
        return self.http.error(
            f"HTTP {reply.status}" + (f", meta.status {status}" if status != reply.status else "")
        )

    # Logging in: one login at a time; the token is shared through the store.

    async def _access_token(self) -> str:
        if self._token:
            return self._token
        try:
            stored = await self.store.get(self._key)
        except StoreError:
            stored = None
        if stored:
            self._token = stored
            return stored
        return await self._relogin(stale="")

    async def _relogin(self, stale: str) -> str:
        if self._login_task is None:
            self._login_task = asyncio.create_task(self._login(stale), name="megaplan-login")
            self._login_task.add_done_callback(self._logged_in)
        return await asyncio.shield(self._login_task)

    def _logged_in(self, task: asyncio.Task[str]) -> None:
        self._login_task = None
        if not task.cancelled():
            task.exception()

    async def _login(self, stale: str) -> str:
        try:
            stored = await self.store.get(self._key)
        except StoreError:
            stored = None
        if stored and stored != stale:  # another instance logged in meanwhile
            self._token = stored
            return stored
        form = {
            "username": self.settings.username,
            "password": self.settings.password.get_secret_value(),
            "grant_type": "password",
        }
        reply = await self.http.request(
            "POST", "api/v3/auth/access_token", form=form, limited=False, timeout_s=10
        )
        data = reply.json() if reply.body else None
        if reply.status != 200 or not isinstance(data, dict) or "access_token" not in data:
            raise self.http.error(
                f"login refused (HTTP {reply.status}): check username and password"
            )
        token = str(data["access_token"])
        expires_in = data.get("expires_in")
        ttl = float(expires_in) - 60 if isinstance(expires_in, int | float) else 3600.0
        self._token = token
        self.logins += 1
        try:
            await self.store.set(self._key, token, ttl_s=max(ttl, 60.0))
        except StoreError as exc:
            log.warning("megaplan: cannot share the token through the store (%s)", exc)
        return token

    # Employees.

    async def _fetch_employees(self) -> dict[str, CrmUser]:
        users: dict[str, CrmUser] = {}
        after: str | None = None
        for _ in range(1000):
            params: dict[str, Any] = {"limit": 100}
            if after is not None:
                params["pageAfter"] = {"contentType": "Employee", "id": after}
            page = _items(await self._get("api/v3/employee", params))
            for item in page:
                ident = str(item.get("id") or "")
                if not ident:
                    continue
                users[ident] = CrmUser(
                    id=ident,
                    name=str(item.get("name") or "").strip()
                    or " ".join(str(item.get(k) or "") for k in ("firstName", "lastName")).strip(),
                    email=_email(item),
                    active=item.get("isWorking") is not False and not item.get("fireDay"),
                )
            if len(page) < 100:
                break
            after = str(page[-1].get("id"))
        return users


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _items(data: Any) -> list[dict[str, Any]]:
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _email(employee: dict[str, Any]) -> str | None:
    for info in employee.get("contactInfo") or ():
        if isinstance(info, dict) and info.get("type") == "email" and info.get("value"):
            return str(info["value"]).strip().lower()
    login = employee.get("login")
    return login.strip().lower() if isinstance(login, str) and "@" in login else None
