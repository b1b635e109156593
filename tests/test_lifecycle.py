"""Hot reload without dropping a call, graceful stop, and the process as systemd runs it."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from icm.config import load
from icm.daemon import Daemon
from icm.model import Answer

from .conftest import SECRET_ENV, TEST_SECRET, until
from .daemons import DaemonProcess
from .test_calls_e2e import SlowSource, use_sources

CONFIG = """
[ami]
port = {port}
keepalive_s = 0.5
keepalive_timeout_s = 0.5
[routing]
area_code = "495"
lookup_budget_ms = 500
dial_timeout_s = 3
exceptions = [{exceptions}]
default_number = "{default}"
[managers.101]
name = "Anna"
[managers.102]
name = "Boris"
[sources.icmdb]
min_talk_s = 60
[store]
url = "{store}"
[http]
listen = "127.0.0.1:0"
# The simulated Asterisk names its phones the chan_sip way.
[dial]
extension = "SIP/{{ext}}"
external = "SIP/trunk/{{number}}"
"""


@pytest.fixture
async def reloadable(pbx, tmp_path):
    pbx.register("101", "102")
    path = tmp_path / "icm.toml"

    def write(exceptions="", default=""):
        path.write_text(
            CONFIG.format(
                port=pbx.port, exceptions=exceptions, default=default, store=tmp_path / "icm.db"
            )
        )

    write()
    daemon = Daemon(load(path, SECRET_ENV), environ=SECRET_ENV)
    await daemon.start()
    await until(lambda: daemon.resyncs > 0, timeout=5)
    await daemon.store.learn("+79161234567", "101", time.time())
    yield daemon, write
    await daemon.stop()


async def test_reload_applies_routing_settings(pbx, reloadable):
    daemon, write = reloadable
    assert (await pbx.call("89161234567")).dials == [("SIP/101", "ANSWER")]
    assert (await pbx.call("89035550000")).status == "NOTFOUND"
    write(exceptions='"101"', default="102")
    assert await daemon.reload() == []
    assert (await pbx.call("89161234567")).dials == [("SIP/102", "ANSWER")]  # 101: exception
    assert (await pbx.call("89035550000")).dials == [("SIP/102", "ANSWER")]  # default number
    assert daemon.metrics.reloads.labels("applied")._value.get() == 1


async def test_invalid_file_is_refused_and_the_old_settings_stay(pbx, reloadable, tmp_path):
    daemon, _write = reloadable
    (tmp_path / "icm.toml").write_text("[routing]\nring_mobile = true\n")
    problems = await daemon.reload()
    assert problems == [
        f"{tmp_path / 'icm.toml'}: routing.ring_mobile: unknown key (did you mean 'ring_mobiles'?)"
    ]
    assert (await pbx.call("89161234567")).dials == [("SIP/101", "ANSWER")]
    assert daemon.metrics.reloads.labels("refused")._value.get() == 1


async def test_a_call_in_flight_finishes_with_the_settings_it_started_with(pbx, reloadable):
    daemon, write = reloadable
    use_sources(daemon, SlowSource(Answer(extension="101"), 0.2))
    in_flight = pbx.start_call("89161234567")
    await until(lambda: daemon.entry.in_flight == 1)
    write(exceptions='"101"')
    assert await daemon.reload() == []
    assert (await in_flight).dials == [("SIP/101", "ANSWER")]  # decided by the old router
    assert (await pbx.call("89161234567")).status == "NOTFOUND"  # the new one: exception


async def test_stopping_alone_sends_new_calls_back_at_once(pbx, reloadable):
    daemon, _ = reloadable
    use_sources(daemon, SlowSource(Answer(extension="101"), 0.2))
    in_flight = pbx.start_call("89161234567")
    await until(lambda: daemon.entry.in_flight == 1)
    stopping = asyncio.create_task(daemon.entry.drain(2))
    late = await pbx.call("89035550000")
    # Answered TIMEOUT at once: the dialplan did not wait its ICM_WAIT out.
    assert late.status == "TIMEOUT" and late.variables["WAITFORCONDITIONSTATUS"] == "TRUE"
    assert (await in_flight).status == "ANSWERED"  # the call in flight was finished
    await stopping


def test_the_process_reloads_on_sighup_and_stops_on_sigterm(pbx_process):
    daemon, pbx_call, _tmp_path = pbx_process
    assert pbx_call("89035550000").dials == [("SIP/102", "ANSWER")]
    text = daemon.config.read_text().replace('default_number = "102"', 'default_number = ""')
    daemon.config.write_text(text)
    daemon.signal(signal.SIGHUP)
    wait_for_log(daemon, "reloaded")
    assert pbx_call("89035550001").status == "NOTFOUND"
    daemon.config.write_text(text + "\n[oops]\n")
    daemon.signal(signal.SIGHUP)
    wait_for_log(daemon, "reload refused")
    assert "oops: unknown key" in daemon.logs()
    assert pbx_call("89035550002").status == "NOTFOUND"  # still the last good settings
    daemon.config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "icm", "reload", "-c", str(daemon.config)],
        capture_output=True,
        text=True,
        env={**os.environ, "ICM_AMI_SECRET": TEST_SECRET},
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "reloaded")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(5) == 0
    assert "ICM stopped" in daemon.logs()


def test_json_logs(pbx_process_json):
    daemon, pbx_call, _ = pbx_process_json
    pbx_call("89035550000")
    wait_for_log(daemon, "NOTFOUND")
    daemon.signal(signal.SIGTERM)
    daemon.wait(5)
    lines = [json.loads(line) for line in daemon.logs().splitlines() if line.strip()]
    decision = next(line for line in lines if line.get("status") == "NOTFOUND")
    assert decision["logger"] == "icm.decision" and decision["level"] == "INFO"
    assert decision["uniqueid"] and "lookup_ms" in decision and "total_ms" in decision
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)


def wait_for_log(daemon, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while text not in daemon.logs():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{daemon.logs()}"
        time.sleep(0.02)


def process_fixture(extra=""):
    @pytest.fixture
    def fixture(tmp_path):
        """A simulated PBX in a thread of its own, and a daemon process on it."""
        import threading

        from simpbx.pbx import FakeAsterisk

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()

        def run(coro):
            return asyncio.run_coroutine_threadsafe(coro, loop).result(15)

        async def make():
            fake = FakeAsterisk(auth_delay=0.05)
            await fake.start()
            fake.register("101", "102")
            return fake

        pbx = run(make())
        daemon = DaemonProcess(tmp_path, "icm", pbx.port, str(tmp_path / "icm.db"), extra)
        daemon.start()
        try:
            deadline = time.monotonic() + 20
            while "ICM_WAIT" not in pbx.globals:
                assert time.monotonic() < deadline, daemon.logs()
                time.sleep(0.02)
            yield daemon, lambda number: run(pbx.call(number)), tmp_path
        finally:
            daemon.kill()
            run(pbx.stop())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)

    return fixture


pbx_process = process_fixture()
pbx_process_json = process_fixture('[log]\nformat = "json"\n')


async def test_a_truncated_file_is_refused_on_reload_and_the_old_settings_stay(
    pbx, reloadable, tmp_path
):
    daemon, _write = reloadable
    (tmp_path / "icm.toml").write_text("")  # SIGHUP while the file is being rewritten
    [problem] = await daemon.reload()
    assert problem.startswith(f"{tmp_path / 'icm.toml'}: nobody to route to")
    assert (await pbx.call("89161234567")).dials == [("SIP/101", "ANSWER")]


def sighup_blocked(pid: int) -> bool:
    """Whether the process holds SIGHUP back (its blocked-signal mask, from /proc)."""
    try:
        status = open(f"/proc/{pid}/status").read()  # noqa: SIM115
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:"))
    return bool(int(mask, 16) & (1 << (signal.SIGHUP - 1)))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_a_sighup_while_the_process_starts_is_a_reload_not_its_death(tmp_path):
    """SIGHUP's default action ends a process; `icm run` imports its libraries for a third
    of a second before the daemon's handler exists. It holds SIGHUP back from its first
    line: a SIGHUP sent then is a reload once the daemon has started."""
    from simpbx.redis_server import free_port

    daemon = DaemonProcess(tmp_path, "icm", free_port(), str(tmp_path / "icm.db"))
    daemon.start()  # no Asterisk: the daemon starts all the same and keeps trying AMI
    try:
        assert daemon.process is not None
        pid = daemon.process.pid
        deadline = time.monotonic() + 10
        while not sighup_blocked(pid):
            assert daemon.process.poll() is None, daemon.logs()
            assert "starting" not in daemon.logs(), "SIGHUP was not held back from the start"
            assert time.monotonic() < deadline, daemon.logs()
            time.sleep(0.001)
        assert "starting" not in daemon.logs()  # still importing its libraries
        daemon.signal(signal.SIGHUP)
        wait_for_log(daemon, "reloaded", timeout=20)
        assert daemon.process.poll() is None
        assert not sighup_blocked(pid)  # let through once the handler was installed
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
        assert "ICM stopped" in daemon.logs()
    finally:
        daemon.kill()


async def test_a_call_in_flight_keeps_its_budget_through_a_reload(pbx, reloadable):
    """The budget shrinks from 500 to 100 ms while a call's lookup takes 200 ms: the call
    is answered by the budget it started with (by the new one, its answer would be late
    and dropped)."""
    daemon, _write = reloadable
    use_sources(daemon, SlowSource(Answer(extension="101"), 0.2))
    in_flight = pbx.start_call("89161234567")
    await until(lambda: daemon.entry.in_flight == 1)
    text = (daemon.config.path).read_text()
    daemon.config.path.write_text(text.replace("lookup_budget_ms = 500", "lookup_budget_ms = 100"))
    reload = asyncio.create_task(daemon.reload())
    call = await in_flight
    assert call.dials == [("SIP/101", "ANSWER")]
    assert daemon.metrics.answers_dropped.labels("late")._value.get() == 0
    assert await reload == []
    assert daemon.snapshot.timing.budget_s == 0.1


async def test_a_reload_asked_for_by_sighup_is_kept_until_it_ends(reloadable):
    daemon, _write = reloadable
    daemon._reload_in_background()
    (task,) = daemon._reloads
    assert await task == []
    assert not daemon._reloads
