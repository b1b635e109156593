"""Daemons in processes of their own (`python -m icm run`), for tests that kill them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from simpbx.redis_server import free_port

from .conftest import TEST_SECRET


class DaemonProcess:
    def __init__(
        self,
        tmp: Path,
        name: str,
        ami_port: int,
        store: str,
        extra: str = "",
        *,
        budget_ms: int = 500,
    ) -> None:
        self.http_port = free_port()
        self.config = tmp / f"{name}.toml"
        self.log = tmp / f"{name}.log"
        self.config.write_text(
            f"""
[ami]
port = {ami_port}
keepalive_s = 0.5
keepalive_timeout_s = 0.5
reconnect_max_s = 1.0
[routing]
area_code = "495"
lookup_budget_ms = {budget_ms}
dial_timeout_s = 3
default_number = "102"
[managers.101]
name = "Anna"
[managers.102]
name = "Boris"
[sources.icmdb]
min_talk_s = 0.01
[store]
url = "{store}"
[http]
listen = "127.0.0.1:{self.http_port}"
[dial]
extension = "SIP/{{ext}}"
external = "SIP/trunk/{{number}}"
{extra}
""",
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "ICM_AMI_SECRET": TEST_SECRET}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "icm", "run", "-c", str(self.config)],
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` carrying ``labels``."""
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        total = 0.0
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample.split("{")[0] == name and all(w in sample for w in wanted):
                total += float(value)
        return total

    def logs(self) -> str:
        return self.log.read_text(errors="replace")
