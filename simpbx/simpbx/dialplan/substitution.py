"""The text side of variable substitution (main/pbx_variables.c): where ``${...}`` and
``$[...]`` end, ``NAME:offset:length``, and the byte-based substring."""

from __future__ import annotations

from typing import NamedTuple

from simpbx.dialplan.clib import INT_MAX, from_bytes, scan_int, to_bytes

# The opening bracket after '$': (its closing bracket, the other kind's opening one).
_PAIRS = {"{": ("}", "["), "[": ("]", "{")}


class Braced(NamedTuple):
    """The body of a ``${...}`` or ``$[...]``, where the scan stopped, and what it saw."""

    body: str
    end: int  # position after the closing bracket (or the end of the text)
    closed: bool
    needsub: bool  # the body holds ${ or $[ itself: substitute it first


def scan_braced(text: str, start: int, opening: str) -> Braced:
    """The body from ``start`` (just after ``${`` or ``$[``, whose bracket is ``opening``)
    to its matching closing bracket, counted as ``pbx_substitute_variables_helper_full``
    counts them."""
    closing, other = _PAIRS[opening]
    end = start
    n = len(text)
    brackets = 1
    needsub = False
    while brackets and end < n:
        char = text[end]
        nxt = text[end + 1 : end + 2]
        if char == "$" and nxt == opening:
            needsub = True
            brackets += 1
            end += 1
        elif char == opening:
            brackets += 1
        elif char == closing:
            brackets -= 1
        elif char == "$" and nxt == other:
            needsub = True
            end += 1
        end += 1
    body = text[start:end] if brackets else text[start : end - 1]
    return Braced(body, end, not brackets, needsub)


def parse_variable_name(body: str) -> tuple[str, int, int, bool]:
    """``parse_variable_name``: (name, offset, length, is a function call)."""
    parens = 0
    isfunc = False
    for index, char in enumerate(body):
        if char == "(":
            isfunc = True
            parens += 1
        elif char == ")":
            parens -= 1
        elif char == ":" and parens == 0:
            offset, length = _offset_length(body[index + 1 :])
            return body[:index], offset, length, isfunc
    return body, 0, INT_MAX, isfunc


def _offset_length(rest: str) -> tuple[int, int]:
    """``offset[:length]`` after a variable name's colon."""
    offset, length = 0, INT_MAX
    first = scan_int(rest)
    if first is not None:
        offset = first[0]
        if rest[first[1] : first[1] + 1] == ":":
            second = scan_int(rest, first[1] + 1)
            if second is not None:
                length = second[0]
    return offset, length


def substring(value: str, offset: int, length: int) -> str:
    """``ast_str_substring`` (byte based, like the C string)."""
    data = to_bytes(value)
    size = len(data)
    if offset == 0 and length >= size:
        return value
    if offset < 0:
        offset = max(0, size + offset)
    if offset >= size:
        return ""
    data = data[offset:]
    size -= offset
    if 0 <= length < size:
        data = data[:length]
    elif length < 0:
        data = data[: size + length] if size > -length else b""
    return from_bytes(data)
