"""Why ICM does not use panoramisk 1.4's AMI Manager: each defect measured here, against
the same AMI server ICM's own client is tested with (tests/test_ami_client.py shows ICM's
client handling every one of these cases). If a panoramisk release fixes one, its test
here fails: time to reconsider the dependency (README, "Dependencies").

panoramisk stays installed for its FastAGI server.
"""

import asyncio
import logging

import pytest
from panoramisk import Manager

from simpbx.ami_server import AmiServer, AmiUser, frame

from .conftest import until

SECRET = "evidence-secret"


class Pbx:
    def setvar(self, channel, name, value):
        return True

    def getvar(self, channel, name):
        return ""

    def device_states(self):
        return []

    def extension_states(self):
        return []


async def make_server(read=frozenset({"call", "user"}), write=frozenset({"call"})):
    server = AmiServer([AmiUser("icm", SECRET, read, write)], Pbx(), auth_delay=0.05)
    await server.start()
    return server


def manager(server, **config):
    values = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": "icm",
        "secret": SECRET,
        "ping_delay": 1,
        "ping_interval": 1,
        "reconnect_timeout": 1,
        **config,
    }
    return Manager(loop=asyncio.get_running_loop(), **values)


@pytest.fixture
async def server():
    srv = await make_server()
    yield srv
    await srv.stop()


@pytest.fixture
async def managers():
    made = []
    yield made
    for m in made:
        m.close()
        # A reconnect may still be scheduled (defect 4): give it nothing to reach.
        m.connect = lambda *a, **k: None


async def started(server, made, **config):
    m = manager(server, **config)
    made.append(m)
    await m.connect()
    await until(lambda: server.logins >= 1, timeout=3)
    return m


def event(name, **headers):
    return frame([("Event", name), ("Privilege", "call,all"), *headers.items()])


async def test_1_callback_exception_drops_the_link_and_the_rest_of_the_read(server, managers):
    seen = []

    def callback(manager, message):
        seen.append(message.n)
        if message.n == "1":
            raise RuntimeError("handler bug")

    m = await started(server, managers, reconnect_timeout=60)
    m.register_event("Test", callback)
    server.send_raw(b"".join(event("Test", n=str(i)) for i in (1, 2, 3)))
    await asyncio.sleep(0.3)
    assert seen == ["1"]  # events 2 and 3 of the same read are lost
    assert server.sessions == []  # and the connection is gone


async def test_2_utf8_character_split_across_reads_is_dropped(server, managers):
    names = []
    m = await started(server, managers)
    m.register_event("Newchannel", lambda manager, message: names.append(message.calleridname))
    data = event("Newchannel", CallerIDName="Иван Петров")
    await server.send_split(data, data.index("Иван".encode()) + 1)
    await until(lambda: names)
    assert names == ["ван Петров"]  # the split "И" vanished


async def test_3_half_open_link_is_never_noticed(server, managers):
    m = await started(server, managers)
    server.freeze()  # nothing answers any more, the TCP connection stays up
    await asyncio.sleep(3.5)  # three ping intervals
    assert m._connected and server.logins == 1  # still believes it is connected


async def test_4_close_leaves_a_reconnect_scheduled(server):
    m = manager(server, reconnect_timeout=1)
    await m.connect()
    await until(lambda: server.logins == 1)
    server.drop()
    await asyncio.sleep(0.1)
    m.close()  # the application asks to stop...
    await asyncio.sleep(1.5)
    assert server.logins == 2  # ...and it logs in again anyway
    m.close()
    m.connect = lambda *a, **k: None


async def test_5_wrong_secret_retries_without_saying_the_login_failed(server, managers, caplog):
    caplog.set_level(logging.INFO, logger="panoramisk")
    m = manager(server, secret="wrong", reconnect_timeout=1)
    managers.append(m)
    await m.connect()
    await asyncio.sleep(2.5)
    attempts = [h for _, h in server.actions if h.get("action", "").lower() == "login"]
    assert len(attempts) >= 2 and server.logins == 0
    # It logs "Connection lost" each time; no line at INFO or above says why.
    assert "Connection lost" in caplog.text
    assert not [r for r in caplog.records if "auth" in r.getMessage().lower()]


async def test_6_unanswered_actions_hang_forever_without_system_events(server, managers):
    m = await started(server, managers)
    server.freeze()
    future = m.send_action(
        {"Action": "Setvar", "Channel": "SIP/x-1", "Variable": "ICM_REPLY", "Value": "stale"}
    )
    server.drop()  # the link dies with the action unanswered
    await until(lambda: server.logins == 2, timeout=3)  # reconnected; no FullyBooted follows
    await asyncio.sleep(0.5)
    assert not future.done()  # the caller of send_action waits forever


async def test_6b_and_with_system_events_a_stale_setvar_is_resent():
    server = await make_server(read=frozenset({"call", "user", "system"}))
    try:
        m = manager(server)
        await m.connect()
        await until(lambda: server.logins == 1)
        server.freeze()
        m.send_action(
            {"Action": "Setvar", "Channel": "SIP/x-1", "Variable": "ICM_REPLY", "Value": "stale"}
        )
        server.drop()
        await until(lambda: server.logins == 2, timeout=3)
        await asyncio.sleep(0.3)
        resent = [h for _, h in server.actions if h.get("value") == "stale"]
        assert resent  # an answer for an old request reaches the new connection
        m.close()
        m.connect = lambda *a, **k: None
    finally:
        await server.stop()


async def test_7_originate_without_async_breaks_the_connection(managers):
    server = await make_server(write=frozenset({"call", "originate"}))
    try:
        await started(server, managers, reconnect_timeout=60)
        managers[-1].send_action({"Action": "Originate", "Channel": "SIP/101", "Exten": "1"})
        await asyncio.sleep(0.3)
        assert server.sessions == []  # KeyError('async') inside data_received
    finally:
        await server.stop()


FAST_AGI_FREEZE = """
import asyncio, sys
from panoramisk.fast_agi import Application

async def main():
    app = Application(loop=asyncio.get_running_loop())
    server = await asyncio.start_server(app.handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()  # a port scan, a health check, an Asterisk that gave up
    await asyncio.sleep(0.3)
    print("alive", flush=True)  # never printed: the handler spins on b"" and never yields

asyncio.run(main())
"""


def test_8_fast_agi_freezes_the_event_loop_on_a_connection_closed_early():
    import subprocess
    import sys

    with pytest.raises(subprocess.TimeoutExpired) as frozen:
        subprocess.run(
            [sys.executable, "-c", FAST_AGI_FREEZE], capture_output=True, timeout=3, check=False
        )
    assert b"alive" not in (frozen.value.stdout or b"")
