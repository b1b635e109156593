"""No secret ever leaves the daemon: a full scenario with known secrets configured, and
every output a person or a scraper sees is searched for them.

Secrets (each a unique canary): the AMI secret (environment variable), a wrong AMI secret
(refused logins), a CRM token (the HTTP test source, environment variable), a secret file's
content, and secrets written inline into config files (refused). Outputs searched: every
log record of every logger at DEBUG (with tracebacks), /metrics, /readyz, exception
messages, reprs of the configuration, and stdout/stderr of the real ``icm`` commands
(``check-config`` with bad files, ``run`` refused by Asterisk, JSON logs at debug)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

import aiohttp
import pytest

from icm.ami.client import AmiError
from icm.config import ConfigError, from_dict, load
from icm.sources import SourceError
from simpbx.ami_server import AmiUser
from simpbx.pbx import FakeAsterisk, asterisk_file

from .conftest import until
from .httpsource import TOKEN_ENV, HostileCrm, HttpTestSettings, HttpTestSource

AMI_SECRET = "ami-leak-canary-3f9e1c"
WRONG_SECRET = "wrong-leak-canary-77ab"
CRM_TOKEN = "crm-leak-canary-b41d"
FILE_SECRET = "file-leak-canary-0c5e"
INLINE_SECRET = "inline-leak-canary-9a2f"
SECRETS = [AMI_SECRET, WRONG_SECRET, CRM_TOKEN, FILE_SECRET, INLINE_SECRET]
MARKER = "leak-canary"  # in every secret: catches a part of one, too


def assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} holds a secret"
    assert MARKER not in text, f"{where} holds part of a secret"


@pytest.fixture
async def pbx():
    user = AmiUser.from_manager_conf(asterisk_file("manager_icm.conf"), "icm", secret=AMI_SECRET)
    fake = FakeAsterisk(users=[user], auth_delay=0.05)
    await fake.start()
    yield fake
    await fake.stop()


async def http_get(port: int, path: str) -> str:
    url = f"http://127.0.0.1:{port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


async def icm_command(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run ``python -m icm ARGS``: (exit code, stdout and stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "icm",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, output.decode("utf-8", "replace")


def config_for(tmp_path, port: int, secret: str):
    raw = {
        "ami": {"port": port, "keepalive_s": 0.3, "keepalive_timeout_s": 0.3},
        "routing": {"area_code": "495", "lookup_budget_ms": 500, "dial_timeout_s": 3},
        "managers": {"101": {"name": "Anna"}, "102": {"name": "Boris"}},
        "sources": {"icmdb": {"min_talk_s": 0.01}},
        "store": {"url": str(tmp_path / "icm.db")},
        "http": {"listen": "127.0.0.1:0"},
        "log": {"level": "debug"},
    }
    raw["ami"]["reconnect_max_s"] = 0.2
    return from_dict(raw, "icm.toml", {"ICM_AMI_SECRET": secret})


async def test_secrets_never_leak(pbx, tmp_path, caplog, start_daemon, monkeypatch):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    monkeypatch.setenv(TOKEN_ENV, CRM_TOKEN)
    outputs: dict[str, str] = {}
    errors: list[BaseException] = []
    pbx.register("101", "102")

    # 1. A daemon with the wrong AMI secret: refused again and again.
    refused = await start_daemon(config_for(tmp_path, pbx.port, WRONG_SECRET), wait_login=False)
    await until(lambda: refused.metrics.ami_login_failures._value.get() >= 2, timeout=5)
    outputs["/readyz refused"] = await http_get(refused.http.port, "/readyz")
    outputs["/metrics refused"] = await http_get(refused.http.port, "/metrics")
    outputs["repr(config) refused"] = repr(refused.config) + str(refused.config.ami)
    await refused.stop()

    # 2. The right secret; a CRM that fails in every way, then icmdb; calls; a dropped link.
    daemon = await start_daemon(config_for(tmp_path, pbx.port, AMI_SECRET))
    crm_server = HostileCrm()
    await crm_server.start()
    try:
        await daemon.store.learn("+79161234567", "101", time.time())
        for path in ("/500", "/429", "/garbage", "/huge", "/close", "/hang", "/ok"):
            settings = HttpTestSettings(url=crm_server.url(path), timeout_ms=200)
            crm = HttpTestSource(settings, daemon.snapshot.context)
            await crm.start()
            daemon.snapshot.router.sources = [(crm, settings), daemon.snapshot.sources[0]]
            try:
                async with asyncio.timeout(0.3):  # the router's job, done here by hand
                    await crm.lookup("+79161234567")
            except SourceError as exc:
                errors.append(exc)
            except TimeoutError:
                pass
            for caller in ("89161234567", "+7 903 555 00 00", "anonymous"):
                await pbx.call(caller)
            await crm.close()
        daemon.snapshot.router.sources = [daemon.snapshot.sources[0]]
        assert set(crm_server.authorizations) == {f"Bearer {CRM_TOKEN}"}  # it was used
        pbx.ami.drop()
        await until(lambda: pbx.ami.logins == 2 and daemon.resyncs == 2, timeout=5)
        await pbx.call("89161234567")
        outputs["/metrics"] = await http_get(daemon.http.port, "/metrics")
        outputs["/readyz"] = await http_get(daemon.http.port, "/readyz")
        outputs["repr(config)"] = repr(daemon.config) + str(daemon.config.model_dump())
        outputs["repr(ami settings)"] = repr(daemon.ami.settings)
        try:
            await daemon.ami.action("Setvar", {"Channel": "SIP/gone-1", "Variable": "X"})
        except AmiError as exc:
            errors.append(exc)
    finally:
        await crm_server.stop()

    # 3. Config files with secrets written inline, and a secret file: refused or read,
    #    never echoed.
    secret_file = tmp_path / "ami-secret"
    secret_file.write_text(FILE_SECRET, encoding="utf-8")
    bad_files = {
        "inline AMI secret": f'[ami]\nsecret = "{INLINE_SECRET}"\n',
        "inline source token": f'[sources.icmdb]\ntoken = "{INLINE_SECRET}"\n',
        "inline password, wrong type": f'[ami]\npassword = ["{INLINE_SECRET}"]\n',
        "unknown source with a token": f'[sources.amocrm]\ntoken = "{INLINE_SECRET}"\n',
        "secret file and a bad key": f'[ami]\nsecret_file = "{secret_file}"\nhost = "a b"\n',
    }
    for name, text in bad_files.items():
        path = tmp_path / f"{name.replace(' ', '-')}.toml"
        path.write_text(text, encoding="utf-8")
        try:
            load(path, {"ICM_AMI_SECRET": AMI_SECRET})
        except ConfigError as exc:
            errors.append(exc)
        else:
            raise AssertionError(f"{name}: accepted")
        code, output = await icm_command(
            "check-config", "-c", str(path), env={**os.environ, "ICM_AMI_SECRET": AMI_SECRET}
        )
        assert code == 2, output
        outputs[f"check-config {name}"] = output
    good = tmp_path / "good.toml"
    good.write_text(
        f'[ami]\nsecret_file = "{secret_file}"\n[routing]\nextensions = ["101"]\n',
        encoding="utf-8",
    )
    assert load(good, {}).ami.secret.get_secret_value() == FILE_SECRET
    outputs["repr(config from file)"] = repr(load(good, {}))
    env = {k: v for k, v in os.environ.items() if k != "ICM_AMI_SECRET"}
    code, output = await icm_command("check-config", "-c", str(good), env=env)
    assert code == 0, output
    outputs["check-config OK"] = output

    # 4. The real daemon process refused by Asterisk, logging JSON at debug.
    run_config = tmp_path / "run.toml"
    run_config.write_text(
        f"""
