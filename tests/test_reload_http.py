"""``POST /-/reload`` (issue 13.5): what a web page can make a browser send is refused,
and reloads over HTTP are rate-limited (each one costs the CRMs a user-map request)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from icm import cli
from icm import daemon as daemon_module
from icm.config import load
from icm.daemon import Daemon
from simpbx.redis_server import free_port

from .conftest import SECRET_ENV, TEST_SECRET

EVIL = {"Origin": "http://evil.example"}


@pytest.fixture
async def icm(pbx, tmp_path):
    path = tmp_path / "icm.toml"
    path.write_text(
        f'[ami]\nport = {pbx.port}\n[managers.101]\nname = "Anna"\n'
        f'[store]\nurl = "{tmp_path / "icm.db"}"\n[http]\nlisten = "127.0.0.1:{free_port()}"\n',
        encoding="utf-8",
    )
    daemon = Daemon(load(path, SECRET_ENV), environ=SECRET_ENV)
    await daemon.start()
    yield daemon
    await daemon.stop()


async def post(port: int, **kwargs) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/-/reload", **kwargs) as response,
    ):
        return response.status, await response.text()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": "x", "headers": {"Content-Type": "text/plain", **EVIL}},
        {"data": {"a": "b"}, "headers": EVIL},  # a form
        {"data": aiohttp.FormData({"a": "b"}, default_to_multipart=True)},
        {"data": "x", "headers": {"Content-Type": "text/plain", "X-ICM-Reload": "yes"}},
        {"headers": {"X-ICM-Reload": "yes", **EVIL}},
        {"headers": {"X-ICM-Reload": "yes", "Sec-Fetch-Site": "cross-site"}},
        {},  # a bare POST: what fetch(..., {mode: "no-cors"}) can send
    ],
)
async def test_requests_a_web_page_can_send_are_refused(icm, kwargs):
    status, _ = await post(icm.http.port, **kwargs)
    assert status == 403
    assert icm.metrics.reloads.labels("applied")._value.get() == 0


async def test_reloads_over_http_are_rate_limited(icm, monkeypatch):
    headers = {"X-ICM-Reload": "yes"}
    monkeypatch.setattr(daemon_module, "RELOAD_INTERVAL_S", 3600.0)
    assert await post(icm.http.port, headers=headers) == (200, "reloaded\n")
    status, text = await post(icm.http.port, headers=headers)
    assert status == 429 and "try again" in text
    assert icm.metrics.reloads.labels("applied")._value.get() == 1
    icm._next_http_reload = 0.0  # the interval has passed
    assert (await post(icm.http.port, headers=headers))[0] == 200


async def test_icm_reload_is_accepted(icm, monkeypatch, capsys):
    monkeypatch.setenv("ICM_AMI_SECRET", TEST_SECRET)
    code = await asyncio.to_thread(cli.main, ["reload", "-c", str(icm.config.path)])
    assert code == 0 and capsys.readouterr().out == "reloaded\n"
