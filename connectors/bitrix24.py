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
* The first kind in ``entities`` with a hit wins (in Bitrix's own order within a kind).
* The user map (``user.get``, 50 a page, the other pages in one ``batch``) gives who is
  active (``ACTIVE`` false: fired, counts as no answer), names and ``UF_PHONE_INNER``.
* Errors: ``{"error", "error_description"}`` envelopes; 503 ``QUERY_LIMIT_EXCEEDED``
  pauses requests for a second; 429 ``OPERATION_TIME_LIMIT`` pauses that method until its
  reset; 401 ``expired_token`` refreshes the OAuth token once. ``result`` may be ``[]``
  where an object is expected (PHP's empty array).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

from pydantic import Field, field_validator, model_validator
from yarl import URL

from connectors._http_client import HttpClient, HttpSourceSettings, Reply, http_address
from connectors._oauth import TokenKeeper, Tokens
from connectors._phones import variants
from connectors._users import CrmUser, UserMap
from icm.managers import Managers
from icm.model import Answer
from icm.numbers import Numbers
from icm.secrets import SecretRef
from icm.sources import SourceContext, SourceError, SourceSettings

log = logging.getLogger(__name__)

Entity = Literal["contact", "company", "lead"]
_WEBHOOK = re.compile(r"^https?://[^/\s]+(/[^\s]*)?/rest/\d+/[A-Za-z0-9_]+/?$")
_CODE = re.compile(r"^[A-Za-z0-9_.]{1,64}$")
_SEARCH = "telephony.externalCall.searchCrmEntities"
_CLOSED_DAY = frozenset({"CLOSED", "PAUSED", "EXPIRED"})


class Bitrix24Settings(HttpSourceSettings):
    auth: Literal["webhook", "oauth"] = "webhook"
    # The inbound webhook URL (a secret: it holds the code).
    webhook: SecretRef = SecretRef(env="ICM_BITRIX24_WEBHOOK")
    # OAuth application: the portal's address, the application's id and secret.
    portal: str = ""
    client_id: str = ""
    client_secret: SecretRef = SecretRef(env="ICM_BITRIX24_CLIENT_SECRET")
    refresh_token: SecretRef = SecretRef()
    oauth_server: str = "https://oauth.bitrix.info"
    method: Literal["search", "duplicates"] = "search"
    entities: list[Entity] = ["contact", "company", "lead"]
    # Ring the responsible's Bitrix24 mobile (PERSONAL_MOBILE) with ring_mobiles, for a
    # manager who has no mobiles in [managers].
    use_mobile: bool = False
    # A responsible whose work day is not open (CLOSED, PAUSED, EXPIRED) counts as no
    # answer: the next source is asked.
    require_open_workday: bool = False
    rate_per_s: float = Field(default=2.0, gt=0, le=5.0)
    burst: int = Field(default=50, ge=1, le=250)

    @field_validator("portal", "oauth_server")
    @classmethod
    def _address(cls, value: str) -> str:
        return http_address(value, "https://example.bitrix24.ru") if value else value

    @field_validator("entities")
    @classmethod
    def _entities(cls, entities: list[str]) -> list[str]:
        if not entities or len(set(entities)) != len(entities):
            raise ValueError("expected each of contact, company, lead at most once")
        return entities

    @model_validator(mode="after")
    def _oauth_needs_app(self) -> Bitrix24Settings:
        if self.auth == "oauth" and not (self.portal and self.client_id):
            raise ValueError("auth = 'oauth' needs portal and client_id")
        return self

    def secrets(self) -> dict[str, str]:
        if self.auth == "webhook":
            return {"webhook": "the Bitrix24 inbound webhook URL"}
        needed = {"client_secret": "the Bitrix24 application's secret"}
        if self.refresh_token.named:
            needed["refresh_token"] = "the first Bitrix24 refresh token"
        return needed

    def check_secrets(self) -> dict[str, str]:
        webhook = self.webhook.get_secret_value()
        if self.auth == "webhook" and webhook and not _WEBHOOK.match(webhook):
            key = self.webhook.key("webhook")
            return {
                key: "not a Bitrix24 inbound webhook URL "
                "(expected https://<portal>/rest/<user id>/<code>/)"
            }
        return {}


class Bitrix24Source:
    name: ClassVar[str] = "bitrix24"
    Settings: ClassVar[type[SourceSettings]] = Bitrix24Settings
    remote: ClassVar[bool] = True

    def __init__(self, settings: SourceSettings, context: SourceContext) -> None:
        assert isinstance(settings, Bitrix24Settings)
        self.settings = settings
        self.numbers: Numbers = context.numbers
        self.managers: Managers = context.managers
        if settings.auth == "webhook":
            base = settings.webhook.get_secret_value()
        else:
            base = f"{settings.portal}/rest/"
        account = URL(base).host or "?"
        self.http = HttpClient.for_account(self.name, settings, context, base, account)
        self.limiter = self.http.limiter
        self.keeper: TokenKeeper | None = None
        self.oauth_http: HttpClient | None = None
        if settings.auth == "oauth":
            self.oauth_http = HttpClient(
                self.name, settings.oauth_server, timeout_s=10, max_body=100_000
            )
            self.keeper = TokenKeeper(
                self.name,
                context.store,
                self._refresh,
                initial_refresh=settings.refresh_token,
                key=f"oauth:{self.name}:{account}",
            )
        self.users = UserMap(
            self.name, settings.users_refresh_s, self._fetch_users, metrics=context.metrics
        )
        self._reset_at: dict[str, float] = {}  # method -> when its time budget resets

    async def start(self) -> None:
        await self.http.start()
        if self.oauth_http is not None:
            await self.oauth_http.start()
        if self.keeper is not None:
            self.keeper.start()
        self.users.start()

    async def close(self) -> None:
        await self.users.close()
        if self.keeper is not None:
            await self.keeper.close()
        if self.oauth_http is not None:
            await self.oauth_http.close()
        await self.http.close()

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait a little for the user map (``icm lookup``; the daemon never waits)."""
        await self.users.wait(timeout_s)

    async def lookup(self, number: str) -> Answer | None:
        forms = variants(self.numbers, number)
        if self.settings.method == "search":
            return await self._search(forms)
        return await self._duplicates(forms)

    # telephony.externalCall.searchCrmEntities, every form in one batch.

    async def _search(self, forms: list[str]) -> Answer | None:
        commands = {
            f"v{i}": f"{_SEARCH}?{urlencode({'PHONE_NUMBER': f})}" for i, f in enumerate(forms)
        }
        results = await self._batch(commands, _SEARCH)
        hits: dict[tuple[str, str], dict[str, Any]] = {}
        for key in commands:
            for hit in _list(results.get(key)):
                if isinstance(hit, dict):
                    ident = (str(hit.get("CRM_ENTITY_TYPE")), str(hit.get("CRM_ENTITY_ID")))
                    hits.setdefault(ident, hit)
        for kind in self.settings.entities:
            for (entity_type, entity_id), hit in hits.items():
                if entity_type.lower() == kind:
                    assigned = hit.get("ASSIGNED_BY")
                    return self._answer(
                        f"{kind} {entity_id}",
                        hit.get("ASSIGNED_BY_ID"),
                        assigned if isinstance(assigned, dict) else {},
                    )
        return None

    # crm.duplicate.findbycomm, chained to crm.<entity>.get in the same batch.

    async def _duplicates(self, forms: list[str]) -> Answer | None:
        find = urlencode([("type", "PHONE"), *(("values[]", f) for f in forms[:20])])
        commands = {"found": f"crm.duplicate.findbycomm?{find}"}
        for kind in self.settings.entities:
            commands[kind] = f"crm.{kind}.get?id=$result[found][{kind.upper()}][0]"
        results = await self._batch(commands, "crm.duplicate.findbycomm")
        for kind in self.settings.entities:
            entity = results.get(kind)
            if isinstance(entity, dict) and entity.get("ID"):
                return self._answer(f"{kind} {entity['ID']}", entity.get("ASSIGNED_BY_ID"), {})
        return None

    def _answer(self, what: str, assigned_id: object, assigned: dict[str, Any]) -> Answer:
        user_id = str(assigned_id or assigned.get("ID") or "")
        if not user_id or user_id == "0":
            return Answer(detail=f"{what} has no responsible user")
        user = self.users.get(user_id) or CrmUser(user_id)
        extension = _text(assigned.get("USER_PHONE_INNER")) or user.extension
        workday = _text(assigned.get("TIMEMAN_STATUS"))
        who = f"user {user_id}" + (f" ({user.name})" if user.name else "")
        detail = f"{what}, responsible {who}" + (f", work day {workday}" if workday else "")
        active = user.active
        if active and self.settings.require_open_workday and workday in _CLOSED_DAY:
            active = False
            detail += " (not at work)"
        mobiles: tuple[str, ...] = ()
        mobile = _text(assigned.get("PERSONAL_MOBILE")) or user.mobile
        if self.settings.use_mobile and mobile and self._without_mobiles(extension, user_id):
            parsed = self.numbers.normalise(mobile)
            if isinstance(parsed, str):
                mobiles = (parsed,)
        return Answer(
            extension=extension,
            user=user_id,
            name=user.name,
            email=user.email,
            active=active,
            mobiles=mobiles,
            detail=detail,
        )

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
            raise self.http.error("unexpected batch answer")
        results = result.get("result")
        results = results if isinstance(results, dict) else {}  # [] when all are empty
        errors = result.get("result_error")
        errors = errors if isinstance(errors, dict) else {}
        if errors and not any(k in results for k in commands):
            first = next(iter(errors.values()))
            code = _code(first.get("error") if isinstance(first, dict) else None)
            raise self._limited(code, 200, scope) or self.http.error(f"batch failed: {code}")
        return results

    async def _call(self, method: str, params: dict[str, Any], *, scope: str = "") -> Any:
        """A method's ``result``."""
        return (await self._envelope(method, params, scope=scope))["result"]

    async def _envelope(
        self, method: str, params: dict[str, Any], *, scope: str = ""
    ) -> dict[str, Any]:
        """A method's whole answer (``result``, ``total``, ``next``, ``time``)."""
        body = dict(params)
        token = ""
        if self.keeper is not None:
            token = await self.keeper.token()
            body["auth"] = token
        reply = await self.http.request(
            "POST", f"{method}.json", json_body=body, idempotent=True, scope=scope
        )
        if self.keeper is not None and _error_code(reply) == "expired_token":
            body["auth"] = await self.keeper.renew(stale=token)
            reply = await self.http.request(
                "POST", f"{method}.json", json_body=body, idempotent=True, scope=scope
            )
        data = reply.json() if reply.body else None
        if reply.status != 200 or not isinstance(data, dict) or "error" in data:
            raise self._failure(reply, data, scope or method)
        if "result" not in data:
            raise self.http.error("unexpected JSON (no result)")
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
            return self.http.error("unexpected JSON (expected an object)")
        return self.http.error(f"HTTP {status} {code}")

    def _limited(self, code: str, status: int, method: str) -> SourceError | None:
        """Bitrix24's two limits: pause what they block, say which."""
        if code == "QUERY_LIMIT_EXCEEDED" or (status == 503 and code == "?"):
            self.limiter.pause(1.0, "QUERY_LIMIT_EXCEEDED")
            return self.http.error(f"{status} QUERY_LIMIT_EXCEEDED: over the portal's request rate")
        if code == "OPERATION_TIME_LIMIT" or status == 429:
            wait = self._reset_at.get(method, 0.0) - time.time()
            self.limiter.pause(wait if 0 < wait < 900 else 60.0, "OPERATION_TIME_LIMIT", method)
            return self.http.error(f"{status} OPERATION_TIME_LIMIT: {method} is blocked for now")
        return None

    async def _refresh(self, refresh_token: str) -> Tokens:
        assert self.oauth_http is not None
        params = {
            "grant_type": "refresh_token",
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret.get_secret_value(),
            "refresh_token": refresh_token,
        }
        reply = await self.oauth_http.request("GET", "oauth/token/", params=params, limited=False)
        data = reply.json() if reply.body else None
        if reply.status != 200 or not isinstance(data, dict) or "access_token" not in data:
            raise self.oauth_http.error(
                f"OAuth refresh refused (HTTP {reply.status}): install the application again"
            )
        try:
            return Tokens(
                str(data["access_token"]),
                str(data["refresh_token"]),
                time.time() + float(data.get("expires_in", 3600)),
            )
        except (KeyError, TypeError, ValueError):
            raise self.oauth_http.error("OAuth refresh answer without tokens") from None

    async def _fetch_users(self) -> dict[str, CrmUser]:
        first = await self._envelope("user.get", {"start": 0})
        pages = [_list(first["result"])]
        total = first.get("total") if isinstance(first.get("total"), int) else 0
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