[ami]
port = {pbx.port}
reconnect_max_s = 0.2
[store]
url = "{tmp_path / "run.db"}"
[http]
listen = "127.0.0.1:0"
[routing]
extensions = ["101"]
[log]
level = "debug"
format = "json"
""",
        encoding="utf-8",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "icm",
        "run",
        "-c",
        str(run_config),
        env={**os.environ, "ICM_AMI_SECRET": WRONG_SECRET},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    logins = len([a for a in pbx.ami.actions if a[1].get("action", "").lower() == "login"])
    await until(
        lambda: (
            len([a for a in pbx.ami.actions if a[1].get("action", "").lower() == "login"])
            >= logins + 2
        ),
        timeout=20,
    )
    process.send_signal(signal.SIGTERM)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 15)
    outputs["icm run"] = (stdout + stderr).decode("utf-8", "replace")
    assert "refused the login of user 'icm'" in outputs["icm run"]
    assert '"level": "DEBUG"' in outputs["icm run"]  # JSON logs at debug

    # What was searched, and that it was searched: none holds a secret.
    outputs["log records"] = caplog.text + "".join(
        str(r.args) + str(getattr(r, "__dict__", "")) for r in caplog.records
    )
    assert "refused the login of user 'icm'" in caplog.text
    assert "steps=crm:error:" in caplog.text  # the CRM failures were logged
    outputs["exceptions"] = "\n".join(f"{e!s} {e!r}" for e in errors)
    assert len(errors) >= len(bad_files) + 5
    for where, text in outputs.items():
        assert text, f"{where} is empty: nothing was searched"
        assert_clean(where, text)
