"""The C library's string and number conversions as Asterisk's sources use them.

``sscanf("%30d")``, ``atoi``, ``strsep``, ``ast_strip``, ``ast_get_encoded_char`` and the
32-bit ``int`` truncation, on Python strings (bytes where C counts bytes)."""

from __future__ import annotations

import re

from simpbx.dialplan.errors import DialplanError

INT_MAX = 2**31 - 1
LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
C_SPACE = " \t\n\v\f\r"

_FLOAT_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
_HEXDIGITS = "0123456789ABCDEFabcdef"


def c_int(value: int) -> int:
    """``(int) some_long``: keep the low 32 bits, two's complement."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def scan_int(text: str, pos: int = 0, width: int = 30) -> tuple[int, int] | None:
    """glibc ``sscanf("%30d")`` at ``pos``: skip white space, optional sign, digits.

    Returns ``(value, position after the number)`` or ``None`` if no conversion."""
    n = len(text)
    while pos < n and text[pos] in C_SPACE:
        pos += 1
    start = pos
    end = min(n, start + width)
    if pos < end and text[pos] in "+-":
        pos += 1
    digits_start = pos
    while pos < end and text[pos].isdigit() and text[pos].isascii():
        pos += 1
    if pos == digits_start:
        return None
    value = int(text[start:pos])
    value = max(LONG_MIN, min(LONG_MAX, value))
    return c_int(value), pos


def atoi(text: str) -> int:
    """C ``atoi``: like ``%d`` without the width limit; 0 when nothing converts."""
    scanned = scan_int(text, 0, width=len(text) + 1)
    return scanned[0] if scanned else 0


def scan_int_whole(text: str) -> int | None:
    """``sscanf(s, "%30d%1s", &i, rest) == 1``: an integer and nothing but blanks after."""
    scanned = scan_int(text)
    if scanned is None:
        return None
    value, pos = scanned
    if text[pos:].strip(C_SPACE):
        return None
    return value


def scan_float(text: str) -> float | None:
    """``sscanf("%30lg")`` for decimal input (inf, nan and hex floats are refused)."""
    match = _FLOAT_RE.match(text)
    if match is None:
        if re.match(r"[ \t\n\v\f\r]*[+-]?(?:inf|nan|0x)", text, re.IGNORECASE):
            raise DialplanError(f"non-decimal number {text!r} is not supported")
        return None
    return float(match.group(1))


def ast_strip(text: str) -> str:
    """``ast_strip``: remove characters below 33 (blanks, controls) at both ends."""
    start, end = 0, len(text)
    while start < end and ord(text[start]) < 33:
        start += 1
    while end > start and ord(text[end - 1]) < 33:
        end -= 1
    return text[start:end]


def strsep(rest: str | None, delims: str) -> tuple[str | None, str | None]:
    """C ``strsep``: (token, rest); rest is None once the string is used up."""
    if rest is None:
        return None, None
    for index, char in enumerate(rest):
        if char in delims:
            return rest[:index], rest[index + 1 :]
    return rest, None


def to_bytes(text: str) -> bytes:
    """The C string behind ``text`` (UTF-8; undecodable bytes kept as surrogates)."""
    return text.encode("utf-8", "surrogateescape")


def from_bytes(data: bytes) -> str:
    """The inverse of :func:`to_bytes`."""
    return data.decode("utf-8", "surrogateescape")


def get_encoded_char(stream: str) -> tuple[str, int] | None:
    """``ast_get_encoded_char``: (character, characters consumed) or None on error."""
    if not stream:
        return None
    if stream[0] != "\\":
        return stream[0], 1
    nxt = stream[1:2]
    if nxt in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[nxt], 2
    if nxt == "x":
        return _hex_escape(stream)
    if nxt == "0":
        return _octal_escape(stream)
    return nxt, 2


def _hex_escape(stream: str) -> tuple[str, int] | None:
    """``\\xH`` or ``\\xHH`` at the start of ``stream``."""
    if not stream[2:3] or stream[2] not in _HEXDIGITS:
        return None
    if stream[3:4] and stream[3] in _HEXDIGITS:
        return chr(int(stream[2:4], 16)), 4
    return chr(int(stream[2], 16)), 3


def _octal_escape(stream: str) -> tuple[str, int]:
    """``\\0`` and the octal digits after it, at the start of ``stream``."""
    end = 2
    while end < len(stream) and stream[end] in "01234567":
        end += 1
    return chr(int(stream[2:end] or "0", 8) & 0xFF), end


def ast_true(value: str) -> bool:
    """``ast_true``: yes, true, y, t, 1 or on, in any case."""
    return value.lower() in {"yes", "true", "y", "t", "1", "on"}
