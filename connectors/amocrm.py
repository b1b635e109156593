"""amoCRM (and Kommo, the same API v4 under other domains): the responsible user of the
contact, company or lead whose phone is the caller's.

* Auth: a long-lived token (private integration), or OAuth2 whose rotating refresh token
  lives in the store (:mod:`connectors._oauth`).
* Lookup: ``GET /api/v4/contacts?query=<last 10 digits>&with=leads,companies`` (then
  companies, as configured). ``query`` is a full-text search over every field, so each
  hit's ``PHONE`` values are checked against the caller's number; 204 means nothing.
  The first entity kind in ``entities`` with a verified hit wins (the most recently
  updated one); a lead wins through the contact or company it is linked to.
* The responsible is ``responsible_user_id``. amoCRM holds no PBX extension: the user is
  mapped through ``[managers.<ext>] ids = { amocrm = ... }`` or his e-mail. The user map
  (``/api/v4/users``: name, e-mail, active) is refreshed in the background; an inactive
  user counts as no answer.
* Errors: 401 refreshes the OAuth token once and retries once; 429 pauses requests
  (``Retry-After``); 403 (the flood ban among others) pauses them for a minute; the client
  side limit (7 requests/s by default) keeps ICM under amoCRM's own.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from connectors._http_client import HttpClient, HttpSourceSettings, Reply, http_address
from connectors._oauth import TokenKeeper, Tokens
from connectors._phones import same_number, tail
from connectors._users import CrmUser, UserMap
from icm.model import Answer
from icm.numbers import Numbers
from icm.secrets import SecretRef
from icm.sources import SourceContext, SourceError, SourceSettings

log = logging.getLogger(__name__)

Entity = Literal["contacts", "companies", "leads"]
_SINGULAR = {"contacts": "contact", "companies": "company", "leads": "lead"}


class AmoCrmSettings(HttpSourceSettings):
    # The account's address: https://<subdomain>.amocrm.ru, .amocrm.com or .kommo.com.
    base_url: str
    auth: Literal["token", "oauth"] = "token"
    token: SecretRef = SecretRef(env="ICM_AMOCRM_TOKEN")
    client_id: str = ""
    redirect_uri: str = ""
    client_secret: SecretRef = SecretRef(env="ICM_AMOCRM_CLIENT_SECRET")
    refresh_token: SecretRef = SecretRef()
    entities: list[Entity] = ["contacts", "companies", "leads"]
    max_pages: int = Field(default=2, ge=1, le=20)
    # amoCRM allows 7 requests/s per integration: evenly spaced, never 8 in one second.
    rate_per_s: float = Field(default=7.0, gt=0, le=7.0)
    burst: int = Field(default=1, ge=1, le=7)

    @field_validator("base_url")
    @classmethod
    def _address(cls, value: str) -> str:
        return http_address(value, "https://example.amocrm.ru")

    @field_validator("entities")
    @classmethod
    def _entities(cls, entities: list[str]) -> list[str]:
        if not entities or len(set(entities)) != len(entities):
            raise ValueError("expected each of contacts, companies, leads at most once")
        return entities

    @model_validator(mode="after")
    def _oauth_needs_client(self) -> AmoCrmSettings:
        if self.auth == "oauth" and not (self.client_id and self.redirect_uri):
            raise ValueError("auth = 'oauth' needs client_id and redirect_uri")
        return self

    def secrets(self) -> dict[str, str]:
        if self.auth == "token":
            return {"token": "the amoCRM long-lived token"}
        needed = {"client_secret": "the amoCRM integration's secret key"}
        if self.refresh_token.named:
            needed["refresh_token"] = "the first amoCRM refresh token"
        return needed


class AmoCrmSource:
    name: ClassVar[str] = "amocrm"
    Settings: ClassVar[type[SourceSettings]] = AmoCrmSettings
    remote: ClassVar[bool] = True

    def __init__(self, settings: SourceSettings, context: SourceContext) -> None:
        assert isinstance(settings, AmoCrmSettings)
        self.settings = settings
        self.numbers: Numbers = context.numbers
        self.http = HttpClient.for_account(
            self.name, settings, context, settings.base_url, settings.base_url
        )
        self.limiter = self.http.limiter
        self.keeper: TokenKeeper | None = None
        if settings.auth == "oauth":
            self.keeper = TokenKeeper(
                self.name,
                context.store,
                self._refresh,
                initial_refresh=settings.refresh_token,
                key=f"oauth:{self.name}:{settings.base_url}",
            )
        self.users = UserMap(
            self.name, settings.users_refresh_s, self._fetch_users, metrics=context.metrics
        )

    async def start(self) -> None:
        await self.http.start()
        if self.keeper is not None:
            self.keeper.start()
        else:
            _warn_expiry(self.settings.token.get_secret_value())
        self.users.start()

    async def close(self) -> None:
        await self.users.close()
        if self.keeper is not None:
            await self.keeper.close()
        await self.http.close()

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait a little for the user map (``icm lookup``; the daemon never waits)."""
        await self.users.wait(timeout_s)

    async def lookup(self, number: str) -> Answer | None:
        found: dict[str, list[dict[str, Any]]] = {}
        for kind in self.settings.entities:
            if kind == "leads":
                hits = await self._leads(number, found)
            else:
                if kind not in found:  # searched already for the leads
                    found[kind] = await self._search(kind, number)
                hits = found[kind]
            if hits:
                return self._answer(kind, _latest(hits))
        return None

    # The CRM's entities.

    async def _search(self, kind: str, number: str) -> list[dict[str, Any]]:
        """Entities of ``kind`` whose PHONE is ``number`` (verified), following pages."""
        params = {"query": tail(number), "limit": "50", "with": "leads"}
        if kind == "contacts":
            params["with"] = "leads,companies"
        path: str = f"api/v4/{kind}"
        verified: list[dict[str, Any]] = []
        for _ in range(self.settings.max_pages):
            page = await self._get(path, params)
            if page is None:
                break
            items = _embedded(page, kind, self.http)
            verified += [item for item in items if self._has_phone(item, number)]
            following = _next_link(page)
            if verified or following is None:
                break
            path, params = following, {}
        return verified

    async def _leads(
        self, number: str, found: dict[str, list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Open leads linked to the verified contacts (or else companies)."""
        for kind in ("contacts", "companies"):
            if kind not in found:
                found[kind] = await self._search(kind, number)
            ids = [
                str(lead["id"])
                for item in found[kind]
                for lead in _links_of(item, "leads")
                if isinstance(lead, dict) and "id" in lead
            ]
            if not ids:
                continue
            params = {f"filter[id][{i}]": lead for i, lead in enumerate(ids[:50])}
            page = await self._get("api/v4/leads", params)
            leads = _embedded(page, "leads", self.http) if page is not None else []
            open_leads = [lead for lead in leads if not lead.get("closed_at")]
            if open_leads:
                return open_leads
        return []

    def _has_phone(self, item: dict[str, Any], number: str) -> bool:
        for field in item.get("custom_fields_values") or ():
            if isinstance(field, dict) and field.get("field_code") == "PHONE":
                for value in field.get("values") or ():
                    if isinstance(value, dict) and same_number(
                        self.numbers, value.get("value"), number
                    ):
                        return True
        return False

    def _answer(self, kind: str, item: dict[str, Any]) -> Answer:
        responsible = item.get("responsible_user_id")
        what = f"{_SINGULAR[kind]} {item.get('id')}"
        if not isinstance(responsible, int | str) or str(responsible) in ("", "0"):
            return Answer(detail=f"{what} has no responsible user")
        user_id = str(responsible)
        user = self.users.get(user_id) or CrmUser(user_id)
        who = f"user {user_id}" + (f" ({user.name})" if user.name else "")
        return Answer(
            user=user_id,
            name=user.name,
            email=user.email,
            active=user.active,
            detail=f"{what}, responsible {who}",
        )

    # HTTP.

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any] | None:
        """A GET's JSON body; None for 204 (amoCRM's "nothing found")."""
        reply = await self._authorised("GET", path, params)
        if reply.status == 204:
            return None
        if reply.status != 200:
            raise self._failure(reply)
        body = reply.json()
        if not isinstance(body, dict):
            raise self.http.error("unexpected JSON (expected an object)")
        return body

    async def _authorised(self, method: str, path: str, params: dict[str, str]) -> Reply:
        token = await self._token()
        reply = await self.http.request(method, path, params=params, headers=_bearer(token))
        if reply.status == 401 and self.keeper is not None:
            token = await self.keeper.renew(stale=token)
            reply = await self.http.request(method, path, params=params, headers=_bearer(token))
        return reply

    async def _token(self) -> str:
        if self.keeper is not None:
            return await self.keeper.token()
        return self.settings.token.get_secret_value()

    def _failure(self, reply: Reply) -> SourceError:
        status = reply.status
        if status == 401:
            if self.keeper is None:
                return self.http.error(
                    "401 unauthorized: the long-lived token expired or was revoked"
                )
            return self.http.error("401 unauthorized after a token refresh")
        if status == 402:
            return self.http.error("402 payment required: the account is not paid")
        if status == 403:
            self.limiter.pause(60, "403 forbidden")
            return self.http.error("403 forbidden: no rights, or the account or this IP is blocked")
        if status == 429:
            self.limiter.pause(reply.retry_after(1.0), "429 too many requests")
            return self.http.error("429 too many requests")
        return self.http.error(f"HTTP {status}")

    async def _refresh(self, refresh_token: str) -> Tokens:
        body = {
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret.get_secret_value(),
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "redirect_uri": self.settings.redirect_uri,
        }
        reply = await self.http.request(
            "POST", "oauth2/access_token", json_body=body, limited=False, timeout_s=10
        )
        if reply.status != 200:
            raise self.http.error(
                f"OAuth refresh refused (HTTP {reply.status}): authorise the integration again"
            )
        data = reply.json()
        try:
            return Tokens(
                str(data["access_token"]),
                str(data["refresh_token"]),
                time.time() + float(data["expires_in"]),
            )
        except (KeyError, TypeError, ValueError):
            raise self.http.error("OAuth refresh answer without tokens") from None

    async def _fetch_users(self) -> dict[str, CrmUser]:
        users: dict[str, CrmUser] = {}
        path: str = "api/v4/users"
        params: dict[str, str] = {"limit": "250"}
        for _ in range(100):
            page = await self._get(path, params)
            if page is None:
                break
            for item in _embedded(page, "users", self.http):
                rights = item.get("rights") if isinstance(item.get("rights"), dict) else {}
                users[str(item.get("id"))] = CrmUser(
                    id=str(item.get("id")),
                    name=str(item.get("name") or ""),
                    email=item.get("email") or None,
                    active=rights.get("is_active") is not False,
                )
            following = _next_link(page)
            if following is None:
                break
            path, params = following, {}
        return users


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _embedded(page: dict[str, Any], kind: str, http: HttpClient) -> list[dict[str, Any]]:
    embedded = page.get("_embedded")
    items = embedded.get(kind) if isinstance(embedded, dict) else None
    if not isinstance(items, list):
        raise http.error(f"unexpected JSON (no _embedded.{kind})")
    return [item for item in items if isinstance(item, dict)]


def _links_of(item: dict[str, Any], kind: str) -> list[Any]:
    embedded = item.get("_embedded")
    found = embedded.get(kind) if isinstance(embedded, dict) else None
    return found if isinstance(found, list) else []


def _next_link(page: dict[str, Any]) -> str | None:
    links = page.get("_links")
    following = links.get("next") if isinstance(links, dict) else None
    link = following.get("href") if isinstance(following, dict) else None
    return link if isinstance(link, str) and link else None


def _latest(items: list[dict[str, Any]]) -> dict[str, Any]:
    def updated(item: dict[str, Any]) -> float:
        value = item.get("updated_at")
        return float(value) if isinstance(value, int | float) else 0.0

    return max(items, key=updated)


def _warn_expiry(token: str) -> None:
    """Long-lived tokens are JWTs with an expiry (1 day to 5 years): say so before it hits."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        expires = float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return
    left_days = (expires - time.time()) / 86400
    when = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d")
    if left_days < 0:
        log.error("amocrm: the long-lived token expired on %s: make a new one", when)
    elif left_days < 14:
        log.warning("amocrm: the long-lived token expires on %s: make a new one", when)
