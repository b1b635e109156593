"""Shared by the benchmarks: a daemon in its own process against the simulated Asterisk.

Every bench imports it first: it puts this working tree's ``simpbx/`` ahead of the copy
the test extra installed, so a bench runs the simulator as it is in the tree."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "simpbx"))

from simpbx.ami_server import AmiUser  # noqa: E402
from simpbx.pbx import FakeAsterisk, asterisk_file  # noqa: E402

SECRET = "bench-secret"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies_ms, 0.50), 3),
        "p99_ms": round(percentile(latencies_ms, 0.99), 3),
        "p999_ms": round(percentile(latencies_ms, 0.999), 3),
        "mean_ms": round(statistics.fmean(latencies_ms), 3) if latencies_ms else float("nan"),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape(port: int) -> dict[str, float]:
    """The daemon's /metrics as {sample name with labels: value}."""
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def write_config(
    tmp: Path, ami_port: int, *, http_port: int = 0, store: str | None = None, extra: str = ""
) -> Path:
    config = tmp / "icm.toml"
    config.write_text(
        f"""
[ami]
port = {ami_port}
secret_env = "ICM_BENCH_SECRET"
[routing]
area_code = "495"
lookup_budget_ms = 1500
extensions = ["100-199"]
[store]
url = "{store or tmp / "icm.db"}"
[http]
listen = "127.0.0.1:{http_port}"
[log]
level = "warning"
# The simulated Asterisk names its phones the chan_sip way.
[dial]
extension = "SIP/{{ext}}"
external = "SIP/trunk/{{number}}"
{extra}
""",
        encoding="utf-8",
    )
    return config


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ICM_BENCH_SECRET": SECRET}
    return subprocess.Popen(
        [sys.executable, "-m", "icm", "run", "-c", str(config)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=config.parent,
    )


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def report(result: dict[str, object]) -> None:
    print(json.dumps(result))


def tempdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="icm-bench-")


async def wait_for(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def at_fraction(samples: list[tuple[float, float]], value: float) -> float:
    """When a growing counter, sampled as (time, count), reached ``value`` (linear
    interpolation between the samples around it)."""
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if c0 <= value <= c1:
            return t0 if c1 == c0 else t0 + (t1 - t0) * (value - c0) / (c1 - c0)
    raise ValueError(f"the counter never reached {value}")


def machine() -> str:
    """One line on where a figure was measured."""
    import platform

    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def attach_py_spy(pid: int, output: str) -> subprocess.Popen[bytes]:
    """Sample a running process with py-spy until it exits; ``output`` gets a flame graph
    (``.svg``), a speedscope profile (``.json``) or collapsed stacks (``.txt``, one line a
    stack with its sample count: grep and sort them). Stop the process, then wait for
    this."""
    py_spy = Path(sys.executable).with_name("py-spy")
    command = [str(py_spy) if py_spy.exists() else "py-spy", "record", "--pid", str(pid)]
    fmt = {".json": "speedscope", ".txt": "raw"}.get(Path(output).suffix, "flamegraph")
    return subprocess.Popen(
        [*command, "--output", output, "--format", fmt, "--rate", "200", "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def fd_targets(pid: int) -> list[str]:
    """What each open file descriptor of a process points at (sockets, files, pipes)."""
    targets = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return targets


def learned_number(i: int) -> str:
    """The ``i``-th caller a bench seeds as learned (dialled as ``8903...`` by the PBX)."""
    return f"+7903{i:07d}"


async def seed_learned(url: str, count: int, managers: list[str]) -> None:
    """``count`` learned callers (:func:`learned_number`), spread over ``managers``, in
    the store at ``url`` (a SQLite path or a Redis URL), before the daemon starts."""
    from icm.store import open_store

    store = open_store(url)
    await store.open()
    try:
        now = time.time()
        await store.learn_many(
            [(learned_number(i), managers[i % len(managers)], now, "bench") for i in range(count)]
        )
    finally:
        await store.close()


def forget_actions(server: Any) -> None:
    """Empty the simulated AMI server's records of the actions it received (tests read
    them; a bench would only pile up hundreds of thousands, and the GC pauses of this
    process would show as the daemon's latency)."""
    server.actions.clear()
    for session in server.sessions:
        session.received.clear()


async def start_pbx(*managers: str) -> FakeAsterisk:
    """The simulated Asterisk, with the shipped AMI user (the bench's secret) and these
    managers' phones registered."""
    pbx = FakeAsterisk(
        users=[AmiUser.from_manager_conf(asterisk_file("manager_icm.conf"), "icm", secret=SECRET)]
    )
    await pbx.start()
    if managers:
        pbx.register(*managers)
    return pbx


class Answers:
    """Times each routing request from the moment it is written to the arrival of its
    ``Setvar ICM_REPLY`` (the first one), and counts the statuses answered. Keeps little
    per request (the bench process's own GC pauses would show as latency), unless
    ``per_token`` is asked for: then every answer of every token is counted too.
    """

    def __init__(self, pbx: FakeAsterisk, *, per_token: bool = False) -> None:
        self.pbx = pbx
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.answered: dict[str, float] = {}  # token -> latency, only with per_token
        self.per_token: Counter[str] | None = Counter() if per_token else None
        self.statuses: Counter[str] = Counter()
        pbx.ami.on_action = self._on_action

    def send(self, token: str, data: bytes) -> None:
        self.sent[token] = time.perf_counter()
        self.pbx.ami.send_raw(data)

    def _on_action(self, user: str, headers: dict[str, str]) -> None:
        if headers.get("action", "").lower() != "setvar" or not headers.get("channel"):
            return
        token, _, rest = headers.get("value", "").partition("|")
        if self.per_token is not None:
            self.per_token[token] += 1
        started = self.sent.pop(token, None)
        if started is not None:
            latency = (time.perf_counter() - started) * 1000
            self.latencies.append(latency)
            self.statuses[rest.partition("|")[0]] += 1
            if self.per_token is not None:
                self.answered[token] = latency
