"""`icm check-config` compares the dial templates' channel technology with the devices
Asterisk reports (issue 10, defect 5), against the simulated Asterisk over real TCP; the
real one is in tests/realpbx/test_presence.py. The daemon's own warning after each
presence resync is tested there too."""

import asyncio

from icm import cli
from icm.config import DialSettings
from icm.dialing import technology_warnings
from simpbx.redis_server import free_port

from .conftest import TEST_SECRET


def write_config(tmp_path, port, dial=""):
    path = tmp_path / "icm.toml"
    path.write_text(
        f"""
[ami]
port = {port}
[managers.101]
name = "Anna"
[store]
url = "{tmp_path / "icm.db"}"
{dial}
""",
        encoding="utf-8",
    )
    return str(path)


async def check(capsys, monkeypatch, path):
    monkeypatch.setenv("ICM_AMI_SECRET", TEST_SECRET)
    code = await asyncio.to_thread(cli.main, ["check-config", "-c", path])
    return code, capsys.readouterr().out


async def test_pjsip_templates_on_a_chan_sip_asterisk_warn(pbx, tmp_path, capsys, monkeypatch):
    pbx.register("101")
    pbx.set_hint("101", 0)
    code, out = await check(capsys, monkeypatch, write_config(tmp_path, pbx.port))
    assert code == 0  # a warning, not a mistake in the file
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, out  # extension and external
    assert "dial.extension = 'PJSIP/{ext}' dials channel technology PJSIP" in warnings[0]
    assert "extension = 'SIP/{ext}'" in warnings[0]  # what to write instead


async def test_matching_templates_say_so(pbx, tmp_path, capsys, monkeypatch):
    pbx.register("101")
    pbx.set_hint("101", 0)
    dial = '[dial]\nextension = "SIP/{ext}"\nexternal = "SIP/trunk/{number}"\n'
    code, out = await check(capsys, monkeypatch, write_config(tmp_path, pbx.port, dial))
    assert code == 0
    assert "warning" not in out
    assert "match the dial templates" in out


async def test_without_asterisk_the_check_is_skipped_at_once(tmp_path, capsys, monkeypatch):
    started = asyncio.get_running_loop().time()
    code, out = await check(capsys, monkeypatch, write_config(tmp_path, free_port()))
    assert code == 0
    assert ": OK (" in out and "device check skipped" in out
    assert asyncio.get_running_loop().time() - started < 2.5


def test_technology_warnings():
    defaults = DialSettings()
    assert technology_warnings(defaults, ["PJSIP/101", "Custom:DND101"]) == []
    assert technology_warnings(defaults, ["SIP/101&Custom:DND101"])[0].startswith(
        "dial.extension = 'PJSIP/{ext}'"
    )
    assert technology_warnings(defaults, []) == []  # nothing reported: nothing to say
    assert technology_warnings(defaults, ["Queue:sales", "Custom:x"]) == []
    local = DialSettings(external="Local/{number}@outbound")
    assert technology_warnings(local, ["PJSIP/101"]) == []  # Local is dialplan, no device
