"""Idle and half-sent connections (issue 13.2), against the real daemon process under a
low descriptor limit: they are capped and cut off, and AMI keeps working meanwhile."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import urllib.request

from simpbx.redis_server import free_port

from .conftest import TEST_SECRET, until
from .daemons import DaemonProcess

NOFILE = 300  # the daemon's descriptor limit here; it keeps 128 of them for itself
HOLDERS = 400  # more connections than the limit, each sending half a request


def low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def start_with_low_fd_limit(daemon: DaemonProcess) -> None:
    daemon.process = subprocess.Popen(
        [sys.executable, "-m", "icm", "run", "-c", str(daemon.config)],
        env={**os.environ, "ICM_AMI_SECRET": TEST_SECRET},
        stdout=daemon.log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=low_fd_limit,
    )


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def hold(port: int, first_bytes: bytes) -> socket.socket | None:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        sock.sendall(first_bytes)
    except OSError:
        return None
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(0)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def route(port: int) -> str:
    url = f"http://127.0.0.1:{port}/route?number=89161234567"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


async def test_half_sent_requests_cannot_exhaust_descriptors(pbx, tmp_path):
    pbx.register("101", "102")
    agi_port = free_port()
    daemon = DaemonProcess(
        tmp_path,
        "icm",
        pbx.port,
        str(tmp_path / "icm.db"),
        f'[agi]\nenabled = true\nlisten = "127.0.0.1:{agi_port}"',
    )
    start_with_low_fd_limit(daemon)
    held: list[socket.socket] = []
    try:
        await pbx.ami.wait_login(1, timeout=20)
        await until(lambda: "ICM_WAIT" in pbx.globals, timeout=10)
        pid = daemon.process.pid
        before = open_fds(pid)
        for i in range(HOLDERS):
            if i % 2:
                sock = hold(daemon.http_port, b"GET /route?number=8916 HTTP/1.1\r\nHost: x")
            else:
                sock = hold(agi_port, b"agi_network_script: route\n")
            if sock is not None:
                held.append(sock)
        await asyncio.sleep(0.5)
        assert open_fds(pid) < NOFILE - 64  # the reserve is intact
        # AMI routes calls, and a dropped AMI link logs in again.
        assert (await pbx.call("89161234567")).dials == [("SIP/102", "ANSWER")]
        pbx.globals.pop("ICM_WAIT", None)
        pbx.ami.drop()
        await pbx.ami.wait_login(2, timeout=20)
        await until(lambda: "ICM_WAIT" in pbx.globals, timeout=10)  # set again once in
        assert (await pbx.call("89161234567")).dials == [("SIP/102", "ANSWER")]
        # Half-sent requests are not waited for: every held connection is closed.
        await until(lambda: all(closed_by_peer(s) for s in held), timeout=40, step=0.5)
        assert (await asyncio.to_thread(route, daemon.http_port)).startswith("DIAL|SIP/102|")
        after = open_fds(pid)
        assert after <= before + 5, (before, after)
    finally:
        for sock in held:
            sock.close()
        daemon.kill()
    text = daemon.logs()
    assert "Traceback" not in text
    assert len(text.splitlines()) < 100, text[-3000:]


async def test_an_idle_keep_alive_connection_is_closed(pbx, tmp_path):
    daemon = DaemonProcess(tmp_path, "icm", pbx.port, str(tmp_path / "icm.db"))
    daemon.start()
    try:
        await pbx.ami.wait_login(1, timeout=20)
        with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            await until(lambda: closed_by_peer(sock), timeout=30, step=0.5)
    finally:
        daemon.kill()


def test_the_unit_raises_the_descriptor_limit():
    from pathlib import Path

    unit = Path(__file__).resolve().parent.parent / "config" / "systemd" / "icm.service"
    [line] = [
        x for x in unit.read_text(encoding="utf-8").splitlines() if x.startswith("LimitNOFILE=")
    ]
    assert int(line.partition("=")[2]) >= 4096 + 128
