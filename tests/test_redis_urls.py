"""The Redis store through the URLs an operator configures: Sentinel, a password from the
environment (never the URL)."""

import shutil
import subprocess
import time

import pytest

from icm.config import ConfigError, from_dict
from icm.store import StoreError
from icm.store.redis import RedisStore
from simpbx.redis_server import RedisServer, free_port


@pytest.fixture
def sentinel(redis_server, tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n"
    )
    process = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    yield port
    process.kill()
    process.wait(5)


async def test_store_through_sentinel(sentinel, redis_url):
    store = RedisStore(f"redis+sentinel://127.0.0.1:{sentinel}/mymaster/0")
    await store.open()
    await store.learn("+79161234567", "101", time.time())
    assert (await store.binding("+79161234567")).target == "101"
    await store.close()
    direct = RedisStore(redis_url)  # the same data, reached directly: Sentinel found the master
    await direct.open()
    assert (await direct.binding("+79161234567")).target == "101"
    await direct.close()


@pytest.fixture
def redis_with_password(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path, "--requirepass", "s3cret-redis")
    server.start()
    yield server
    server.stop()


async def test_password_from_the_environment(redis_with_password):
    url = redis_with_password.url
    config = from_dict(
        {"store": {"url": url}}, "x.toml", {"ICM_REDIS_PASSWORD": "s3cret-redis"}, ami_secret=False
    )
    store = config.store.open()
    await store.open()
    await store.ping()
    await store.close()
    unauthenticated = from_dict({"store": {"url": url}}, "x.toml", {}, ami_secret=False)
    store = unauthenticated.store.open()
    await store.open()
    with pytest.raises(StoreError, match=r"Redis needs a password") as failure:
        await store.ping()
    assert "s3cret" not in str(failure.value)
    await store.close()


def test_a_password_in_the_url_is_refused():
    with pytest.raises(ConfigError) as refused:
        from_dict(
            {"store": {"url": "redis://:hunter2@127.0.0.1:6379/0"}}, "x.toml", {}, ami_secret=False
        )
    [line] = refused.value.lines
    assert line.startswith("x.toml: store.url: the URL holds a password") and "hunter2" not in line
