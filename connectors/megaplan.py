"""Megaplan (API v3, cloud or on-premise): the responsible employee of the client (person or
company) whose phone is the caller's.

* Auth: ``POST /api/v3/auth/access_token`` with ``grant_type=password`` for a service
  account; the token is kept in the store (shared by instances, kept over restarts) and
  ICM logs in again on a 401.
* Requests: GET parameters are one JSON object, percent-encoded as the whole query string
  (``?%7B%22q%22%3A...``; a literal ``+`` would reach the server as a space). Every answer
  is ``{"meta": {"status", "errors"}, "data"}`` and an error may come with HTTP 200, so
  ``meta.status`` decides.
* Lookup: ``/api/v3/contractorCompany/search`` with the last 10 digits, or the local
  digits for a caller of the configured area (it returns people and companies), then the
  full card of the best candidates (``/contractorHuman/{id}``,
  ``/contractorCompany/{id}``): its ``contactInfo`` phones are checked against the
  caller's number. Among several cards of the first kind in ``entities``, the most
  recently updated (``timeUpdated``) wins. The responsible is the first ``Employee`` in
  ``responsibles`` who still works here (else the first one, to say why not).
* Megaplan holds no extension: employees are mapped through ``[managers.<ext>] ids =
  { megaplan = ... }`` or their e-mail. The employee map (``/api/v3/employee``, paged with
  ``pageAfter``) says who still works (``isWorking``); refreshed in the background.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote

from pydantic import Field

from connectors._auth import Credentials, StoredLogin
from connectors._crm import CrmSource, Record, iso_time, once_each
from connectors._http_client import HttpSourceSettings, Reply, http_address
from connectors._phones import same_number, search_digits
from connectors._users import CrmUser
from icm.model import Answer
from icm.numbers import is_digits
from icm.secrets import SecretRef
from icm.sources import (
    SourceAuthError,
    SourceBadResponse,
    SourceError,
    SourceResponseError,
    SourceSettings,
)

Entity = Literal["human", "company"]
_TYPES = {"ContractorHuman": "human", "ContractorCompany": "company"}
_PATHS = {"human": "contractorHuman", "company": "contractorCompany"}


def json_query(params: dict[str, Any]) -> str:
    """Megaplan's query string: the parameters as one JSON object, every reserved
    character percent-encoded (``+`` as ``%2B``)."""
    return quote(json.dumps(params, ensure_ascii=False, separators=(",", ":")), safe="")


class MegaplanSettings(HttpSourceSettings):
    """The ``[sources.megaplan]`` section: the account, the service login and limits."""

    # The account's address: https://<account>.megaplan.ru, or your own server's.
    base_url: Annotated[str, http_address("https://example.megaplan.ru")]
    # The service account ICM logs in as (it must see the clients).
    username: str = Field(min_length=1)
    password: SecretRef = SecretRef(env="ICM_MEGAPLAN_PASSWORD")
    entities: Annotated[list[Entity], once_each(Entity)] = ["human", "company"]
    # Search results considered, and full cards fetched to check the phone.
    search_limit: int = Field(default=20, ge=1, le=100)
    max_cards: int = Field(default=3, ge=1, le=10)
    default_timeout_ms: ClassVar[int] = 1500
    # Megaplan publishes no limit; one client library keeps to 5 requests/s: never more
    # in any second (and the margin).
    rate_per_s: float = Field(default=5.0, gt=0, le=50)
    burst: int = Field(default=5, ge=1, le=50)
    per_second: ClassVar[bool] = True

    def secrets(self) -> dict[str, str]:
        return {"password": "the Megaplan service account's password"}


class MegaplanSource(CrmSource[MegaplanSettings]):
    """Megaplan as a source: clients (people and companies) found by the caller's number."""

    name: ClassVar[str] = "megaplan"
    Settings: ClassVar[type[SourceSettings]] = MegaplanSettings
    user_label: ClassVar[str] = "employee"
    requests_per_lookup: ClassVar[int] = 2  # the search, the card

    def make_credentials(self) -> Credentials:
        key = f"token:{self.name}:{self.settings.base_url}:{self.settings.username}"
        return StoredLogin(self.name, self.context.store, self._login, key=key)

    def expired(self, reply: Reply) -> bool:
        return self._unwrap(reply)[0] == 401

    async def search(self, number: str) -> AsyncIterator[list[Record]]:
        found = await self._get(
            "api/v3/contractorCompany/search",
            {"q": search_digits(self.numbers, number), "limit": self.settings.search_limit},
        )
        order: dict[str, int] = {kind: i for i, kind in enumerate(self.settings.entities)}
        candidates = [
            c
            for c in _items(found)
            if _TYPES.get(str(c.get("contentType"))) in order and self._may_match(c, number)
        ]
        ranked = sorted(candidates, key=lambda c: order[_TYPES[str(c["contentType"])]])
        cards = await asyncio.gather(*(self._card(c) for c in ranked[: self.settings.max_cards]))
        verified = [c for c in cards if c is not None and self._has_phone(c.data, number)]
        for kind in self.settings.entities:
            yield [card for card in verified if card.kind == kind]

    def answer(self, record: Record) -> Answer:
        what = f"{record.kind} {record.id}"
        answers = [
            self.responsible(what, str(r.get("id")), name=str(r.get("name") or ""))
            for r in record.data.get("responsibles") or ()
            if isinstance(r, dict) and r.get("contentType") == "Employee" and r.get("id")
        ]
        usable = [a for a in answers if a.responsible and a.active]
        return (usable or answers or [self.nobody(what)])[0]

    async def fetch_users(self) -> dict[str, CrmUser]:
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

    # Clients.

    def _may_match(self, card: dict[str, Any], number: str) -> bool:
        """A reduced card without contact data may match; one with it must."""
        infos = card.get("contactInfo")
        if not isinstance(infos, list) or not infos:
            return True
        return self._has_phone(card, number)

    def _has_phone(self, card: Mapping[str, Any], number: str) -> bool:
        for info in card.get("contactInfo") or ():
            if (
                isinstance(info, dict)
                and info.get("type") == "phone"
                and same_number(self.numbers, info.get("value"), number)
            ):
                return True
        return False

    async def _card(self, reduced: dict[str, Any]) -> Record | None:
        kind = _TYPES[str(reduced["contentType"])]
        ident = str(reduced.get("id") or "")
        if not is_digits(ident):
            return None
        card = await self._get(f"api/v3/{_PATHS[kind]}/{ident}", None)
        if not isinstance(card, dict):
            return None
        kind = _TYPES.get(str(card.get("contentType")), kind)
        return Record(kind, str(card.get("id")), card, iso_time(card.get("timeUpdated")))

    # The API envelope.

    async def _get(self, path: str, params: dict[str, Any] | None) -> Any:
        """``data`` of a GET; a :class:`SourceError` for any error, wherever it is said."""
        query = json_query(params) if params else None
        reply = await self.send("GET", path, query=query)
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
                raise self.http.error(SourceBadResponse, "unexpected JSON (no meta)")
            return reply.status, None
        status = meta.get("status")
        status = status if isinstance(status, int) else reply.status
        if reply.status != 200:
            status = reply.status
        return status, body.get("data")

    def _failure(self, status: int, reply: Reply) -> SourceError:
        if status == 401:
            return self.http.error(SourceAuthError, "401 unauthorized after logging in again", 401)
        if status == 429:
            return self.too_many(reply)
        if status == 403:
            forbidden = "403 forbidden: the service account may not see this"
            return self.http.error(SourceAuthError, forbidden, status)
        if status == 422:
            return self.http.error(SourceResponseError, "422 request error", status)
        meta = f", meta.status {status}" if status != reply.status else ""
        return self.http.error(SourceResponseError, f"HTTP {reply.status}{meta}", status)

    async def _login(self) -> tuple[str, float]:
        """The password grant: a token and its lifetime."""
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
            refused = f"login refused (HTTP {reply.status}): check username and password"
            raise self.http.error(SourceAuthError, refused, reply.status)
        expires_in = data.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3660.0
        return str(data["access_token"]), lifetime


def _items(data: Any) -> list[dict[str, Any]]:
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _email(employee: dict[str, Any]) -> str | None:
    for info in employee.get("contactInfo") or ():
        if isinstance(info, dict) and info.get("type") == "email" and info.get("value"):
            return str(info["value"]).strip().lower()
    login = employee.get("login")
    return login.strip().lower() if isinstance(login, str) and "@" in login else None
