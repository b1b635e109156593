"""amoCRM (and Kommo, the same API v4 under other domains): the responsible user of the
contact, company or lead whose phone is the caller's.

* Auth: a long-lived token (private integration), or OAuth2 whose rotating refresh token
  lives in the store (:mod:`connectors._oauth`).
* Lookup: ``GET /api/v4/contacts?query=<digits>&with=leads,companies`` (then companies
  and leads, as configured), newest first (``order[updated_at]=desc``). ``query`` is a
  full-text search over every field, with the last 10 digits, or the local digits for a
  caller of the configured area (``222-11-00`` holds no area code); each hit's ``PHONE``
  values are checked against the caller's number; 204 means nothing. The first entity
  kind in ``entities`` with a verified hit wins (the most recently updated one). Leads
  have no PHONE field: a lead is the caller's when it is linked to his contact or
  company, or when its own fields (name, text fields) hold his number.
* The responsible is ``responsible_user_id``. amoCRM holds no PBX extension: the user is
  mapped through ``[managers.<ext>] ids = { amocrm = ... }`` or his e-mail. The user map
  (``/api/v4/users``: name, e-mail, active) is refreshed in the background; an inactive
  user counts as no answer.
* Errors: 401 refreshes the OAuth token once and retries once; 429 pauses requests
  (``Retry-After``); 403 (the flood ban among others) pauses them for a minute; the client
  side limit (7 requests/s by default) keeps ICM under amoCRM's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from connectors._auth import Credentials, FixedToken
from connectors._crm import CrmSource, Record, once_each
from connectors._http_client import Reply, http_address
from connectors._mirror import Entry
from connectors._oauth import OAuthSettings, Tokens, tokens_in
from connectors._phones import in_text, same_number, search_digits, written_number
from connectors._users import CrmUser
from icm.model import Answer
from icm.secrets import SecretRef
from icm.sources import (
    SourceAuthError,
    SourceBadResponse,
    SourceError,
    SourceResponseError,
    SourceSettings,
)

Entity = Literal["contacts", "companies", "leads"]
_MIRROR_PAGES = 4000  # 1,000,000 records of a kind at 250 a page
_SINGULAR = {"contacts": "contact", "companies": "company", "leads": "lead"}


class AmoCrmSettings(OAuthSettings):
    """The ``[sources.amocrm]`` section: the account, its credentials and limits."""

    oauth_needs: ClassVar[tuple[str, ...]] = ("client_id", "redirect_uri")

    # The account's address: https://<subdomain>.amocrm.ru, .amocrm.com or .kommo.com.
    base_url: Annotated[str, http_address("https://example.amocrm.ru")]
    auth: Literal["token", "oauth"] = "token"
    token: SecretRef = Field(
        SecretRef(env="ICM_AMOCRM_TOKEN"), description="the amoCRM long-lived token"
    )
    redirect_uri: str = ""
    client_secret: SecretRef = Field(
        SecretRef(env="ICM_AMOCRM_CLIENT_SECRET"),
        description="the amoCRM integration's secret key",
    )
    entities: Annotated[list[Entity], once_each(Entity)] = ["contacts", "companies", "leads"]
    max_pages: int = Field(default=2, ge=1, le=20)
    # amoCRM allows 7 requests/s per integration: evenly spaced, never 8 in any second
    # (nor in a second and the margin: 7 requests take at least 1.15 s by default).
    rate_per_s: float = Field(default=7.0, gt=0, le=7.0)
    burst: int = Field(default=1, ge=1, le=7)
    per_second: ClassVar[bool] = True
    # Keep every contact's and company's phones in memory (loaded in the background,
    # then what changed every mirror_refresh_s): a burst of known callers asks nothing.
    mirror: bool = False
    mirror_refresh_s: float = Field(default=60.0, ge=5, le=86_400)


class AmoCrmSource(CrmSource[AmoCrmSettings]):
    """amoCRM as a source: contacts, companies and leads searched by the caller's number."""

    name: ClassVar[str] = "amocrm"
    Settings: ClassVar[type[SourceSettings]] = AmoCrmSettings
    mirrored: ClassVar[tuple[str, ...]] = ("contacts", "companies")

    def make_credentials(self) -> Credentials:
        if self.settings.oauth:
            return self.oauth(self._refresh, self.settings.refresh_token)
        return FixedToken(self.name, self.settings.token, "the long-lived token")

    async def search(self, number: str) -> AsyncIterator[list[Record]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for kind in self.settings.entities:
            if kind == "leads":
                items = await self._leads(number, found)
            else:
                if kind not in found:  # searched already for the leads
                    found[kind] = await self._search(kind, number)
                items = found[kind]
            yield [_record(kind, item) for item in items]

    def answer(self, record: Record) -> Answer:
        responsible = record.data.get("responsible_user_id")
        what = f"{_SINGULAR[record.kind]} {record.id}"
        if not isinstance(responsible, int | str) or str(responsible) in ("", "0"):
            return self.nobody(what)
        return self.responsible(what, str(responsible))

    async def fetch_users(self) -> dict[str, CrmUser]:
        users: dict[str, CrmUser] = {}
        path: str = "api/v4/users"
        params: dict[str, str] = {"limit": "250"}
        for _ in range(100):
            page = await self._get(path, params)
            if page is None:
                break
            for item in self._embedded(page, "users"):
                rights = item.get("rights")
                rights = rights if isinstance(rights, dict) else {}
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

    async def changed(self, kind: str, since: float | None) -> list[Entry]:
        """Contacts or companies updated since ``since``, oldest first, every page."""
        params = {"limit": "250", "order[updated_at]": "asc"}
        if since is not None:
            params["filter[updated_at][from]"] = str(int(since))
        path: str = f"api/v4/{kind}"
        entries: list[Entry] = []
        for _ in range(_MIRROR_PAGES):
            page = await self._get(path, params)
            if page is None:
                break
            for item in self._embedded(page, kind):
                record = _record(kind, item)
                numbers = {
                    written_number(self.numbers, value.get("value"))
                    for field in item.get("custom_fields_values") or ()
                    if isinstance(field, dict) and field.get("field_code") == "PHONE"
                    for value in field.get("values") or ()
                    if isinstance(value, dict)
                }
                kept = {"responsible_user_id": item.get("responsible_user_id")}
                found = tuple(sorted(n for n in numbers if n))
                entries.append(Entry(kind, record.id, record.updated, found, kept))
            following = _next_link(page)
            if following is None:
                break
            path, params = following, {}
        return entries

    # The CRM's entities.

    async def _search(self, kind: str, number: str) -> list[dict[str, Any]]:
        """Entities of ``kind`` holding ``number`` (verified), newest first, following
        pages."""
        params = {
            "query": search_digits(self.numbers, number),
            "limit": "50",
            "order[updated_at]": "desc",
        }
        if kind != "leads":
            params["with"] = "leads,companies" if kind == "contacts" else "leads"
        path: str = f"api/v4/{kind}"
        verified: list[dict[str, Any]] = []
        for _ in range(self.settings.max_pages):
            page = await self._get(path, params)
            if page is None:
                break
            items = self._embedded(page, kind)
            verified += [item for item in items if self._holds(kind, item, number)]
            following = _next_link(page)
            if verified or following is None:
                break
            path, params = following, {}
        return verified

    async def _leads(
        self, number: str, found: dict[str, list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """The caller's open leads: those linked to his verified contacts (or else
        companies), and those whose own fields hold his number."""
        leads = await self._linked_leads(number, found)
        seen = {str(lead.get("id")) for lead in leads}
        own = await self._search("leads", number)
        leads += [lead for lead in own if str(lead.get("id")) not in seen]
        return [lead for lead in leads if not lead.get("closed_at")]

    async def _linked_leads(
        self, number: str, found: dict[str, list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
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
            leads = self._embedded(page, "leads") if page is not None else []
            open_leads = [lead for lead in leads if not lead.get("closed_at")]
            if open_leads:
                return open_leads
        return []

    def _holds(self, kind: str, item: dict[str, Any], number: str) -> bool:
        """Whether ``item`` is the caller's: a PHONE value is his number; for a lead
        (which has no PHONE field), its name or any of its fields holds it."""
        for field in item.get("custom_fields_values") or ():
            if not isinstance(field, dict):
                continue
            phone = field.get("field_code") == "PHONE"
            if not (phone or kind == "leads"):
                continue
            for value in field.get("values") or ():
                written = value.get("value") if isinstance(value, dict) else None
                if same_number(self.numbers, written, number) or (
                    not phone and in_text(self.numbers, written, number)
                ):
                    return True
        return kind == "leads" and in_text(self.numbers, item.get("name"), number)

    # HTTP.

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any] | None:
        """A GET's JSON body; None for 204 (amoCRM's "nothing found")."""
        reply = await self.send("GET", path, params=params)
        if reply.status == 204:
            return None
        if reply.status != 200:
            raise self._failure(reply)
        body = reply.json()
        if not isinstance(body, dict):
            raise self.http.error(SourceBadResponse, "unexpected JSON (expected an object)")
        return body

    def _embedded(self, page: dict[str, Any], kind: str) -> list[dict[str, Any]]:
        embedded = page.get("_embedded")
        items = embedded.get(kind) if isinstance(embedded, dict) else None
        if not isinstance(items, list):
            raise self.http.error(SourceBadResponse, f"unexpected JSON (no _embedded.{kind})")
        return [item for item in items if isinstance(item, dict)]

    def _failure(self, reply: Reply) -> SourceError:
        status = reply.status
        if status == 401:
            if not self.credentials.renewable:
                expired = "401 unauthorized: the long-lived token expired or was revoked"
                return self.http.error(SourceAuthError, expired, status)
            return self.http.error(SourceAuthError, "401 unauthorized after a token refresh", 401)
        if status == 402:
            unpaid = "402 payment required: the account is not paid"
            return self.http.error(SourceResponseError, unpaid, status)
        if status == 403:
            self.pause(60, "403 forbidden")
            blocked = "403 forbidden: no rights, or the account or this IP is blocked"
            return self.http.error(SourceAuthError, blocked, status)
        if status == 429:
            return self.too_many(reply)
        return self.http.error(SourceResponseError, f"HTTP {status}", status)

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
        return tokens_in(reply, self.http, "authorise the integration again")


def _record(kind: str, item: dict[str, Any]) -> Record:
    updated = item.get("updated_at")
    when = float(updated) if isinstance(updated, int | float) else 0.0
    return Record(kind, str(item.get("id")), item, when)


def _links_of(item: dict[str, Any], kind: str) -> list[Any]:
    embedded = item.get("_embedded")
    found = embedded.get(kind) if isinstance(embedded, dict) else None
    return found if isinstance(found, list) else []


def _next_link(page: dict[str, Any]) -> str | None:
    links = page.get("_links")
    following = links.get("next") if isinstance(links, dict) else None
    link = following.get("href") if isinstance(following, dict) else None
    return link if isinstance(link, str) and link else None
