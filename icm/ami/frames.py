"""AMI wire format: bytes in, messages out; actions out as bytes.

Frames are cut on bytes (``\\r\\n\\r\\n``) before any decoding, so a UTF-8 character split
across two TCP reads is decoded whole (panoramisk 1.4 decodes each read on its own and
drops it). A frame that is not AMI (no ``Event:``/``Response:`` first, or larger than
``max_frame``) is reported through :attr:`FrameReader.bad` and skipped; nothing raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

BANNER_PREFIX = b"Asterisk Call Manager/"
_EOF = b"\r\n\r\n"


class Message:
    """One AMI event or response. Header names are lower-cased; the first value of a
    repeated header is in :meth:`get`, all of them in :meth:`getall`."""

    __slots__ = ("_extra", "headers", "is_event", "name")

    def __init__(
        self,
        is_event: bool,
        name: str,
        headers: dict[str, str],
        extra: dict[str, list[str]] | None = None,
    ) -> None:
        self.is_event = is_event
        self.name = name
        self.headers = headers
        self._extra = extra

    def get(self, key: str, default: str = "") -> str:
        return self.headers.get(key, default)

    def getall(self, key: str) -> list[str]:
        first = self.headers.get(key)
        if first is None:
            return []
        return [first, *(self._extra or {}).get(key, ())]

    @property
    def action_id(self) -> str:
        return self.headers.get("actionid", "")

    @property
    def ok(self) -> bool:
        return self.is_event or self.name.lower() in ("success", "follows", "goodbye")

    def __repr__(self) -> str:
        kind = "Event" if self.is_event else "Response"
        return f"<{kind} {self.name} {self.headers!r}>"


def parse(raw: bytes) -> Message | str:
    """One frame (without its terminating blank line) as a Message, or why it is not one."""
    text = raw.decode("utf-8", "replace")
    lines = text.split("\r\n")
    headers: dict[str, str] = {}
    extra: dict[str, list[str]] | None = None
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep:
            if line.strip():
                return f"line without ':' ({line[:40]!r})"
            continue
        key = key.strip().lower()
        if value[:1] == " ":
            value = value[1:]
        if key in headers:
            if extra is None:
                extra = {}
            extra.setdefault(key, []).append(value)
        else:
            headers[key] = value
    first = lines[0].partition(":")[0].strip().lower() if lines else ""
    if first == "event":
        return Message(True, headers["event"], headers, extra)
    if first == "response":
        return Message(False, headers["response"], headers, extra)
    return f"frame starts with {lines[0][:40]!r}, not Event: or Response:"


class FrameReader:
    """Incremental reader: :meth:`feed` bytes as they arrive, get whole messages back.

    :param max_frame: bytes a frame may grow to before it is dropped as garbage.
    """

    def __init__(self, max_frame: int = 1 << 20) -> None:
        self.max_frame = max_frame
        self.banner: str | None = None
        self.bad: list[str] = []
        self._buffer = b""

    def feed(self, data: bytes) -> list[Message]:
        if self._buffer and self.banner is not None and _EOF not in self._buffer[-3:] + data:
            # Still inside one frame: append without rescanning what was already searched
            # (a large frame arriving in small pieces would cost quadratic time).
            self._buffer = self._bounded(self._buffer + data)
            return []
        buffer = self._buffer + data if self._buffer else data
        if self.banner is None:
            end = buffer.find(b"\r\n")
            if end < 0:
                self._buffer = self._bounded(buffer)
                return []
            self.banner = buffer[:end].decode("utf-8", "replace")
            buffer = buffer[end + 2 :]
        frames = buffer.split(_EOF)
        self._buffer = self._bounded(frames.pop())
        messages = []
        for raw in frames:
            raw = raw.lstrip(b"\r\n")
            if not raw:
                continue
            message = parse(raw)
            if isinstance(message, str):
                self.bad.append(message)
            else:
                messages.append(message)
        return messages

    def _bounded(self, rest: bytes) -> bytes:
        if len(rest) <= self.max_frame:
            return rest
        self.bad.append(f"frame over {self.max_frame} bytes without an end, dropped")
        return b""


def render(headers: Mapping[str, str | Iterable[str]]) -> bytes:
    """An action (or, in the test server, an event) as wire bytes. A value that is a list
    gives one line per item (``Variable:`` headers). CR/LF inside values are replaced by
    spaces so that a value can never inject a header."""
    out = []
    for key, value in headers.items():
        values = [value] if isinstance(value, str) else value
        for item in values:
            clean = item.replace("\r", " ").replace("\n", " ")
            out.append(f"{key}: {clean}\r\n")
    out.append("\r\n")
    return "".join(out).encode("utf-8")
