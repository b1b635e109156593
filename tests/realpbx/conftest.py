"""Fixtures of the real-PBX tier: one Asterisk per channel technology for the session
(chan_sip and PJSIP), the observer AMI user, SIPp phones per test, ICM processes.

Every test here is marked ``realpbx``. Without an Asterisk at ``ICM_ASTERISK`` (default
/opt/asterisk) or without sipp, the whole tier is skipped with one line saying how to
get one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..crm_fakes import FakeAmoCrm
from .pbx import PREFIX, Asterisk, Icm, Phones, missing

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.realpbx)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip the tier where no Asterisk (or no sipp) is installed: one summary line."""
    reason = missing()
    if reason and HERE in Path(str(item.fspath)).parents:
        pytest.skip(reason)


def _technologies() -> list[Any]:
    return [pytest.param("sip", id="chan_sip"), pytest.param("pjsip", id="pjsip")]


@pytest.fixture(scope="session", params=_technologies())
def pbx(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Asterisk]:
    """The session's Asterisk for one channel technology (chan_sip is gone from
    Asterisk 21 on: that half is skipped where the module is missing)."""
    tech = request.param
    module = "chan_sip.so" if tech == "sip" else "chan_pjsip.so"
    if not (PREFIX / "lib" / "asterisk" / "modules" / module).exists():
        pytest.skip(f"{module} is not in {PREFIX}")
    asterisk = Asterisk(tmp_path_factory.mktemp(f"asterisk-{tech}"), tech)
    asterisk.start()
    yield asterisk
    asterisk.stop()


@pytest.fixture
def phones(pbx: Asterisk, tmp_path: Path) -> Iterator[Phones]:
    made = Phones(pbx, tmp_path)
    yield made
    made.stop_all()


@pytest.fixture
def daemons(pbx: Asterisk, tmp_path: Path) -> Iterator[list[Icm]]:
    """ICM processes a test starts itself (``daemons.append(Icm(...))``), stopped after."""
    started: list[Icm] = []
    yield started
    for daemon in started:
        daemon.stop()


class LoopThread:
    """An event loop in a thread of its own, for fakes that outlive a test's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, function: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(function, *args)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    made = LoopThread()
    yield made
    made.close()


@pytest.fixture(scope="session")
def amocrm(loop_thread: LoopThread) -> Iterator[FakeAmoCrm]:
    """A fake amoCRM over real HTTP (tests/crm_fakes.py) for the CRM-made statuses."""

    async def start() -> FakeAmoCrm:
        fake = FakeAmoCrm(rate_per_s=1000, ban_after=10**6)
        await fake.start()
        return fake

    fake = loop_thread.run(start())
    yield fake
    loop_thread.run(fake.stop())
