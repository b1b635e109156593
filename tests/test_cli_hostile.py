"""The CLI under bad input and broken stores (issues 13.13, 13.14, 13.15): one line and
a non-zero exit code, never a traceback, never a misleading answer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from icm.store import SqliteStore
from simpbx.redis_server import RedisServer, free_port


def write_config(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "icm.toml"
    path.write_text(
        f'[routing]\narea_code = "495"\n[managers.101]\nname = "Anna"\n[store]\nurl = "{store}"\n',
        encoding="utf-8",
    )
    return path


def icm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ICM_")}
    return subprocess.run(
        [sys.executable, "-m", "icm", *args],
        capture_output=True,
        text=True,
        env=environ | (env or {}),
        timeout=60,
    )


@pytest.fixture
def sqlite_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, str(tmp_path / "icm.db"))


@pytest.mark.parametrize("limit", ["99999999999999999999", "-1", "0", "abc", "\u0661\u0660"])
def test_bindings_limit_is_validated(sqlite_config, limit):
    done = icm("bindings", "--limit", limit, "-c", str(sqlite_config))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "--limit" in done.stderr.splitlines()[-1]


def test_a_store_path_that_is_a_directory_is_one_line(tmp_path):
    (tmp_path / "data").mkdir()
    config = write_config(tmp_path, str(tmp_path / "data"))
    done = icm("bindings", "-c", str(config))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{config}: store.url: {str(tmp_path / 'data')!r} is a directory "
        "(expected a database file path, e.g. /var/lib/icm/icm.db)"
    ]


async def test_notes_with_terminal_escapes_are_printed_escaped(sqlite_config, tmp_path):
    store = SqliteStore(tmp_path / "icm.db")
    await store.open()
    await store.pin("+74951234567", "101", "VIP\x1b[2J\x1b]0;owned\x07\nforged row")
    await store.close()
    done = icm("bindings", "-c", str(sqlite_config))
    assert done.returncode == 0
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    [line] = done.stdout.splitlines()
    assert line.endswith("VIP\\x1b[2J\\x1b]0;owned\\x07\\nforged row")


@pytest.mark.parametrize("number", ["", "+", "abc", "1" * 40, "anonymous"])
def test_lookup_refuses_what_is_not_a_number_like_bind(sqlite_config, number):
    looked = icm("lookup", number, "-c", str(sqlite_config))
    bound = icm("bind", number, "101", "-c", str(sqlite_config))
    assert (looked.returncode, bound.returncode) == (2, 2)
    assert looked.stdout == ""
    [line] = looked.stderr.splitlines()
    assert line == bound.stderr.strip()
    assert "is not a phone number" in line


def test_lookup_with_the_store_down_is_an_error(tmp_path):
    config = write_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    done = icm("lookup", "8 916 123-45-67", "-c", str(config))
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("icm: Redis store redis://127.0.0.1:")


@pytest.fixture
def redis_with_password(tmp_path: Path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path, "--requirepass", "s3cret-redis")
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("command", [["bindings"], ["lookup", "89161234567"]])
def test_redis_that_needs_a_password_says_so(tmp_path, redis_with_password, command):
    config = write_config(tmp_path, redis_with_password.url)
    done = icm(*command, "-c", str(config))
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert "Redis needs a password" in line and "ICM_REDIS_PASSWORD" in line
    assert "HELLO" not in line
    wrong = icm(*command, "-c", str(config), env={"ICM_REDIS_PASSWORD": "wrong"})
    assert wrong.returncode == 1
    assert "Redis refused the password" in wrong.stderr and "wrong" not in wrong.stderr
    right = icm("bindings", "-c", str(config), env={"ICM_REDIS_PASSWORD": "s3cret-redis"})
    assert right.returncode == 0, right.stderr
