"""Hostile AMI input: the frame reader and the event handlers under random bytes, missing
and duplicated headers, huge values, non-UTF-8 and frames split at every byte; the
daemon under a flood of bad frames (each logged once, then rate-limited).

Property tests use Hypothesis (see tests/fuzzing.py to run them longer)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icm.ami.frames import FrameReader, Message, parse
from icm.config import from_dict
from icm.daemon import Daemon

from .conftest import SECRET_ENV, until
from .fuzzing import fuzz

BANNER = b"Asterisk Call Manager/9.0.0\r\n"

# -- strategies --------------------------------------------------------------------------

KEY = st.text(
    st.characters(
        whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="-_", max_codepoint=0x7F
    ),
    min_size=1,
    max_size=12,
)
# Values as Asterisk may send them: any text without CR/LF (Asterisk cannot send those in
# a value), including colons, leading/trailing spaces, Cyrillic and emoji.
VALUE = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40
)


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, str, list[tuple[str, str]]]:
    """One well-formed frame: (wire bytes, kind, headers after the first), with
    duplicated headers on purpose."""
    kind = draw(st.sampled_from(["Event", "Response"]))
    name = draw(VALUE.filter(lambda v: v == v.lstrip(" ") or v == ""))
    pairs = draw(st.lists(st.tuples(KEY, VALUE), max_size=8))
    if pairs and draw(st.booleans()):
        pairs.append(draw(st.sampled_from(pairs)))  # a repeated header (Variable:, Output:)
    text = f"{kind}: {name}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n"
    return text.encode("utf-8"), kind, [(kind, name), *pairs]


def expected(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key.strip().lower(), []).append(value)
    return out


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for point in [*points, len(data)]:
        out.append(data[last:point])
        last = point
    return out


# -- the frame reader --------------------------------------------------------------------


@fuzz(300)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=20))
def test_random_bytes_never_raise(data, cuts):
    reader = FrameReader(max_frame=512)
    for piece in chunks(BANNER + data, cuts):
        for message in reader.feed(piece):
            assert isinstance(message, Message) and isinstance(message.name, str)
        assert all(isinstance(reason, str) for reason in reader.bad)
        reader.bad.clear()
    assert len(reader._buffer) <= 512  # junk never piles up


@fuzz(200)
@given(st.lists(frames(), min_size=1, max_size=6), st.lists(st.integers(0, 4000), max_size=30))
def test_any_split_gives_the_same_messages_with_every_header(stream, cuts):
    data = BANNER + b"".join(raw for raw, _, _ in stream)
    reader = FrameReader()
    got = [m for piece in chunks(data, cuts) for m in reader.feed(piece)]
    assert reader.bad == []
    assert len(got) == len(stream)
    for message, (_, kind, pairs) in zip(got, stream, strict=True):
        assert message.is_event == (kind == "Event")
        assert message.name == pairs[0][1]
        for key, values in expected(pairs).items():
            assert message.getall(key) == values
            assert message.get(key) == values[0]


@fuzz(30)
@given(st.lists(frames(), min_size=1, max_size=3))
def test_frames_split_at_every_single_byte(stream):
    data = BANNER + b"".join(raw for raw, _, _ in stream)
    whole = [m.headers for m in FrameReader().feed(data)]
    reader = FrameReader()
    one_by_one = [m.headers for i in range(len(data)) for m in reader.feed(data[i : i + 1])]
    assert one_by_one == whole and reader.bad == []


@fuzz(200)
@given(
    frames(),
    st.sampled_from(
        [
            b"no colon at all\r\n\r\n",
            b"Foo: bar\r\nEvent: late\r\n\r\n",  # Event: not first
            b": empty key\r\n\r\n",
            b"Event\r\n\r\n",
            b"\xff\xfe\xfd: \xc3\x28\r\n\r\n",  # not UTF-8
            b"\r\n\r\n\r\n\r\n",  # empty frames
            b"Response: Success\r\nMessage: \xd0\r\n\r\n",  # a cut UTF-8 character
        ]
    ),
)
def test_a_bad_frame_is_reported_and_the_next_good_one_arrives(good, bad):
    raw, kind, pairs = good
    reader = FrameReader()
    got = reader.feed(BANNER + bad + raw + bad + raw)
    names = [m.name for m in got if m.name == pairs[0][1] and m.is_event == (kind == "Event")]
    assert len(names) >= 2  # both good frames survive whatever is around them
    assert len(reader.bad) <= 2


@fuzz(50)
@given(st.integers(1, 8), st.binary(min_size=1, max_size=50))
def test_huge_values_are_dropped_and_the_reader_recovers(megabytes_tenths, filler):
    reader = FrameReader(max_frame=64 * 1024)
    size = megabytes_tenths * 100_000
    filler = filler.replace(b"\r", b"") or b"x"  # no CR: the frame must never end
    huge = b"Event: Flood\r\nData: " + filler * (size // len(filler) + 1)
    got = []
    for i in range(0, len(huge), 65536):  # as TCP reads of 64 KiB would bring it
        got += reader.feed((BANNER if i == 0 else b"") + huge[i : i + 65536])
    got += reader.feed(b"\r\n\r\nEvent: Ok\r\nUniqueid: 1\r\n\r\n")
    assert [m.name for m in got if m.name == "Ok"] == ["Ok"]
    assert any("dropped" in reason for reason in reader.bad)
    assert len(reader._buffer) <= 64 * 1024


def test_non_utf8_bytes_in_values_are_replaced_not_fatal():
    message = parse(b"Event: Newchannel\r\nCallerIDName: \xd0\x98\xff\xd0\xb2\r\nUniqueid: 1")
    assert isinstance(message, Message)
    assert message.get("calleridname") == "И\ufffdв" and message.get("uniqueid") == "1"


# -- the event handlers --------------------------------------------------------------------

HANDLED = [
    "UserEvent",
    "DeviceStateChange",
    "ExtensionStatus",
    "DialBegin",
    "BridgeEnter",
    "BridgeLeave",
    "Hangup",
]
NUMBERISH = st.one_of(
    VALUE,
    st.sampled_from(
        ["", "<unknown>", "anonymous", "89161234567", "+79161234567", "101", "1234567"]
    ),
    st.from_regex(r"\A\+?[0-9 ()-]{0,20}\Z"),
)
TIMESTAMP = st.one_of(
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e400", "-1", "0", "abc", "1700000000.5"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    VALUE,
)
CHANNEL = st.one_of(
    st.sampled_from(["SIP/101-00000001", "SIP/102-0000000a", "SIP/trunk-00000002", "", "SIP/"]),
    st.from_regex(r"\ASIP/[0-9a-z]{0,4}-[0-9a-f]{0,8}\Z"),
    VALUE,
)
UNIQUEID = st.sampled_from(["1.1", "1.2", "1.3", "1.4", "", "x"])
HEADER_VALUES = {
    "channel": CHANNEL,
    "destchannel": CHANNEL,
    "uniqueid": UNIQUEID,
    "destuniqueid": UNIQUEID,
    "linkedid": UNIQUEID,
    "bridgeuniqueid": st.sampled_from(["b1", "b2", ""]),
    "calleridnum": NUMBERISH,
    "exten": NUMBERISH,
    "dialstring": NUMBERISH,
    "device": st.one_of(st.sampled_from(["SIP/101", "SIP/102", ""]), VALUE),
    "state": st.one_of(st.sampled_from(["NOT_INUSE", "INUSE", "UNAVAILABLE", "??"]), VALUE),
    "status": st.one_of(st.integers(-(2**70), 2**70).map(str), VALUE),
    "timestamp": TIMESTAMP,
    "userevent": st.sampled_from(["ICMRoute", "ICMResult", "Other", ""]),
    "icmtoken": st.one_of(st.from_regex(r"\A[0-9]{1,70}\Z"), VALUE),
    "icmnumber": NUMBERISH,
    "icmstatus": st.one_of(st.sampled_from(["ANSWERED", "BUSY", "ABANDONED"]), VALUE),
}


@st.composite
def events(draw: st.DrawFn) -> Message:
    name = draw(st.sampled_from(HANDLED))
    keys = draw(st.lists(st.sampled_from(sorted(HEADER_VALUES)), max_size=9, unique=True))
    headers = {"event": name, **{k: draw(HEADER_VALUES[k]) for k in keys}}
    extra = None
    if keys and draw(st.booleans()):  # a duplicated header (a UserEvent body key, say)
        key = draw(st.sampled_from(keys))
        extra = {key: [draw(HEADER_VALUES[key])]}
    return Message(True, name, headers, extra)


class LoggedInAmi:
    """Stands in for the AMI link of a daemon that is logged in: records Setvars."""

    logged_in = True

    def __init__(self) -> None:
        self.setvars: list[dict[str, str]] = []

    async def wait_logged_in(self, timeout: float) -> bool:
        return True

    async def action(self, name, headers=None, *, timeout=None):
        self.setvars.append(dict(headers or {}))
        return Message(False, "Success", {"response": "Success"})


def complete_call(n: int, at: float) -> list[Message]:
    """An inbound call answered by 101 that lasted 60 s (with Asterisk's timestamps)."""
    caller = {"channel": f"SIP/trunk-{n:08x}", "uniqueid": f"9.{n}", "calleridnum": "89031112233"}
    phone = {"channel": f"SIP/101-{n:08x}", "uniqueid": f"9.{n}.1", "calleridnum": "101"}

    def event(name: str, when: float, **headers: str) -> Message:
        all_headers = {"event": name, "timestamp": f"{when:.6f}", **headers}
        return Message(True, name, all_headers)

    bridge = f"call-{n}"
    return [
        event("BridgeEnter", at, bridgeuniqueid=bridge, **caller),
        event("BridgeEnter", at, bridgeuniqueid=bridge, **phone),
        event("BridgeLeave", at + 60, bridgeuniqueid=bridge, **phone),
        event("Hangup", at + 60, **phone),
        event("BridgeLeave", at + 60, bridgeuniqueid=bridge, **caller),
        event("Hangup", at + 60, **caller),
    ]


async def handle_all(tmp_path, messages: list[Message]) -> None:
    config = from_dict(
        {
            "routing": {"area_code": "495", "lookup_budget_ms": 200, "extensions": ["100-199"]},
            "sources": {"icmdb": {"min_talk_s": 0}},
            "store": {"url": str(tmp_path / f"fuzz-{time.monotonic_ns()}.db")},
            "http": {"enabled": False},
            # The simulated Asterisk's channel names are chan_sip's.
            "dial": {"extension": "SIP/{ext}", "external": "SIP/trunk/{number}"},
        },
        "fuzz.toml",
        SECRET_ENV,
    )
    daemon = Daemon(config)
    ami = LoggedInAmi()
    daemon.entry.ami = ami  # type: ignore[assignment]
    await daemon.store.open()
    assert daemon.learner is not None
    daemon.learner.start()
    try:
        for message in messages:
            daemon._on_event(message)
        # Whatever came before, a real call afterwards is still learned and routed.
        for message in complete_call(1, time.time() - 120):
            daemon._on_event(message)
        await until(lambda: daemon.learner.pending == 0, timeout=2)
        binding = await daemon.store.binding("+79031112233")
        assert binding is not None and binding.target == "101", binding
        assert math.isfinite(binding.at)
        await asyncio.gather(*daemon.entry._tasks)
        assert daemon.metrics.handler_errors._value.get() == 0
        for setvar in ami.setvars:  # every answer is one well-formed Setvar
            assert setvar["Variable"] == "ICM_REPLY" and setvar["Channel"]
            assert setvar["Value"].split("|", 1)[0].isdigit()
    finally:
        await daemon.learner.close()
        await daemon.store.close()


@st.composite
def hostile_calls(draw: st.DrawFn) -> list[Message]:
    """A whole answered call whose headers (timestamps, numbers) are hostile."""
    n = draw(st.integers(100, 10_000))
    call = complete_call(n, time.time() - 120)
    for message in call:
        if draw(st.booleans()):
            message.headers["timestamp"] = draw(TIMESTAMP)
        if draw(st.booleans()):
            message.headers["calleridnum"] = draw(NUMBERISH)
    return call


@fuzz(60)
@given(st.lists(st.one_of(events().map(lambda m: [m]), hostile_calls()), max_size=30))
def test_event_handlers_survive_any_headers(tmp_path, batches):
    asyncio.run(handle_all(tmp_path, [m for batch in batches for m in batch]))


@pytest.mark.parametrize("stamp", ["nan", "inf", "-inf", "1e400"])
def test_a_garbage_timestamp_neither_blocks_nor_poisons_learning(tmp_path, stamp):
    poisoned = complete_call(2, time.time() - 120)
    for message in poisoned:
        message.headers["timestamp"] = stamp
        message.headers["calleridnum"] = message.headers["calleridnum"].replace("111", "999")
    asyncio.run(handle_all(tmp_path, poisoned))


# -- the daemon under a flood ---------------------------------------------------------------


@pytest.fixture
async def icm(pbx, make_config, start_daemon):
    pbx.register("101")
    return await start_daemon(make_config(pbx.port))


def records(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


async def test_a_flood_of_bad_frames_is_logged_once_per_interval(pbx, icm, caplog):
    caplog.set_level(logging.DEBUG)
    icm.ami._bad_log._interval = 0.3  # the production interval is 10 s
    junk = [b"garbage\r\n\r\n", b"\xff\xfe\r\n\r\n", b"Foo: bar\r\n\r\n", b"Event\r\n\r\n"]
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 1.0:
        pbx.ami.send_raw(b"".join(junk) * 250)  # 1,000 bad frames a burst
        sent += 1000
        await asyncio.sleep(0.02)
    await until(lambda: icm.metrics.ami_bad_frames._value.get() == sent, timeout=5)
    elapsed = time.monotonic() - started
    logged = records(caplog, "skipped a malformed frame")
    assert 2 <= len(logged) <= 1 + elapsed / 0.3 + 1, len(logged)
    assert "similar messages suppressed" in logged[-1].getMessage()
    assert icm.ami.logged_in and pbx.ami.logins == 1  # the link never dropped


async def test_each_bad_request_and_failing_handler_is_logged_once(pbx, icm, caplog):
    caplog.set_level(logging.DEBUG)

    def broken(message):
        raise RuntimeError("a handler bug")

    icm._handlers["DeviceStateChange"] = [broken]
    for _ in range(2000):
        pbx.emit("DeviceStateChange", [("Device", "SIP/101"), ("State", "INUSE")])
        pbx.emit(
            "UserEvent", [("UserEvent", "ICMRoute"), ("ICMToken", "x"), ("Channel", "")], "user"
        )
    await until(lambda: icm.metrics.handler_errors._value.get() == 2000, timeout=5)
    await until(
        lambda: icm.metrics.answers_dropped.labels("malformed")._value.get() == 2000, timeout=5
    )
    assert len(records(caplog, "handler failed on AMI event DeviceStateChange")) == 1
    assert len(records(caplog, "ignored an ICMRoute event")) == 1
    assert icm.ami.logged_in and pbx.ami.logins == 1


async def test_a_flood_of_calls_while_the_store_is_down_is_logged_once(tmp_path, caplog):
    """The learner buffers what it cannot write; beyond its buffer it drops the oldest,
    counting each, logging once per interval (not once per call)."""
    from icm.calls import Conversation
    from icm.learner import Learner, LearnSettings
    from icm.managers import Manager, Managers
    from icm.numbers import Numbers
    from icm.store import SqliteStore

    caplog.set_level(logging.DEBUG)
    store = SqliteStore(tmp_path / "never-opened.db")  # every write fails: StoreError
    learner = Learner(
        LearnSettings(buffer=10, min_talk_s=0),
        store,
        lambda: SimpleNamespace(numbers=Numbers("RU", "495"), managers=Managers([Manager("101")])),
    )
    learner.start()
    now = time.time()
    for n in range(5000):
        talk = Conversation(f"+7916{n:07d}", "101", now - 60, now, outbound=False)
        learner.on_finished(f"1.{n}", [talk])
    await learner.close(flush_timeout=0.2)
    assert learner.dropped == 5000 - 10
    assert len(records(caplog, "learning buffer full")) == 1
