"""Files the daemon creates (issue 13.12): the SQLite database holds OAuth tokens, so it
and its -wal and -shm files are readable by their owner only, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from icm.store import SqliteStore, StoreError


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_database_files_are_created_owner_only_under_umask_022(tmp_path, umask_022):
    path = tmp_path / "data" / "icm.db"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.set("oauth:amocrm", "a token", None)
        await store.learn("+74951234567", "101", 1.0)
        for name in ("icm.db", "icm.db-wal", "icm.db-shm"):
            mode = stat.S_IMODE((path.parent / name).stat().st_mode)
            assert mode == 0o600, f"{name} is {oct(mode)}"
    finally:
        await store.close()


@pytest.mark.parametrize("where", ["directory", "/proc/self/status"])
async def test_a_path_that_cannot_hold_a_database_is_one_error(tmp_path, where):
    path = tmp_path if where == "directory" else where
    store = SqliteStore(path)
    with pytest.raises(StoreError, match="cannot open SQLite store"):
        await store.open()


def test_the_container_runs_with_an_owner_only_umask():
    text = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text(encoding="utf-8")
    [entrypoint] = [line for line in text.splitlines() if line.startswith("ENTRYPOINT")]
    assert "umask 077 && exec icm" in entrypoint
