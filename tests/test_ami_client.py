"""ICM's AMI client against a real TCP AMI server: login, actions, lists, and every fault
panoramisk 1.4 was measured to mishandle (see test_panoramisk_evidence.py)."""

import asyncio
import logging
import time

import pytest
from pydantic import SecretStr

from icm.ami.client import AmiActionError, AmiClient, AmiNotConnected, AmiTimeout
from icm.config import AmiSettings
from icm.metrics import Metrics
from simpbx.ami_server import AmiServer, AmiUser, frame

from .conftest import until

SECRET = "ami-s3cret-value"


class Pbx:
    """A minimal backend: two devices, one channel."""

    channels = {"SIP/trunk-00000001": {}}

    def setvar(self, channel, name, value):
        if channel is None:
            return True
        if channel not in self.channels:
            return False
        self.channels[channel][name] = value
        return True

    def getvar(self, channel, name):
        return self.channels.get(channel, {}).get(name)

    def device_states(self):
        return [("SIP/101", "NOT_INUSE"), ("SIP/102", "UNAVAILABLE")]

    def extension_states(self):
        return [("101", "ext-local", "SIP/101", 0)]


@pytest.fixture
async def server():
    srv = AmiServer(
        [AmiUser("icm", SECRET, frozenset({"call", "user"}), frozenset({"call"}))],
        Pbx(),
        auth_delay=0.05,
    )
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def connect(server):
    clients = []

    async def make(*, secret=SECRET, on_event=None, on_login=None, **settings):
        values = {
            "port": server.port,
            "keepalive_s": 0.2,
            "keepalive_timeout_s": 0.2,
            "reconnect_max_s": 0.3,
            "action_timeout_s": 0.5,
            **settings,
        }
        events = []
        client = AmiClient(
            AmiSettings(**values).model_copy(update={"secret": SecretStr(secret)}),
            on_event or events.append,
            on_login=on_login,
            metrics=Metrics(),
        )
        client.events = events
        client.start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def event(name, **headers):
    return frame([("Event", name), ("Privilege", "call,all"), *headers.items()])


async def test_login_action_list_and_events(server, connect):
    client = await connect()
    assert await client.wait_logged_in(2)
    response = await client.action(
        "Setvar", {"Channel": "SIP/trunk-00000001", "Variable": "X", "Value": "1"}
    )
    assert response.get("message") == "Variable Set"
    items = await client.list_action("DeviceStateList")
    assert [(m.get("device"), m.get("state")) for m in items] == [
        ("SIP/101", "NOT_INUSE"),
        ("SIP/102", "UNAVAILABLE"),
    ]
    server.send_raw(event("DeviceStateChange", Device="SIP/101", State="INUSE"))
    await until(lambda: client.events)
    assert client.events[0].get("state") == "INUSE"
    # List items answer the action; they are not dispatched as events.
    assert all(m.name == "DeviceStateChange" for m in client.events)
    assert len(client.events) == 1


async def test_error_responses_raise(connect):
    client = await connect()
    assert await client.wait_logged_in(2)
    with pytest.raises(AmiActionError, match="No such channel"):
        await client.action("Setvar", {"Channel": "SIP/gone-1", "Variable": "X", "Value": "1"})
    with pytest.raises(AmiActionError, match="Permission denied"):
        await client.action("Originate", {"Channel": "SIP/101", "Async": "true"})


async def test_handler_exception_loses_neither_the_link_nor_the_rest_of_the_read(server, connect):
    seen = []

    def handler(message):
        seen.append(message.get("n"))
        if message.get("n") == "1":
            raise RuntimeError("handler bug")

    client = await connect(on_event=handler)
    assert await client.wait_logged_in(2)
    server.send_raw(b"".join(event("Test", n=str(i)) for i in range(1, 4)))  # one TCP write
    await until(lambda: len(seen) == 3)
    assert seen == ["1", "2", "3"]
    assert client.logged_in and server.logins == 1
    assert client._metrics.handler_errors._value.get() == 1


async def test_utf8_character_split_across_two_reads_arrives_whole(server, connect):
    client = await connect()
    assert await client.wait_logged_in(2)
    data = event("Newchannel", CallerIDName="Иван Петров", Uniqueid="1")
    cut = data.index("Иван".encode()) + 1
    await server.send_split(data, cut)
    await until(lambda: client.events)
    assert client.events[0].get("calleridname") == "Иван Петров"


