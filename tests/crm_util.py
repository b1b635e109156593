"""Shared by the CRM tests: configurations pointing at the fakes, sources and routers
built the way the daemon builds them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from icm.config import Config, from_dict
from icm.dialing import DialStrings
from icm.managers import Managers
from icm.model import Decision, Presence, RouteRequest
from icm.router import Router
from icm.snapshot import build_sources, source_context
from icm.store import Store

from .conftest import deep_merge
from .crm_fakes import FakeAmoCrm, FakeBitrix24, FakeMegaplan, FakeServer

CLIENT = "+79161234567"

MANAGERS = {
    "101": {
        "name": "Anna",
        "email": "anna@example.ru",
        "ids": {"amocrm": 5550001, "megaplan": 1000005},
    },
    "102": {"name": "Boris", "ids": {"amocrm": 5550002, "megaplan": 1000006}},
    "103": {"name": "Vera", "mobiles": ["+79160000003"], "ids": {"amocrm": 5550003}},
    "104": {"name": "Gleb"},
    "100": {"name": "Director", "ids": {"amocrm": 5550000}},
}


def crm_section(name: str, fake: FakeServer) -> tuple[dict[str, Any], dict[str, str]]:
    """The [sources.<name>] section and the environment for a fake CRM."""
    if name == "amocrm":
        assert isinstance(fake, FakeAmoCrm)
        return {"base_url": fake.url}, {"ICM_AMOCRM_TOKEN": fake.long_lived}
    if name == "bitrix24":
        assert isinstance(fake, FakeBitrix24)
        return {}, {"ICM_BITRIX24_WEBHOOK": fake.webhook}
    assert isinstance(fake, FakeMegaplan)
    return (
        {"base_url": fake.url, "username": FakeMegaplan.USERNAME},
        {"ICM_MEGAPLAN_PASSWORD": FakeMegaplan.PASSWORD},
    )


def crm_config(
    store_url: str,
    fakes: dict[str, FakeServer],
    *,
    sections: dict[str, dict[str, Any]] | None = None,
    environ: dict[str, str] | None = None,
    **top: Any,
) -> Config:
    """A configuration whose routing.sources are ``fakes``' names, in order."""
    source_sections: dict[str, Any] = {}
    env: dict[str, str] = {}
    for name, fake in fakes.items():
        section, extra = crm_section(name, fake)
        source_sections[name] = section | (sections or {}).get(name, {})
        env |= extra
    for name, section in (sections or {}).items():
        source_sections.setdefault(name, section)
    raw = deep_merge(
        {
            "routing": {"area_code": "495", "sources": list(fakes)},
            "managers": MANAGERS,
            "sources": source_sections,
            "store": {"url": store_url},
            # The simulated Asterisk names its phones the chan_sip way.
            "dial": {"extension": "SIP/{ext}", "external": "SIP/trunk/{number}"},
        },
        top,
    )
    return from_dict(raw, "test.toml", env | (environ or {}), ami_secret=False)


def make_router(config: Config, store: Store, presence: dict[str, Presence] | None = None):
    numbers = config.numbers()
    managers = Managers.from_config(config, numbers)
    sources = build_sources(config, source_context(config, store, numbers, managers, None))
    states = presence or {}
    router = Router(
        settings=config.routing,
        sources=sources,
        numbers=numbers,
        managers=managers,
        dial=DialStrings(config.dial, numbers),
        presence=lambda ext: states.get(ext, Presence.AVAILABLE),
    )
    return router, sources


@contextlib.asynccontextmanager
async def running(config: Config, store: Store, *, ready: bool = True) -> AsyncIterator[Router]:
    """A router over started sources (their user maps loaded when ``ready``)."""
    router, sources = make_router(config, store)
    for source, _ in sources:
        await source.start()
    if ready:
        for source, _ in sources:
            if hasattr(source, "wait_ready"):
                await source.wait_ready(3)
    try:
        yield router
    finally:
        for source, _ in sources:
            await source.close()


async def route(router: Router, number: str = "8 916 123-45-67", budget: float = 2.0) -> Decision:
    loop = asyncio.get_running_loop()
    return await router.route(RouteRequest("1", number, deadline=loop.time() + budget))


def steps(decision: Decision) -> list[tuple[str, str]]:
    return [(s.source, s.outcome) for s in decision.steps]


@contextlib.asynccontextmanager
async def serving(*fakes: FakeServer) -> AsyncIterator[None]:
    for fake in fakes:
        await fake.start()
    try:
        yield
    finally:
        for fake in fakes:
            await fake.stop()
