"""Who may ask /route (issue 13.4): only requests addressed to this daemon by address,
localhost or a configured name (no DNS rebinding from a browser), and, with http.token
set, only those carrying the key, which the shipped [icm-curl] context sends."""

from __future__ import annotations

import time

import aiohttp
import pytest

from icm.config import ConfigError
from simpbx.pbx import FakeAsterisk, asterisk_file

from .test_entries import SCENARIOS

KEY = "k3y-0123456789abcdef"
CLIENT = "+79161234567"


@pytest.fixture
async def pbx():
    fake = FakeAsterisk(dialplan=[asterisk_file("extensions_icm.conf"), SCENARIOS], auth_delay=0.05)
    await fake.start()
    fake.register("101")
    yield fake
    await fake.stop()


async def status_of(port: int, host: str, path: str = "/route?number=89161234567") -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host}) as response,
    ):
        return response.status


async def test_only_known_host_names_are_answered(pbx, make_config, start_daemon):
    daemon = await start_daemon(make_config(pbx.port, http={"hosts": ["PBX.example.com."]}))
    port = daemon.http.port
    for host in ["evil.example", "127.0.0.1.nip.io", f"evil.example:{port}", "localhost.evil"]:
        assert await status_of(port, host) == 421, host
        assert await status_of(port, host, "/metrics") == 421, host
    for host in [f"127.0.0.1:{port}", "127.0.0.1", "localhost", f"[::1]:{port}", "pbx.example.com"]:
        assert await status_of(port, host) == 200, host
    assert await status_of(port, "10.1.2.3:9180") == 200  # an address cannot be rebound


async def test_with_a_token_route_wants_the_key_and_the_dialplan_sends_it(
    pbx, make_config, start_daemon
):
    config = make_config(pbx.port, environ={"ICM_HTTP_TOKEN": KEY})
    daemon = await start_daemon(config)
    await daemon.store.learn(CLIENT, "101", time.time())
    port = daemon.http.port
    assert await status_of(port, "127.0.0.1") == 403
    assert await status_of(port, "127.0.0.1", "/route?number=89161234567&key=wrong") == 403
    assert await status_of(port, "127.0.0.1", f"/route?number=89161234567&key={KEY}") == 200
    assert pbx.globals["ICM_HTTP_KEY"] == KEY
    placed = await pbx.call("8 916 123-45-67", context="from-trunk-curl")
    assert placed.warnings == [] and placed.dials == [("SIP/101", "ANSWER")]
    # The dialplan without the key (another daemon's globals): refused, back to the scenario.
    del pbx.globals["ICM_HTTP_KEY"]
    placed = await pbx.call("8 916 123-45-67", context="from-trunk-curl")
    assert placed.status == "TIMEOUT" and placed.dials == []


def test_a_weak_key_is_refused(make_config):
    with pytest.raises(ConfigError, match=r"http\.token_env: not a usable key"):
        make_config(1, environ={"ICM_HTTP_TOKEN": "short"})