async def test_half_open_link_is_detected_and_reconnected(server, connect, caplog):
    logins = []

    async def on_login():
        logins.append(1)

    client = await connect(on_login=on_login)
    assert await client.wait_logged_in(2)
    server.freeze()  # the peer stops answering; TCP stays up
    await until(lambda: client._metrics.ami_reconnects._value.get() == 1, timeout=2)
    assert "did not answer a Ping" in caplog.text
    await until(lambda: server.logins == 2 and client.logged_in, timeout=3)
    await until(lambda: len(logins) == 2)


async def test_dropped_link_reconnects_and_logs_in_again(server, connect):
    client = await connect()
    assert await client.wait_logged_in(2)
    server.drop()
    await until(lambda: server.logins == 2 and client.logged_in, timeout=3)
    assert client._metrics.ami_reconnects._value.get() == 1


async def test_asterisk_restart_is_survived():
    srv = AmiServer([AmiUser("icm", SECRET)], Pbx(), auth_delay=0.05)
    await srv.start()
    port = srv.port
    client = AmiClient(
        AmiSettings(port=port, reconnect_max_s=0.3).model_copy(
            update={"secret": SecretStr(SECRET)}
        ),
        lambda m: None,
    )
    client.start()
    try:
        assert await client.wait_logged_in(2)
        await srv.stop()
        await until(lambda: not client.logged_in)
        await asyncio.sleep(0.5)  # refused connections meanwhile
        again = AmiServer([AmiUser("icm", SECRET)], Pbx(), auth_delay=0.05)
        await again.start(port=port)
        try:
            await until(lambda: client.logged_in, timeout=3)
        finally:
            await client.close()
            await again.stop()
    finally:
        await client.close()


async def test_wrong_secret_is_logged_with_user_and_host_never_the_secret(server, connect, caplog):
    caplog.set_level(logging.WARNING)
    client = await connect(secret="wrong-secret-value")
    await until(lambda: client._metrics.ami_login_failures._value.get() >= 2, timeout=3)
    assert not client.logged_in
    assert "refused the login of user 'icm': Authentication failed" in caplog.text
    assert f"127.0.0.1:{server.port}" in caplog.text
    assert "wrong-secret-value" not in caplog.text
    assert next(r.levelname for r in caplog.records if "refused" in r.message) == "ERROR"


async def test_close_leaves_no_reconnect_behind(server, connect):
    client = await connect()
    assert await client.wait_logged_in(2)
    await client.close()
    logins = server.logins
    await asyncio.sleep(1.0)  # several reconnect periods
    assert server.logins == logins and not server.sessions
    assert client._task.done()


async def test_actions_fail_fast_when_down_and_are_never_resent(server, connect):
    client = await connect()
    assert await client.wait_logged_in(2)
    server.freeze()
    pending = asyncio.create_task(
        client.action(
            "Setvar",
            {"Channel": "SIP/trunk-00000001", "Variable": "ICM_REPLY", "Value": "stale"},
            timeout=5,
        )
    )
    with pytest.raises(AmiNotConnected):  # the keepalive declares the link dead
        await pending
    if not client.logged_in:
        with pytest.raises(AmiNotConnected):
            await client.action("Ping")
    await until(lambda: client.logged_in, timeout=3)
    await asyncio.sleep(0.3)
    # It went into the dead link; it is not sent again on the new one.
    assert [h for _, h in server.actions if h.get("value") == "stale"] == []


async def test_action_timeout(server, connect):
    client = await connect(keepalive_s=60)
    assert await client.wait_logged_in(2)
    server.freeze()
    with pytest.raises(AmiTimeout):
        await client.action("Ping", timeout=0.2)


async def test_malformed_frames_are_skipped_and_logged_once(server, connect, caplog):
    client = await connect()
    assert await client.wait_logged_in(2)
    server.send_raw(b"garbage\r\n\r\n" * 50 + b"\xff\xfe\r\n\r\n" + event("Ok"))
    await until(lambda: client.events)
    assert [m.name for m in client.events] == ["Ok"]
    assert client._metrics.ami_bad_frames._value.get() == 51
    assert caplog.text.count("skipped a malformed frame") == 1
    assert client.logged_in


