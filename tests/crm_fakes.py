"""Fake amoCRM, Bitrix24 and Megaplan servers on 127.0.0.1 for the tests and the bench.

Each answers as the real API does, from the vendors' documentation: paths and methods,
query encoding, auth headers, envelopes, pagination and errors. Each records every
request and can be told to misbehave (``fault``): hang, drop the connection, send
garbage, a truncated or a huge body, or any scripted status.

A fake running in another process (the bench) is steered over HTTP: ``POST /_fake/delay``
(``{"s": 0.05}``) and ``GET /_fake/requests?since=N`` (each request's path and its
``perf_counter`` start and end, comparable across processes on one machine, and
``throttled``: how many requests its own limit refused).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def digits(text: object) -> str:
    return re.sub(r"\D", "", str(text))


@dataclass
class Recorded:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes
    started: float
    ended: float = 0.0


@dataclass
class Fault:
    kind: str  # hang, drop, garbage, truncated, huge, huge-chunked, status
    count: int = 1
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    path: str = ""  # only requests whose path contains this


class FakeServer:
    """The plumbing every fake shares: a real server, a request log, faults, a delay."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.delay = 0.0
        self.faults: deque[Fault] = deque()
        self.throttled = 0  # requests refused by the CRM's own rate limit
        self.app = web.Application(middlewares=[self._middleware], client_max_size=10 * 2**20)
        self.app.router.add_post("/_fake/delay", self._set_delay)
        self.app.router.add_get("/_fake/requests", self._requests)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def fault(self, kind: str, count: int = 1, **kwargs: Any) -> None:
        self.faults.append(Fault(kind, count, **kwargs))

    def calls(self, fragment: str = "") -> list[Recorded]:
        return [r for r in self.requests if fragment in r.path]

    async def _set_delay(self, request: web.Request) -> web.StreamResponse:
        self.delay = float((await request.json())["s"])
        return _json({"delay": self.delay})

    async def _requests(self, request: web.Request) -> web.StreamResponse:
        since = int(request.query.get("since", "0"))
        done = [r for r in self.requests[since:]]
        return _json(
            {
                "count": len(self.requests),
                "throttled": self.throttled,
                "requests": [[r.path, r.started, r.ended] for r in done],
            }
        )

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):
            return await handler(request)
        record = Recorded(
            request.method,
            request.path,
            request.rel_url.raw_query_string,
            dict(request.headers),
            await request.read(),
            time.perf_counter(),
        )
        self.requests.append(record)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            fault = self._take_fault(request.path)
            if fault is not None:
                return await self._misbehave(request, fault)
            return await handler(request)
        finally:
            record.ended = time.perf_counter()

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.path in path:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def _misbehave(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.kind == "hang":
            await asyncio.sleep(3600)
        if fault.kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if fault.kind == "garbage":
            return web.Response(
                status=200,
                body=b"<html>502 Bad Gateway</html>\x00\xff",
                content_type="application/json",
            )
        if fault.kind in ("truncated", "huge", "huge-chunked"):
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            size = 50 * 2**20 if fault.kind.startswith("huge") else 10_000
            if fault.kind != "huge-chunked":
                response.content_length = size
            await response.prepare(request)
            try:
                if fault.kind == "truncated":
                    await response.write(b'{"_embedded": {"contacts": [' + b" " * 200)
                    assert request.transport is not None
                    request.transport.abort()
                    raise asyncio.CancelledError
                chunk = b"[" + b"0," * (2**20 // 2 - 1) + b"0]"
                for _ in range(size // len(chunk)):
                    await response.write(chunk)
            except (ConnectionResetError, ConnectionError):
                pass
            return response
        body = fault.body
        text = body if isinstance(body, str | bytes) else json.dumps(body)
        return web.Response(
            status=fault.status,
            body=text.encode() if isinstance(text, str) else text,
            headers={"Content-Type": "application/json", **fault.headers},
        )


def _json(data: Any, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data, ensure_ascii=False), content_type=content_type
    )


# amoCRM ---------------------------------------------------------------------------------


def amo_phone(*values: str) -> list[dict[str, Any]]:
    return [
        {
            "field_id": 300001,
            "field_name": "Телефон",
            "field_code": "PHONE",
            "field_type": "multitext",
            "values": [{"value": v, "enum_id": 1, "enum_code": "WORK"} for v in values],
        }
    ]


class FakeAmoCrm(FakeServer):
    """amoCRM API v4.

    :param rate_per_s: over it, 429; after ``ban_after`` 429s in a row, 403 for everyone
        (the flood ban). Requests are counted as they reach the CRM, in any one second
        (CRM-NOTES: "7 requests/s per integration; over it: 429").
    :param jitter_s: each request reaches the CRM up to this much later than it was sent
        (the network; issue 14.6 saw the 8th request arrive 966 ms after the 1st).
    """

    CLIENT_ID = "4f1c3b2a-0000-4000-8000-client-id"
    CLIENT_SECRET = "amo-client-secret-Zx81"
    REDIRECT = "https://icm.example/oauth"

    def __init__(
        self, *, rate_per_s: float = 7, ban_after: int = 20, jitter_s: float = 0.0
    ) -> None:
        super().__init__()
        self.jitter_s = jitter_s
        self.arrivals: list[float] = []  # when each request was counted (monotonic)
        self._rng = random.Random(14)
        self.contacts: list[dict[str, Any]] = []
        self.companies: list[dict[str, Any]] = []
        self.leads: list[dict[str, Any]] = []
        self.users: list[dict[str, Any]] = []
        self.long_lived = "amo-long-lived-token-7Qp3"
        self.access: set[str] = {self.long_lived}
        self.refresh_tokens: set[str] = set()
        self.refreshes = 0
        self.refresh_delay = 0.0
        self.rate_per_s = rate_per_s
        self.ban_after = ban_after
        self.banned = False
        self._recent: deque[float] = deque()
        self._throttled_in_a_row = 0
        for kind in ("contacts", "companies", "leads"):
            self.app.router.add_get(f"/api/v4/{kind}", self._list_handler(kind))
        self.app.router.add_get("/api/v4/users", self._users)
        self.app.router.add_post("/oauth2/access_token", self._oauth)

    def add_contact(
        self,
        ident: int,
        phones: list[str],
        responsible: int,
        *,
        name: str = "Client",
        leads: list[int] | None = None,
        updated_at: int = 1_700_000_000,
        **extra: Any,
    ) -> None:
        self.contacts.append(
            {
                "id": ident,
                "name": name,
                "responsible_user_id": responsible,
                "updated_at": updated_at,
                "custom_fields_values": amo_phone(*phones) if phones else None,
                "_lead_ids": leads or [],
                **extra,
            }
        )

    def add_company(self, ident: int, phones: list[str], responsible: int, **extra: Any) -> None:
        self.companies.append(
            {
                "id": ident,
                "name": f"Company {ident}",
                "responsible_user_id": responsible,
                "updated_at": 1_700_000_000,
                "custom_fields_values": amo_phone(*phones),
                "_lead_ids": [],
                **extra,
            }
        )

    def add_lead(
        self,
        ident: int,
        responsible: int,
        *,
        name: str = "Lead",
        text: str = "",
        updated_at: int = 1_700_000_000,
        closed_at: int | None = None,
    ) -> None:
        """A lead: no PHONE field (amoCRM leads have none); the caller's number, if any,
        is written in its name or in a text field, as people do."""
        fields = [
            {
                "field_id": 300100,
                "field_name": "Комментарий",
                "field_code": None,
                "field_type": "text",
                "values": [{"value": text}],
            }
        ]
        self.leads.append(
            {
                "id": ident,
                "name": name,
                "responsible_user_id": responsible,
                "updated_at": updated_at,
                "closed_at": closed_at,
                "custom_fields_values": fields if text else None,
            }
        )

    def add_user(self, ident: int, name: str, email: str, active: bool = True) -> None:
        self.users.append(
            {
                "id": ident,
                "name": name,
                "email": email,
                "lang": "ru",
                "rights": {"is_active": active, "is_admin": False, "leads": {"view": "A"}},
            }
        )

    def new_refresh_token(self) -> str:
        token = "amo-refresh-" + secrets.token_hex(8)
        self.refresh_tokens.add(token)
        return token

    def expire_access(self) -> None:
        self.access = {self.long_lived}

    def _unauthorized(self) -> web.Response:
        return _json(
            {
                "title": "Unauthorized",
                "type": "https://httpstatus.es/401",
                "status": 401,
                "detail": "Неверный логин или пароль",
            },
            401,
            "application/problem+json",
        )

    def _gate(self, request: web.Request) -> web.Response | None:
        """The flood ban, the rate limit and the token, as amoCRM checks them."""
        if self.banned:
            return _json({"title": "Forbidden", "status": 403, "detail": "IP blocked"}, 403)
        now = time.monotonic()
        self.arrivals.append(now)
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - 1:
            self._recent.popleft()
        if len(self._recent) > self.rate_per_s:
            self.throttled += 1
            self._throttled_in_a_row += 1
            if self._throttled_in_a_row >= self.ban_after:
                self.banned = True
            return _json({"title": "Too Many Requests", "status": 429}, 429)
        self._throttled_in_a_row = 0
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.access:
            return self._unauthorized()
        return None

    def _list_handler(self, kind: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            await self._network()
            refused = self._gate(request)
            if refused is not None:
                return refused
            items = getattr(self, kind)
            query = request.query.get("query", "")
            ids = [v for k, v in request.query.items() if k.startswith("filter[id]")]
            if ids:
                items = [i for i in items if str(i["id"]) in ids]
            if query:
                items = [i for i in items if _amo_matches(i, query)]
            # filter[updated_at][from]: records updated at that Unix time or later.
            since = request.query.get("filter[updated_at][from]")
            if since is not None:
                items = [i for i in items if i.get("updated_at", 0) >= int(since)]
            # order[updated_at]=desc|asc, as the list methods document (entities' "order"
            # parameter: created_at, updated_at, id).
            order = request.query.get("order[updated_at]")
            if order in ("asc", "desc"):
                items = sorted(items, key=lambda i: i.get("updated_at", 0), reverse=order == "desc")
            limit = min(int(request.query.get("limit", "50")), 250)
            page = int(request.query.get("page", "1"))
            chunk = items[(page - 1) * limit : page * limit]
            if not chunk:
                return web.Response(status=204)
            with_ = request.query.get("with", "").split(",")
            rendered = [self._render(i, with_) for i in chunk]
            links = {"self": {"href": self._href(request, page)}}
            if page * limit < len(items):
                links["next"] = {"href": self._href(request, page + 1)}
            return _json(
                {"_page": page, "_links": links, "_embedded": {kind: rendered}},
                content_type="application/hal+json",
            )

        return handle

    def _href(self, request: web.Request, page: int) -> str:
        query = {k: v for k, v in request.query.items() if k != "page"} | {"page": str(page)}
        return str(request.url.with_query(query))

    def _render(self, item: dict[str, Any], with_: list[str]) -> dict[str, Any]:
        out = {k: v for k, v in item.items() if not k.startswith("_")}
        embedded: dict[str, Any] = {}
        if "leads" in with_:
            embedded["leads"] = [{"id": i, "_links": {}} for i in item.get("_lead_ids", [])]
        if "companies" in with_:
            embedded["companies"] = []
        out["_embedded"] = embedded
        out["_links"] = {"self": {"href": f"{self.url}/api/v4/x/{item['id']}"}}
        return out

    async def _network(self) -> None:
        if self.jitter_s:
            await asyncio.sleep(self._rng.uniform(0, self.jitter_s))

    async def _users(self, request: web.Request) -> web.StreamResponse:
        await self._network()
        refused = self._gate(request)
        if refused is not None:
            return refused
        limit = min(int(request.query.get("limit", "50")), 250)
        page = int(request.query.get("page", "1"))
        chunk = self.users[(page - 1) * limit : page * limit]
        links = {"self": {"href": self._href(request, page)}}
        if page * limit < len(self.users):
            links["next"] = {"href": self._href(request, page + 1)}
        return _json({"_page": page, "_links": links, "_embedded": {"users": chunk}})

    async def _oauth(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if self.refresh_delay:
            await asyncio.sleep(self.refresh_delay)
        valid = (
            body.get("client_id") == self.CLIENT_ID
            and body.get("client_secret") == self.CLIENT_SECRET
            and body.get("redirect_uri") == self.REDIRECT
            and body.get("grant_type") == "refresh_token"
            and body.get("refresh_token") in self.refresh_tokens
        )
        if not valid:
            return _json(
                {"hint": "Token has been revoked", "title": "Некорректный запрос", "status": 400},
                400,
            )
        self.refresh_tokens.discard(body["refresh_token"])  # single use
        self.refreshes += 1
        access = "amo-access-" + secrets.token_hex(8)
        self.access.add(access)
        return _json(
            {
                "token_type": "Bearer",
                "expires_in": 86400,
                "access_token": access,
                "refresh_token": self.new_refresh_token(),
            }
        )


def _amo_matches(item: dict[str, Any], query: str) -> bool:
    """amoCRM's ``query``: a substring of any filled field (CRM-NOTES, "query is a
    full-text substring search over all filled fields"); a query of digits also finds
    them written with separators (``222-11-00`` for ``2221100``) in any field, as the
    search box does for phones."""
    texts = [str(item.get("name", "")), str(item.get("note", ""))]
    for field_ in item.get("custom_fields_values") or []:
        texts += [str(value["value"]) for value in field_["values"]]
    wanted = digits(query) if query.isdigit() else ""
    return any(query in text or (wanted and wanted in digits(text)) for text in texts)


# Bitrix24 -------------------------------------------------------------------------------


class FakeBitrix24(FakeServer):
    """Bitrix24 REST: inbound webhook (``/rest/<user>/<code>/<method>.json``) or OAuth
    (``/rest/<method>.json`` with ``auth``), ``batch``, and the OAuth server
    (``/oauth/token/``). The leaky bucket drains ``rate_per_s`` and holds ``burst``."""

    USER_ID = "1"
    CODE = "whk9x2c0d3SECRET"
    CLIENT_ID = "local.5f0c0de.000001"
    CLIENT_SECRET = "b24-client-secret-Qw7"

    def __init__(self, *, rate_per_s: float = 2.0, burst: int = 50) -> None:
        super().__init__()
        self.entities: list[dict[str, Any]] = []  # {"type","id","phones","assigned"}
        self.users: dict[str, dict[str, Any]] = {}
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._level = 0.0
        self._last = time.monotonic()
        self.access: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.refreshes = 0
        self.blocked_methods: set[str] = set()
        self.app.router.add_route("*", "/rest/{user}/{code}/{method}", self._webhook)
        self.app.router.add_route("*", "/rest/{method}", self._oauth_call)
        self.app.router.add_get("/oauth/token/", self._oauth_token)

    @property
    def webhook(self) -> str:
        return f"{self.url}/rest/{self.USER_ID}/{self.CODE}/"

    def add_entity(
        self,
        kind: str,
        ident: int,
        phones: list[str],
        assigned: str,
        *,
        modified: str = "2025-01-01T10:00:00+03:00",
    ) -> None:
        self.entities.append(
            {
                "type": kind,
                "id": ident,
                "phones": phones,
                "assigned": assigned,
                "modified": modified,
            }
        )

    def add_user(
        self,
        ident: str,
        name: str,
        *,
        inner: str | None = None,
        mobile: str | None = None,
        active: bool = True,
        timeman: str = "OPENED",
        email: str = "",
    ) -> None:
        self.users[ident] = {
            "ID": ident,
            "ACTIVE": active,
            "NAME": name,
            "LAST_NAME": "",
            "EMAIL": email,
            "UF_PHONE_INNER": inner,
            "PERSONAL_MOBILE": mobile or "",
            "_timeman": timeman,
        }

    def new_refresh_token(self) -> str:
        token = "b24-refresh-" + secrets.token_hex(8)
        self.refresh_tokens.add(token)
        return token

    def _bucket(self) -> bool:
        now = time.monotonic()
        self._level = max(0.0, self._level - (now - self._last) * self.rate_per_s)
        self._last = now
        if self._level + 1 > self.burst:
            return False
        self._level += 1
        return True

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["user"] != self.USER_ID or request.match_info["code"] != self.CODE:
            return _error(401, "INVALID_CREDENTIALS", "Invalid request credentials")
        return await self._serve(request, request.match_info["method"], await _params(request))

    async def _oauth_call(self, request: web.Request) -> web.StreamResponse:
        params = await _params(request)
        token = params.pop("auth", None)
        if token is None:
            return _error(401, "NO_AUTH_FOUND", "Wrong authorization data")
        if token not in self.access:
            return _error(401, "expired_token", "The access token provided has expired.")
        return await self._serve(request, request.match_info["method"], params)

    async def _oauth_token(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if (
            q.get("grant_type") != "refresh_token"
            or q.get("client_id") != self.CLIENT_ID
            or q.get("client_secret") != self.CLIENT_SECRET
            or q.get("refresh_token") not in self.refresh_tokens
        ):
            return _json({"error": "invalid_grant", "error_description": "Invalid grant"}, 400)
        self.refresh_tokens.discard(q["refresh_token"])
        self.refreshes += 1
        access = "b24-access-" + secrets.token_hex(8)
        self.access.add(access)
        return _json(
            {
                "access_token": access,
                "expires_in": 3600,
                "refresh_token": self.new_refresh_token(),
                "scope": "app",
                "domain": "example.bitrix24.ru",
                "status": "L",
                "member_id": "m1",
                "user_id": 1,
            }
        )

    async def _serve(
        self, request: web.Request, method: str, params: dict[str, Any]
    ) -> web.StreamResponse:
        method = method.removesuffix(".json")
        if not self._bucket():
            self.throttled += 1
            return _error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        if method in self.blocked_methods:
            return _error(
                429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."
            )
        if method == "batch":
            return _json({"result": self._batch(params), "time": _time()})
        try:
            result, extra = self._method(method, params)
        except _B24Error as exc:
            return _error(exc.status, exc.code, exc.description)
        return _json({"result": result, **extra, "time": _time()})

    def _method(self, method: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if method in self.blocked_methods:
            raise _B24Error(429, "OPERATION_TIME_LIMIT", "Method is blocked")
        if method == "telephony.externalCall.searchCrmEntities":
            phone = str(params.get("PHONE_NUMBER") or "")
            if not phone:
                raise _B24Error(400, "ERROR_CORE", "PHONE_NUMBER is empty")
            found = [self._search_hit(e) for e in self._matching([phone])]
            return found, {}
        if method == "crm.duplicate.findbycomm":
            values = params.get("values") or []
            if params.get("type") != "PHONE" or not isinstance(values, list):
                raise _B24Error(400, "", "Parameter 'type' is not defined")
            if len(values) > 20:
                raise _B24Error(400, "", "Too many values (max 20)")
            found: dict[str, list[int]] = {}
            for entity in self._matching([str(v) for v in values]):
                found.setdefault(entity["type"].upper(), []).append(entity["id"])
            return (found or []), {}  # PHP: an empty array is a JSON list
        match = re.fullmatch(r"crm\.(contact|company|lead)\.get", method)
        if match:
            ident = str(params.get("id") or params.get("ID") or "")
            for entity in self.entities:
                if entity["type"] == match[1] and str(entity["id"]) == ident:
                    # crm.contact.get's fields: DATE_MODIFY is ISO 8601 with the offset.
                    found_entity = {
                        "ID": str(entity["id"]),
                        "ASSIGNED_BY_ID": entity["assigned"],
                        "DATE_MODIFY": entity["modified"],
                    }
                    return found_entity, {}
            raise _B24Error(400, "", "Not found")
        if method == "user.get":
            start = int(params.get("start") or 0)
            users = [
                {k: v for k, v in u.items() if not k.startswith("_")} for u in self.users.values()
            ]
            page = users[start : start + 50]
            extra: dict[str, Any] = {"total": len(users)}
            if start + 50 < len(users):
                extra["next"] = start + 50
            return page, extra
        raise _B24Error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")

    def _matching(self, phones: list[str]) -> list[dict[str, Any]]:
        """Bitrix's own priority between kinds; within a kind, the order the records were
        added in (the portal promises none: not the newest first)."""
        wanted = {digits(p) for p in phones}
        order = {"contact": 0, "company": 1, "lead": 2}
        found = [e for e in self.entities if any(digits(p) in wanted for p in e["phones"])]
        return sorted(found, key=lambda e: order[e["type"]])

    def _search_hit(self, entity: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(entity["assigned"], {})
        return {
            "CRM_ENTITY_TYPE": entity["type"].upper(),
            "CRM_ENTITY_ID": entity["id"],
            "ASSIGNED_BY_ID": int(entity["assigned"]),
            "NAME": f"{entity['type']} {entity['id']}",
            "ASSIGNED_BY": {
                "ID": entity["assigned"],
                "TIMEMAN_STATUS": user.get("_timeman", "UNAVAILABLE"),
                "USER_PHONE_INNER": user.get("UF_PHONE_INNER"),
                "WORK_PHONE": None,
                "PERSONAL_PHONE": None,
                "PERSONAL_MOBILE": user.get("PERSONAL_MOBILE") or None,
            },
        }

    def _batch(self, params: dict[str, Any]) -> dict[str, Any]:
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        commands = params.get("cmd") or {}
        for key, command in commands.items():
            method, _, query = str(command).partition("?")
            query = re.sub(
                r"\$result\[(\w+)\]((?:\[\w+\])*)",
                lambda m: _resolve(results, m[1], m[2]),
                query,
            )
            try:
                if "\x00" in query:
                    raise _B24Error(400, "", "Reference to a missing result")
                result, extra = self._method(method, _php_params(query))
            except _B24Error as exc:
                errors[key] = {"error": exc.code, "error_description": exc.description}
                continue
            results[key] = result
            if "total" in extra:
                totals[key] = extra["total"]
        return {
            "result": results or [],
            "result_error": errors or [],
            "result_total": totals or [],
            "result_next": [],
            "result_time": [],
        }


class _B24Error(Exception):
    def __init__(self, status: int, code: str, description: str) -> None:
        self.status, self.code, self.description = status, code, description


def _resolve(results: dict[str, Any], key: str, path: str) -> str:
    value: Any = results.get(key)
    for part in re.findall(r"\[(\w+)\]", path):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return "\x00"
    return "\x00" if value is None or isinstance(value, dict | list) else str(value)


def _php_params(query: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key.endswith("[]"):
            out.setdefault(key[:-2], []).append(value)
        else:
            out[key] = value
    return out


async def _params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        data = await request.json()
        return data if isinstance(data, dict) else {}
    params = _php_params(request.query_string)
    if request.can_read_body:
        params |= _php_params((await request.read()).decode())
    return params


def _error(status: int, code: str, description: str) -> web.Response:
    return _json({"error": code, "error_description": description}, status)


def _time() -> dict[str, Any]:
    now = time.time()
    return {
        "start": now,
        "finish": now + 0.001,
        "duration": 0.001,
        "processing": 0.0,
        "date_start": "2026-01-01T00:00:00+03:00",
        "date_finish": "2026-01-01T00:00:00+03:00",
        "operating_reset_at": int(now) + 600,
        "operating": 0.0,
    }


# Megaplan -------------------------------------------------------------------------------


class FakeMegaplan(FakeServer):
    """Megaplan API v3: JSON in the query string, ``{meta, data}`` envelopes, errors that
    may come with HTTP 200 (``errors_in_200``)."""

    USERNAME = "icm@example.ru"
    PASSWORD = "mp-password-Hj4!"

    def __init__(self, *, errors_in_200: bool = False, rate_per_s: float = 0) -> None:
        """:param rate_per_s: if set, more requests than this in any second are answered
        429 with ``Retry-After: 1`` (Megaplan publishes no figure; CRM-NOTES: "clients
        handle 429 with Retry-After", one client library keeps to 5/s)."""
        super().__init__()
        self.rate_per_s = rate_per_s
        self._recent: deque[float] = deque()
        self.clients: list[dict[str, Any]] = []
        self.employees: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        self.logins = 0
        self.errors_in_200 = errors_in_200
        self.queries: list[Any] = []  # the decoded JSON of each GET
        self.app.router.add_post("/api/v3/auth/access_token", self._login)
        self.app.router.add_get("/api/v3/contractorCompany/search", self._search)
        self.app.router.add_get("/api/v3/contractorHuman/search", self._search)
        self.app.router.add_get("/api/v3/contractor/search", self._abstract)
        self.app.router.add_get("/api/v3/contractorHuman/{id}", self._card("ContractorHuman"))
        self.app.router.add_get("/api/v3/contractorCompany/{id}", self._card("ContractorCompany"))
        self.app.router.add_get("/api/v3/employee", self._employees)

    def add_client(
        self,
        kind: str,
        ident: int,
        phones: list[str],
        responsibles: list[tuple[str, int]],
        *,
        name: str = "Client",
        updated: str = "2025-01-01T10:00:00+03:00",
    ) -> None:
        self.clients.append(
            {
                "contentType": kind,
                "id": str(ident),
                "name": name,
                # API v3 dates: {"contentType": "DateTime", "value": ISO 8601}.
                "timeUpdated": {"contentType": "DateTime", "value": updated},
                "contactInfo": [
                    {"contentType": "ContactInfo", "type": "phone", "value": p} for p in phones
                ],
                "responsibles": [
                    {"contentType": t, "id": str(i), "name": f"{t} {i}"} for t, i in responsibles
                ],
            }
        )

    def add_employee(self, ident: int, name: str, *, email: str = "", working: bool = True) -> None:
        self.employees.append(
            {
                "contentType": "Employee",
                "id": str(ident),
                "name": name,
                "login": email,
                "isWorking": working,
                "contactInfo": [{"contentType": "ContactInfo", "type": "email", "value": email}]
                if email
                else [],
            }
        )

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def _envelope(self, data: Any, status: int = 200, **meta: Any) -> web.Response:
        errors = [] if status == 200 else [{"field": None, "message": meta.pop("message", "error")}]
        http = 200 if (status == 200 or self.errors_in_200) else status
        return _json({"meta": {"status": status, "errors": errors, **meta}, "data": data}, http)

    def _authorised(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    def _over_limit(self) -> web.Response | None:
        if not self.rate_per_s:
            return None
        now = time.monotonic()
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - 1:
            self._recent.popleft()
        if len(self._recent) <= self.rate_per_s:
            return None
        self.throttled += 1
        response = self._envelope(None, 429, message="Too many requests")
        response.headers["Retry-After"] = "1"
        return response

    def _query(self, request: web.Request) -> dict[str, Any]:
        # The server decodes the whole query string as form data: "+" becomes a space.
        raw = unquote_plus(request.rel_url.raw_query_string)
        params = json.loads(raw) if raw else {}
        self.queries.append(params)
        return params

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if (
            form.get("grant_type") != "password"
            or form.get("username") != self.USERNAME
            or form.get("password") != self.PASSWORD
        ):
            return _json(
                {"error": "invalid_grant", "error_description": "Invalid credentials"}, 401
            )
        self.logins += 1
        token = "mp-token-" + secrets.token_hex(8)
        self.tokens.add(token)
        return _json(
            {
                "access_token": token,
                "expires_in": 172800,
                "token_type": "bearer",
                "scope": None,
                "refresh_token": "mp-refresh-" + secrets.token_hex(8),
            }
        )

    async def _search(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._envelope(None, 401, message="Unauthorized")
        over = self._over_limit()
        if over is not None:
            return over
        try:
            params = self._query(request)
        except ValueError:
            return self._envelope(None, 422, message="Invalid request")
        q = str(params.get("q", ""))
        limit = int(params.get("limit", 100))
        if not q or " " in q:  # "+" decoded as a space never matches a phone
            return self._envelope([], pagination={"count": 0, "limit": limit})
        found = [
            c
            for c in self.clients
            if q in c["name"] or any(digits(q) in digits(i["value"]) for i in c["contactInfo"])
        ][:limit]
        reduced = [
            {"contentType": c["contentType"], "id": c["id"], "name": c["name"]} for c in found
        ]
        return self._envelope(reduced, pagination={"count": len(reduced), "limit": limit})

    async def _abstract(self, request: web.Request) -> web.StreamResponse:
        return self._envelope(None, 500, message="Abstract entity")

    def _card(self, kind: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            if not self._authorised(request):
                return self._envelope(None, 401, message="Unauthorized")
            over = self._over_limit()
            if over is not None:
                return over
            for client in self.clients:
                if client["contentType"] == kind and client["id"] == request.match_info["id"]:
                    return self._envelope(client)
            return self._envelope(None, 404, message="Not found")

        return handle

    async def _employees(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._envelope(None, 401, message="Unauthorized")
        over = self._over_limit()
        if over is not None:
            return over
        params = self._query(request)
        limit = int(params.get("limit", 100))
        start = 0
        after = params.get("pageAfter")
        if isinstance(after, dict):
            ids = [e["id"] for e in self.employees]
            start = ids.index(str(after["id"])) + 1 if str(after["id"]) in ids else len(ids)
        page = self.employees[start : start + limit]
        return self._envelope(page, pagination={"count": len(self.employees), "limit": limit})
