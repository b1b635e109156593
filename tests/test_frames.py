"""AMI frames: cut on bytes, decoded whole, junk reported and skipped."""

from icm.ami.frames import FrameReader, parse, render

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
EVENT = (
    "Event: UserEvent\r\nPrivilege: user,all\r\nChannel: SIP/trunk-00000001\r\n"
    "CallerIDName: Иван Петров\r\nUniqueid: 1700000000.1\r\nUserEvent: ICMRoute\r\n"
    "ICMToken: 123\r\nChannel: body-dup\r\n\r\n"
).encode()


def test_banner_then_events():
    reader = FrameReader()
    messages = reader.feed(BANNER + EVENT)
    assert reader.banner == "Asterisk Call Manager/9.0.0"
    [event] = messages
    assert event.is_event and event.name == "UserEvent"
    assert event.get("callerid" + "name") == "Иван Петров"
    # A body key named like a snapshot header arrives twice: the first is the channel's.
    assert event.get("channel") == "SIP/trunk-00000001"
    assert event.getall("channel") == ["SIP/trunk-00000001", "body-dup"]


def test_every_split_point_gives_the_same_message():
    whole = FrameReader().feed(BANNER + EVENT)
    data = BANNER + EVENT
    for cut in range(1, len(data)):
        reader = FrameReader()
        got = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert [m.headers for m in got] == [m.headers for m in whole], cut
        assert not reader.bad


def test_utf8_character_split_across_reads_survives():
    data = BANNER + EVENT
    cut = data.index("Иван".encode()) + 1  # inside the two bytes of "И"
    reader = FrameReader()
    got = reader.feed(data[:cut]) + reader.feed(data[cut:])
    assert got[0].get("calleridname") == "Иван Петров"


def test_malformed_frames_are_reported_and_skipped():
    reader = FrameReader()
    got = reader.feed(
        BANNER
        + b"garbage without colon\r\n\r\n"
        + b"Foo: bar\r\n\r\n"
        + b"\xff\xfe: \xff\r\n\r\n"
        + b"Event: Hangup\r\nUniqueid: 1\r\n\r\n"
    )
    assert [m.name for m in got] == ["Hangup"]
    assert len(reader.bad) == 3


def test_a_frame_without_end_is_dropped_when_too_big():
    reader = FrameReader(max_frame=1000)
    reader.feed(BANNER + b"Event: X\r\nData: " + b"a" * 5000)
    assert reader.bad and "dropped" in reader.bad[0]
    assert [m.name for m in reader.feed(b"\r\n\r\nEvent: Ok\r\n\r\n")] == ["Ok"]


def test_empty_values_and_colons_in_values():
    message = parse(b"Response: Success\r\nActionID: 1\r\nMessage: \r\nValue: a:b: c")
    assert not isinstance(message, str)
    assert message.get("message") == "" and message.get("value") == "a:b: c"
    assert message.ok


def test_render_cannot_inject_headers():
    data = render({"Action": "Setvar", "Value": "x\r\nAction: Redirect"})
    assert data.count(b"\r\n") == 3
    assert b"Action: Redirect" not in data.split(b"\r\n")


def test_a_large_frame_in_small_pieces_is_not_rescanned():
    import time

    value = b"x" * 500_000
    data = BANNER + b"Event: Big\r\nData: " + value + b"\r\n\r\nEvent: Next\r\n\r\n"
    reader = FrameReader()
    started = time.perf_counter()
    got = []
    for i in range(0, len(data), 50):  # 10,000 reads
        got += reader.feed(data[i : i + 50])
    assert [m.name for m in got] == ["Big", "Next"] and got[0].get("data") == value.decode()
    assert time.perf_counter() - started < 2  # quadratic rescanning takes minutes
