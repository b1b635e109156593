"""Shared fixtures: stores, the simulated Asterisk, configurations and running daemons."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from icm.config import Config, from_dict
from icm.daemon import Daemon
from icm.store import SqliteStore, Store
from simpbx.redis_server import RedisServer

TEST_SECRET = "test-secret-5f1c"  # the simulated Asterisk's AMI secret
SECRET_ENV = {"ICM_AMI_SECRET": TEST_SECRET}


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = SqliteStore(tmp_path / "icm.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (tests that stop it use ``own_redis``)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt install redis-server; .ci/run does)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test, which it may stop and start again."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt install redis-server; .ci/run does)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every store implementation, for the contract tests."""
    if request.param == "redis":
        from icm.store.redis import RedisStore

        made: Store = RedisStore(request.getfixturevalue("redis_url"))
    else:
        made = SqliteStore(tmp_path / "icm.db")
    await made.open()
    yield made
    await made.close()


@pytest.fixture
async def pbx() -> AsyncIterator[Any]:
    from simpbx.pbx import FakeAsterisk

    fake = FakeAsterisk(auth_delay=0.05)
    await fake.start()
    yield fake
    await fake.stop()


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """A configuration for a daemon talking to the simulated PBX on ``port``."""

    def make(port: int = 1, *, environ: dict[str, str] | None = None, **sections: Any) -> Config:
        base: dict[str, Any] = {
            "ami": {
                "port": port,
                "keepalive_s": 0.5,
                "keepalive_timeout_s": 0.5,
                "reconnect_max_s": 1.0,
                "connect_timeout_s": 2.0,
            },
            "routing": {"area_code": "495", "lookup_budget_ms": 500, "dial_timeout_s": 3},
            "managers": {
                "101": {"name": "Anna"},
                "102": {"name": "Boris"},
                "103": {"name": "Vera", "mobiles": ["+79160000003"]},
                "104": {"name": "Gleb"},
                "100": {"name": "Director"},
            },
            "sources": {"icmdb": {"min_talk_s": 0.01}},
            "store": {"url": str(tmp_path / "icm.db")},
            "http": {"listen": "127.0.0.1:0"},
            # Most simulated tests run the simulator as chan_sip (its default, and the
            # names they use); tests/test_simpbx_pjsip.py runs the shipped PJSIP defaults.
            "dial": {"extension": "SIP/{ext}", "external": "SIP/trunk/{number}"},
        }
        return from_dict(deep_merge(base, sections), "test.toml", SECRET_ENV | (environ or {}))

    return make


@pytest.fixture
async def start_daemon() -> AsyncIterator[Callable[..., Any]]:
    """Start daemons that are stopped at the end of the test."""
    running: list[Daemon] = []

    async def start(config: Config, *, wait_login: bool = True, **options: Any) -> Daemon:
        daemon = Daemon(config, **options)
        await daemon.start()
        running.append(daemon)
        if wait_login:
            assert await daemon.ami.wait_logged_in(5), "the daemon did not log in"
            await until(lambda: daemon.resyncs > 0, timeout=5)
        return daemon

    yield start
    for daemon in running:
        with contextlib.suppress(Exception):
            await daemon.stop()


async def until(predicate: Callable[[], bool], timeout: float = 3.0, step: float = 0.005) -> None:
    """Wait until ``predicate()`` is true; fail the test after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(step)
