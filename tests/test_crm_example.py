"""README's "Adding a CRM" example is a working source: run as written against a fake of
its made-up API (a real server on 127.0.0.1)."""

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from icm.model import Answer
from icm.numbers import Numbers
from icm.secrets import SecretRef
from icm.sources import SourceContext

from .crm_fakes import FakeServer

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
IMPORTS = """
from collections.abc import AsyncIterator
from typing import Annotated

from connectors._auth import Credentials, FixedToken
from connectors._crm import CrmSource, Record
from connectors._http_client import HttpSourceSettings, http_address
from connectors._users import CrmUser
from icm.model import Answer
from icm.secrets import SecretRef
"""
TOKEN = "acme-token-1"


def example() -> dict[str, Any]:
    section = README.split("### Adding a CRM", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {"__name__": "acme"}
    exec(IMPORTS + code, namespace)
    return namespace


class FakeAcme(FakeServer):
    """The made-up API: ``GET /clients?phone=`` and ``GET /users``, bearer token."""

    def __init__(self) -> None:
        super().__init__()
        self.clients = [
            {"id": 1, "phone": "+79161234567", "manager": 7, "updated": 1_700_000_000},
            {"id": 2, "phone": "+79161234567", "manager": 8, "updated": 1_700_000_900},
        ]
        self.app.router.add_get("/clients", self._clients)
        self.app.router.add_get("/users", self._users)

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    async def _clients(self, request: web.Request) -> web.Response:
        assert self._authorised(request)
        phone = request.query["phone"]
        return web.json_response([c for c in self.clients if c["phone"] == phone])

    async def _users(self, request: web.Request) -> web.Response:
        assert self._authorised(request)
        return web.json_response(
            [{"id": 7, "name": "Anna", "active": True}, {"id": 8, "name": "Boris", "active": True}]
        )


@pytest.fixture
async def acme():
    fake = FakeAcme()
    await fake.start()
    yield fake
    await fake.stop()


async def test_the_readme_example_is_a_working_source(acme, sqlite_store):
    module = example()
    token = SecretRef(env="ICM_ACME_TOKEN").read("the Acme token", {"ICM_ACME_TOKEN": TOKEN})
    settings = module["AcmeSettings"](base_url=acme.url, token=token)
    context = SourceContext(sqlite_store, Numbers("RU", "495"), None)  # type: ignore[arg-type]
    source = module["AcmeSource"](settings, context)
    await source.start()
    try:
        await source.wait_ready(3)
        answer = await source.lookup("+79161234567")
        unknown = await source.lookup("+79031234567")
    finally:
        await source.close()
    # The most recently updated of the two clients; the user map named its manager.
    assert answer == Answer(user="8", name="Boris", detail="client 2, responsible user 8 (Boris)")
    assert unknown is None
    assert [r.path for r in acme.requests] == ["/users", "/clients", "/clients"]
