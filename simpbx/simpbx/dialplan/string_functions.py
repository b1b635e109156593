"""The dialplan functions that only compute on their arguments: CUT's fields, FILTER, IF,
RAND's bounds (funcs/func_cut.c, func_strings.c, func_logic.c, func_rand.c).

Each takes a ``warn`` callable for what Asterisk would log at WARNING level."""

from __future__ import annotations

import random
from collections.abc import Callable

from simpbx.dialplan.args import check_condition, separate_args
from simpbx.dialplan.clib import (
    INT_MAX,
    ast_strip,
    from_bytes,
    get_encoded_char,
    scan_int,
    strsep,
    to_bytes,
)

Warn = Callable[[str], None]


def cut_fields(value: str, delim: str, spec: str, warn: Warn) -> str | None:
    """CUT's result: the fields of ``value`` (split at ``delim``) that ``spec`` names
    (``N``, ``N-M``, ``-M``, ``N-``, joined by ``&``); None on a bad range."""
    rest: str | None = value
    ranges: str | None = spec
    field_no = 1
    out: list[str] = []
    while rest is not None and ranges is not None:
        next_range, ranges = strsep(ranges, "&")
        assert next_range is not None
        bounds = _cut_range(next_range)
        if bounds is None:
            warn("Usage: CUT(<varname>,<char-delim>,<range-spec>)")
            return None
        start, stop = bounds
        while rest is not None and field_no < start:
            _, rest = strsep(rest, delim)
            field_no += 1
        if field_no > start:
            warn("We're already past the field you wanted?")
        while rest is not None and field_no <= stop:
            token, rest = strsep(rest, delim)
            out.append(token or "")
            field_no += 1
    return delim.join(out)


def _cut_range(text: str) -> tuple[int, int] | None:
    first = scan_int(text)
    if first is not None and text[first[1] : first[1] + 1] == "-":
        second = scan_int(text, first[1] + 1)
        if second is not None:
            return first[0], second[0]
    if text.startswith("-"):
        second = scan_int(text, 1)
        if second is not None:
            return 1, second[0]
    if first is not None:
        if text[first[1] : first[1] + 1] == "-":
            return first[0], INT_MAX
        return first[0], first[0]
    return None


def cut_delimiter(delimiter: str) -> str:
    """CUT's delimiter argument (``ast_get_encoded_char``; ``-`` when it does not read)."""
    encoded = get_encoded_char(delimiter)
    return encoded[0] if encoded else "-"


def filter_chars(args: str, warn: Warn) -> str | None:
    """``FILTER(<allowed-chars>,<string>)``: the bytes of the string that are allowed."""
    parts = separate_args(args, ",", False, 2)
    if len(parts) < 2:
        warn("Usage: FILTER(<allowed-chars>,<string>)")
        return None
    allowed, string = parts
    if allowed.startswith('"'):
        warn('FILTER allowed characters includes the quote (") character.')
    bitmap = _allowed_bytes(allowed, args, warn)
    if bitmap is None:
        return None
    return from_bytes(bytes(byte for byte in to_bytes(string) if bitmap[byte]))


def _allowed_bytes(allowed: str, args: str, warn: Warn) -> list[bool] | None:
    """Which of the 256 byte values FILTER keeps (characters and ``a-b`` ranges)."""
    bitmap = [False] * 256
    stream = to_bytes(allowed).decode("latin-1")  # one character per byte, like C
    while stream:
        first = get_encoded_char(stream)
        if first is None:
            return None
        c1, used = first
        stream = stream[used:]
        if not stream.startswith("-"):
            bitmap[ord(c1) & 0xFF] = True
            continue
        second = get_encoded_char(stream[1:])
        c2, used2 = second if second is not None else (c1, 0)
        stream = stream[used2 + 1 :]
        a, b = ord(c1) & 0xFF, ord(c2) & 0xFF
        if b < a:
            warn(f"Range wrapping in FILTER({args}).")
        code = a
        while code != b:
            bitmap[code] = True
            code = (code + 1) & 0xFF
        bitmap[code] = True
    return bitmap


def if_function(args: str, warn: Warn) -> str | None:
    """``IF(<expr>?[<true>][:<false>])``."""
    first = separate_args(args, "?", True, 2)
    expr = first[0] if first else None
    remainder = first[1] if len(first) > 1 else None
    second = separate_args(remainder, ":", True, 2)
    iftrue = second[0] if second else None
    iffalse = second[1] if len(second) > 1 else None
    if not expr or (iftrue is None and iffalse is None):
        warn(
            "Syntax IF(<expr>?[<true>][:<false>])  (expr must be non-null, and either "
            f"<true> or <false> must be non-null); IF({args})"
        )
        return None
    if check_condition(ast_strip(expr)):
        return ast_strip(iftrue) if iftrue else ""
    return ast_strip(iffalse) if iffalse else ""


def rand(args: str, rng: random.Random) -> str:
    """``RAND([min][,max])``: an integer between the two, inclusive."""
    parts = separate_args(args, ",", True, 2)
    low_text = parts[0] if parts else ""
    high_text = parts[1] if len(parts) > 1 else ""
    low_scan = scan_int(low_text) if low_text else None
    high_scan = scan_int(high_text) if high_text else None
    low = low_scan[0] if low_scan else 0
    high = high_scan[0] if high_scan else INT_MAX
    if high < low:
        low, high = high, low
    return str(rng.randint(low, high))
