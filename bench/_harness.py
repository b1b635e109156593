"""Shared by the benchmarks: a daemon in its own process against the simulated Asterisk."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
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
