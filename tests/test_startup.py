"""Start-up failures (issue 13.1): a daemon that cannot start every part exits, non-zero
and with one line naming what failed, instead of living on with a half-open HTTP side."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simpbx.redis_server import free_port

from .conftest import TEST_SECRET

EXIT_WITHIN_S = 15  # generous for a busy machine; the daemon gives up within ~3 s


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process (here: the test) already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def run_icm(tmp_path: Path, sections: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    config = tmp_path / "icm.toml"
    config.write_text(
        f"""
[ami]
port = {free_port()}
[managers.101]
name = "Anna"
[store]
url = "{tmp_path / "icm.db"}"
{sections}
""",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "icm", "run", "-c", str(config)],
        env={**os.environ, "ICM_AMI_SECRET": TEST_SECRET},
        capture_output=True,
        text=True,
        timeout=EXIT_WITHIN_S,
    )
    return done, config


def problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line or "Traceback" in line]


def test_http_port_in_use_exits_non_zero_with_one_line(tmp_path, held_port):
    done, _ = run_icm(tmp_path, f'[http]\nlisten = "127.0.0.1:{held_port}"')
    assert done.returncode == 1
    [line] = problems(done.stderr)
    assert f"cannot start: [http] listen = '127.0.0.1:{held_port}'" in line
    assert "address already in use" in line.lower()


def test_agi_port_in_use_exits_and_releases_the_http_port(tmp_path, held_port):
    http_port = free_port()
    done, _ = run_icm(
        tmp_path,
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
        f'[agi]\nenabled = true\nlisten = "127.0.0.1:{held_port}"',
    )
    assert done.returncode == 1
    [line] = problems(done.stderr)
    assert f"cannot start: [agi] listen = '127.0.0.1:{held_port}'" in line
    # Nothing is left accepting connections it will never answer.
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", http_port)):
        pass


def test_unusable_store_exits_non_zero_with_one_line(tmp_path):
    (tmp_path / "icm.db").mkdir()  # the SQLite path is a directory
    done, _ = run_icm(tmp_path, '[http]\nlisten = "127.0.0.1:0"')
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2, done.stderr