async def test_not_an_ami_server(connect):
    async def fake(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(fake, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    client = await connect(port=port)
    await asyncio.sleep(0.3)
    assert not client.logged_in
    srv.close()


async def test_a_bug_in_the_connection_loop_is_logged_and_survived(server, connect, caplog):
    client = await connect()
    assert await client.wait_logged_in(2)
    serve = client._serve
    calls = []

    async def broken_once(link):
        if not calls:
            calls.append(1)
            raise RuntimeError("a bug")
        await serve(link)

    client._serve = broken_once
    server.drop()  # the next connection hits the bug, the one after works
    await until(lambda: server.logins == 3 and client.logged_in, timeout=5)
    assert "the connection loop failed; starting over" in caplog.text


async def test_a_failed_resync_is_tried_again_on_the_same_link(server, connect, caplog):
    """A restarting Asterisk takes logins before its modules are loaded (seen on a real
    Asterisk 20: "Invalid/unknown command: DeviceStateList" for a moment): the login hook
    runs again until it succeeds, without a reconnect."""
    from icm.ami.client import AmiActionError

    calls = []

    async def on_login():
        calls.append(1)
        if len(calls) < 3:
            raise AmiActionError("Invalid/unknown command: DeviceStateList")

    client = await connect(on_login=on_login)
    assert await client.wait_logged_in(2)
    await until(lambda: len(calls) == 3, timeout=3)
    assert server.logins == 1
    assert caplog.text.count("resynchronisation after login failed") == 2


async def test_a_backlog_is_not_taken_for_a_dead_link(server, connect, caplog):
    """The daemon reads events more slowly than they come: its Ping's reply waits behind
    seconds of them. Bytes still arriving mean the link is alive: no reconnect, and not
    one event lost."""
    handled = []

    def slow(message):  # a daemon that handles one event per millisecond (or slower)
        time.sleep(0.001)
        handled.append(message.get("n"))

    client = await connect(on_event=slow)  # Ping every 0.2 s, given up after 0.2 s
    assert await client.wait_logged_in(2)
    count = 2000
    padding = "x" * 900  # ~1 KB an event: the backlog spans many reads of 256 KB
    backlog = b"".join(event("Test", n=str(i), Pad=padding) for i in range(count))
    sent = False

    def behind_the_ping(user, headers):
        nonlocal sent
        if headers.get("action", "").lower() == "ping" and not sent:
            sent = True
            server.send_raw(backlog)  # written before the Pong: it waits behind them

    server.on_action = behind_the_ping
    await until(lambda: len(handled) == count, timeout=60)
    assert handled == [str(i) for i in range(count)]
    assert server.logins == 1 and client.logged_in
    assert client._metrics.ami_reconnects._value.get() == 0
    assert "did not answer a Ping" not in caplog.text


# -- answers no task awaits (the AMI entry's Setvar: thousands may await at once) ---------


async def test_an_action_written_now_is_answered_and_leaves_nothing_pending(server, connect):
    client = await connect(keepalive_s=60)
    assert await client.wait_logged_in(2)
    headers = {"Channel": "SIP/trunk-00000001", "Variable": "ICM_REPLY", "Value": "1|DIAL"}
    sent = client.action_now("Setvar", headers)
    assert len(client._link.pending) == 1  # written, its answer awaited by no task
    assert (await sent).name == "Success"
    gone = client.action_now("Setvar", {**headers, "Channel": "SIP/gone-00000009"})
    with pytest.raises(AmiActionError):
        await gone
    assert client._link.pending == {}


async def test_an_action_written_now_fails_on_a_silent_link(server, connect):
    client = await connect(keepalive_s=60)
    assert await client.wait_logged_in(2)
    server.freeze()
    sent = client.action_now("Ping", {}, timeout=0.1)
    with pytest.raises(AmiTimeout):
        await sent
    assert client._link.pending == {}


async def test_an_action_written_now_waits_while_bytes_arrive_then_gives_up(server, connect):
    """Asterisk answers nothing but keeps sending events (a backlog): the answer is waited
    for past its timeout while bytes arrive, and given up after MAX_WAIT_TIMEOUTS of them."""
    from icm.ami.client import MAX_WAIT_TIMEOUTS

    client = await connect(keepalive_s=60)
    assert await client.wait_logged_in(2)
    server.freeze()  # no answers; the events below are written past the freeze
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = client.action_now("Ping", {}, timeout=0.1)

    async def backlog() -> None:
        n = 0
        while not sent.done():
            server.sessions[0].writer.write(event("Test", n=str(n)))
            n += 1
            await asyncio.sleep(0.02)

    streaming = asyncio.create_task(backlog())
    with pytest.raises(AmiTimeout):
        await sent
    await streaming
    # A timer never fires early: had silence been assumed, it would have failed at 0.1 s.
    assert loop.time() - started >= 0.1 * MAX_WAIT_TIMEOUTS
    assert len(client.events) >= MAX_WAIT_TIMEOUTS  # the events kept coming meanwhile
    assert client._link.pending == {} and client.logged_in
