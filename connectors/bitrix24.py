"""Bitrix24: the responsible (``ASSIGNED_BY``) of the contact, company or lead whose phone
is the caller's.

* Auth: an inbound webhook (``https://<portal>/rest/<user id>/<code>/``: the whole URL is
  the secret and is never logged), or an OAuth application whose rotating refresh token
  lives in the store.
* Lookup (``method = "search"``, scope telephony): ``telephony.externalCall.searchCrmEntities``
  for each form of the number (Bitrix matches the digits as stored, ``8…`` and ``+7…``
  are different), all in one ``batch`` request. Each hit carries its responsible's inner
  phone (``USER_PHONE_INNER``, his PBX extension), mobile and work-day status.
  ``method = "duplicates"`` (scope crm): ``crm.duplicate.findbycomm`` with every form at
  once, chained in the same ``batch`` to ``crm.<entity>.get`` for the responsible.
* The first kind in ``entities`` with a hit wins; among several records of that kind, the
  most recently modified (``DATE_MODIFY``, read with ``crm.<entity>.get`` in one
  ``batch``), whatever order the portal returned them in. Numbers of the configured area
  are also asked for in their local form (``2221100``).
* The user map (``user.get``, 50 a page, the other pages in one ``batch``) gives who is
  active (``ACTIVE`` false: fired, counts as no answer), names and ``UF_PHONE_INNER``.
* Errors: ``{"error", "error_description"}`` envelopes; 503 ``QUERY_LIMIT_EXCEEDED``
  pauses requests for a second; 429 ``OPERATION_TIME_LIMIT`` pauses that method until its
  reset; 401 ``expired_token`` refreshes the OAuth token once. ``result`` may be ``[]``
  where an object is expected (PHP's empty array).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlencode

from pydantic import Field
from yarl import URL

from connectors._auth import Credentials
from connectors._crm import CrmSource, Record, iso_time, once_each
from connectors._http_client import HttpClient, Reply, http_address
from connectors._oauth import OAuthSettings, Tokens, tokens_in
from connectors._phones import variants
from connectors._users import CrmUser
from icm.model import Answer
from icm.secrets import SecretRef
from icm.sources import (
    SourceAuthError,
    SourceBadResponse,
    SourceContext,
    SourceError,
    SourceRateLimited,
    SourceResponseError,
    SourceSettings,
)

Entity = Literal["contact", "company", "lead"]
_WEBHOOK = re.compile(r"^https?://[^/\s]+(/[^\s]*)?/rest/[0-9]+/[A-Za-z0-9_]+/?$")
_CODE = re.compile(r"^[A-Za-z0-9_.]{1,64}$")
_SEARCH = "telephony.externalCall.searchCrmEntities"
_CLOSED_DAY = frozenset({"CLOSED", "PAUSED", "EXPIRED"})
_DATED = 5  # records of one kind compared by DATE_MODIFY (one batch command each)
log = logging.getLogger(__name__)


class Bitrix24Settings(OAuthSettings):
    """The ``[sources.bitrix24]`` section: the portal, its credentials and limits."""

    oauth_needs: ClassVar[tuple[str, ...]] = ("portal", "client_id")

    auth: Literal["webhook", "oauth"] = "webhook"
    # The inbound webhook URL (a secret: it holds the code).
    webhook: SecretRef = Field(
        SecretRef(env="ICM_BITRIX24_WEBHOOK"), description="the Bitrix24 inbound webhook URL"
    )
    # OAuth application: the portal's address, the application's id and secret.
    portal: Annotated[str, http_address("https://example.bitrix24.ru")] = ""
    client_secret: SecretRef = Field(
        SecretRef(env="ICM_BITRIX24_CLIENT_SECRET"),
        description="the Bitrix24 application's secret",
    )
    oauth_server: Annotated[str, http_address("https://example.bitrix24.ru")] = (
        "https://oauth.bitrix.info"
    )
    method: Literal["search", "duplicates"] = "search"
    entities: Annotated[list[Entity], once_each(Entity)] = ["contact", "company", "lead"]
    # Ring the responsible's Bitrix24 mobile (PERSONAL_MOBILE) with ring_mobiles, for a
    # manager who has no mobiles in [managers].
    use_mobile: bool = False
    # A responsible whose work day is not open (CLOSED, PAUSED, EXPIRED) is away: the
    # hours rule gives the call to his deputy, else OFFHOURS.
    require_open_workday: bool = False
    rate_per_s: float = Field(default=2.0, gt=0, le=5.0)
    burst: int = Field(default=50, ge=1, le=250)

    def check_secrets(self) -> dict[str, str]:
        webhook = self.webhook.get_secret_value()
        if self.auth == "webhook" and webhook and not _WEBHOOK.match(webhook):
            key = self.webhook.key("webhook")
            return {
                key: "not a Bitrix24 inbound webhook URL "
                "(expected https://<portal>/rest/<user id>/<code>/)"
            }
        return {}


class Bitrix24Source(CrmSource[Bitrix24Settings]):
    """Bitrix24 as a source: CRM objects found by phone, with their responsible's inner
    phone."""

    name: ClassVar[str] = "bitrix24"
    Settings: ClassVar[type[SourceSettings]] = Bitrix24Settings

    def __init__(self, settings: SourceSettings, context: SourceContext) -> None:
        self.oauth_http: HttpClient | None = None
        super().__init__(settings, context)
        self.managers = context.managers
        self._reset_at: dict[str, float] = {}  # method -> when its time budget resets

    def address(self) -> tuple[str, str]:
        if self.settings.auth == "webhook":
            base = self.settings.webhook.get_secret_value()
        else:
            base = f"{self.settings.portal}/rest/"
        return base, URL(base).host or "?"

    def make_credentials(self) -> Credentials:
        if self.settings.auth == "webhook":
            return super().make_credentials()  # the webhook's URL holds its code
        self.oauth_http = self.client(self.settings.oauth_server, timeout_s=10, max_body=100_000)
        return self.oauth(self._refresh, self.settings.refresh_token)

    def sign(self, token: str, request: dict[str, Any]) -> dict[str, Any]:
        """An OAuth token travels in the body (``auth``)."""
        if not token:
            return request
        return {**request, "json_body": {**request["json_body"], "auth": token}}

    def expired(self, reply: Reply) -> bool:
        return _error_code(reply) == "expired_token"

    async def search(self, number: str) -> AsyncIterator[list[Record]]:
        forms = variants(self.numbers, number)
        if self.settings.method == "search":
            found = await self._search(forms)
        else:
            found = await self._duplicates(forms)
        for kind in self.settings.entities:
            records = [record for record in found if record.kind == kind]
            if len(records) > 1 and not any(record.updated for record in records):
                records = await self._dated(kind, records)
            yield records

    def answer(self, record: Record) -> Answer:
        assigned = record.data.get("ASSIGNED_BY")
        assigned = assigned if isinstance(assigned, dict) else {}
        what = f"{record.kind} {record.id}"
        user_id = str(record.data.get("ASSIGNED_BY_ID") or assigned.get("ID") or "")
        if not user_id or user_id == "0":
            return self.nobody(what)
        answer = self.responsible(what, user_id)
        if not answer.responsible:
            return answer
        user = self.users.get(user_id) or CrmUser(user_id)
        extension = _text(assigned.get("USER_PHONE_INNER")) or user.extension
        workday = _text(assigned.get("TIMEMAN_STATUS"))
        detail = answer.detail + (f", work day {workday}" if workday else "")
        # A closed work day is one more "away" signal of the hours rule (deputies, else
        # OFFHOURS), not a missing answer: the client is still this manager's.
        away = ""
        if self.settings.require_open_workday and workday in _CLOSED_DAY:
            away = f"Bitrix24 work day {workday}"
            detail += " (not at work)"
        mobiles: tuple[str, ...] = ()
        mobile = _text(assigned.get("PERSONAL_MOBILE")) or user.mobile
        if self.settings.use_mobile and mobile and self._without_mobiles(extension, user_id):
            parsed = self.numbers.normalise(mobile)
            if isinstance(parsed, str):
                mobiles = (parsed,)
        return dataclasses.replace(
            answer, extension=extension, mobiles=mobiles, detail=detail, away=away
        )

    # telephony.externalCall.searchCrmEntities, every form in one batch.

    async def _search(self, forms: list[str]) -> list[Record]:
        commands = {
            f"v{i}": f"{_SEARCH}?{urlencode({'PHONE_NUMBER': f})}" for i, f in enumerate(forms)
        }
        results = await self._batch(commands, _SEARCH)
        hits: dict[tuple[str, str], Record] = {}
        for key in commands:
            for hit in _list(results.get(key)):
                if isinstance(hit, dict):
                    kind = str(hit.get("CRM_ENTITY_TYPE")).lower()
                    ident = str(hit.get("CRM_ENTITY_ID"))
                    hits.setdefault((kind, ident), Record(kind, ident, hit))
        return list(hits.values())

    async def _dated(self, kind: str, records: list[Record]) -> list[Record]:
        """``records`` with their ``DATE_MODIFY`` (``crm.<kind>.get``, in one batch); as
        they are if the portal cannot say."""
        commands = {
            f"d{i}": f"crm.{kind}.get?{urlencode({'id': r.id})}"
            for i, r in enumerate(records[:_DATED])
        }
        try:
            results = await self._batch(commands, f"crm.{kind}.get")
        except SourceError as exc:
            log.info("%s: which %s is newest is unknown (%s)", self.name, kind, exc.reason)
            return records
        dated = [
            dataclasses.replace(r, updated=iso_time(_dict(results.get(key)).get("DATE_MODIFY")))
            for key, r in zip(commands, records, strict=False)
        ]
        return dated + records[_DATED:]

    # crm.duplicate.findbycomm, chained to crm.<entity>.get in the same batch.

    async def _duplicates(self, forms: list[str]) -> list[Record]:
        find = urlencode([("type", "PHONE"), *(("values[]", f) for f in forms[:20])])
        commands = {"found": f"crm.duplicate.findbycomm?{find}"}
        for kind in self.settings.entities:
            for i in range(_DATED):
                commands[f"{kind}{i}"] = f"crm.{kind}.get?id=$result[found][{kind.upper()}][{i}]"
        results = await self._batch(commands, "crm.duplicate.findbycomm")
        found = []
        for kind in self.settings.entities:
            for i in range(_DATED):
                entity = results.get(f"{kind}{i}")
                if isinstance(entity, dict) and entity.get("ID"):
                    when = iso_time(entity.get("DATE_MODIFY"))
                    found.append(Record(kind, str(entity["ID"]), entity, when))
        return found

    def _without_mobiles(self, extension: str | None, user_id: str) -> bool:
        manager = self.managers.get(extension) if extension else None
        manager = manager or self.managers.by_user(self.name, user_id)
        return manager is None or not manager.mobiles

    # The REST envelope.

    async def _batch(self, commands: dict[str, str], scope: str) -> dict[str, Any]:
        """Each command's result by key (errored commands left out); :class:`SourceError`
        if every command failed."""
        result = await self._call("batch", {"halt": 0, "cmd": commands}, scope=scope)
        if not isinstance(result, dict):
            raise self.http.error(SourceBadResponse, "unexpected batch answer")
        results = result.get("result")
        results = results if isinstance(results, dict) else {}  # [] when all are empty
        errors = result.get("result_error")
        errors = errors if isinstance(errors, dict) else {}
        if errors and not any(k in results for k in commands):
            first = next(iter(errors.values()))
            code = _code(first.get("error") if isinstance(first, dict) else None)
            failed = self.http.error(SourceResponseError, f"batch failed: {code}", 200)
            raise self._limited(code, 200, scope) or failed
        return results

    async def _call(self, method: str, params: dict[str, Any], *, scope: str = "") -> Any:
        """A method's ``result``."""
        return (await self._envelope(method, params, scope=scope))["result"]

    async def _envelope(
        self, method: str, params: dict[str, Any], *, scope: str = ""
    ) -> dict[str, Any]:
        """A method's whole answer (``result``, ``total``, ``next``, ``time``)."""
        reply = await self.send(
            "POST", f"{method}.json", json_body=params, idempotent=True, scope=scope
        )
        data = reply.json() if reply.body else None
        if reply.status != 200 or not isinstance(data, dict) or "error" in data:
            raise self._failure(reply, data, scope or method)
        if "result" not in data:
            raise self.http.error(SourceBadResponse, "unexpected JSON (no result)")
        self._note_time(scope or method, data.get("time"))
        return data

    def _note_time(self, method: str, timing: object) -> None:
        if isinstance(timing, dict) and isinstance(timing.get("operating_reset_at"), int | float):
            self._reset_at[method] = float(timing["operating_reset_at"])

    def _failure(self, reply: Reply, data: Any, method: str) -> SourceError:
        code = _code(data.get("error") if isinstance(data, dict) else None)
        status = reply.status
        limited = self._limited(code, status, method)
        if limited is not None:
            return limited
        if status == 200 and not isinstance(data, dict):
            return self.http.error(SourceBadResponse, "unexpected JSON (expected an object)")
        kind = SourceAuthError if status in (401, 403) else SourceResponseError
        return self.http.error(kind, f"HTTP {status} {code}", status)

    def _limited(self, code: str, status: int, method: str) -> SourceRateLimited | None:
        """Bitrix24's two limits: pause what they block, say which."""
        if code == "QUERY_LIMIT_EXCEEDED" or (status == 503 and code == "?"):
            self.pause(1.0, "QUERY_LIMIT_EXCEEDED")
            over = f"{status} QUERY_LIMIT_EXCEEDED: over the portal's request rate"
            return self.http.error(SourceRateLimited, over, status)
        if code == "OPERATION_TIME_LIMIT" or status == 429:
            wait = self._reset_at.get(method, 0.0) - time.time()
            self.pause(wait if 0 < wait < 900 else 60.0, "OPERATION_TIME_LIMIT", method)
            blocked = f"{status} OPERATION_TIME_LIMIT: {method} is blocked for now"
            return self.http.error(SourceRateLimited, blocked, status)
        return None

    async def _refresh(self, refresh_token: str) -> Tokens:
        assert self.oauth_http is not None  # made with the OAuth credentials
        params = {
            "grant_type": "refresh_token",
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret.get_secret_value(),
            "refresh_token": refresh_token,
        }
        reply = await self.oauth_http.request("GET", "oauth/token/", params=params, limited=False)
        return tokens_in(reply, self.oauth_http, "install the application again", 3600)

    async def fetch_users(self) -> dict[str, CrmUser]:
        first = await self._envelope("user.get", {"start": 0})
        pages = [_list(first["result"])]
        total = first.get("total")
        total = total if isinstance(total, int) else 0
        starts = list(range(50, min(total, 50 * 500), 50))
        for chunk in range(0, len(starts), 50):
            commands = {
                f"p{s}": f"user.get?{urlencode({'start': s})}" for s in starts[chunk : chunk + 50]
            }
            results = await self._batch(commands, "user.get")
            pages += [_list(results.get(key)) for key in commands]
        users: dict[str, CrmUser] = {}
        for page in pages:
            for item in page:
                if not isinstance(item, dict) or not item.get("ID"):
                    continue
                name = " ".join(
                    str(item.get(k) or "").strip() for k in ("NAME", "LAST_NAME")
                ).strip()
                users[str(item["ID"])] = CrmUser(
                    id=str(item["ID"]),
                    name=name,
                    email=_text(item.get("EMAIL")),
                    active=item.get("ACTIVE") not in (False, "N", "false"),
                    extension=_text(item.get("UF_PHONE_INNER")),
                    mobile=_text(item.get("PERSONAL_MOBILE")),
                )
        return users


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: object) -> str | None:
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _code(value: object) -> str:
    return value if isinstance(value, str) and _CODE.match(value) else "?"


def _error_code(reply: Reply) -> str | None:
    if reply.status != 401:
        return None
    try:
        data = reply.json()
    except SourceError:
        return None
    return data.get("error") if isinstance(data, dict) else None
