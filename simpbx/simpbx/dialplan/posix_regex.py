"""The POSIX extended regular expressions of ``$[... : ...]`` and ``=~``, in Python's syntax.

Only the subset whose meaning is the same in both is translated; the rest is refused."""

from __future__ import annotations

from simpbx.dialplan.errors import DialplanError

_POSIX_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v",
    "blank": " \\t",
    "punct": "!-/:-@\\[-`{-~",
    "xdigit": "0-9A-Fa-f",
}


def posix_ere_to_python(pattern: str, *, match_only: bool = False) -> str:
    """Translate the POSIX ERE subset whose Python meaning is the same; refuse the rest.

    Alternation is refused because POSIX picks the longest alternative and Python the
    first, unless ``match_only`` (only whether it matches counts, as with REG_NOSUB); GNU
    backslash classes and Python-only syntax are refused too."""
    out: list[str] = []
    pos = 0
    n = len(pattern)
    while pos < n:
        char = pattern[pos]
        if char == "[":
            text, pos = _bracket_expression(pattern, pos)
            out.append(text)
            continue
        if char == "\\":
            nxt = pattern[pos + 1 : pos + 2]
            if not nxt or nxt.isalnum():
                raise DialplanError(f"regex escape \\{nxt} is not supported: {pattern!r}")
            out.append("\\" + nxt)
            pos += 2
            continue
        if not (match_only and char == "|"):
            _refuse_non_posix(pattern, pos)
        out.append(char)
        pos += 1
    return "".join(out)


def _refuse_non_posix(pattern: str, pos: int) -> None:
    """Refuse the character at ``pos`` where POSIX and Python read it differently."""
    char = pattern[pos]
    if char == "|":
        raise DialplanError(f"regex alternation is not supported: {pattern!r}")
    if char in "*+?" and pattern[pos + 1 : pos + 2] in ("?", "+"):
        raise DialplanError(f"regex quantifier {char}{pattern[pos + 1]} is not POSIX")
    if char == "(" and pattern[pos + 1 : pos + 2] == "?":
        raise DialplanError(f"regex (? syntax is not POSIX: {pattern!r}")


def _bracket_expression(pattern: str, pos: int) -> tuple[str, int]:
    """The bracket expression opening at ``pos``, translated, and the position after it."""
    n = len(pattern)
    end = pos + 1
    head = ""
    body: list[str] = []
    if pattern[end : end + 1] == "^":
        head = "^"
        end += 1
    if pattern[end : end + 1] == "]":
        body.append("\\]")
        end += 1
    while end < n and pattern[end] != "]":
        if pattern.startswith("[:", end):
            close = pattern.find(":]", end + 2)
            name = pattern[end + 2 : close] if close > 0 else ""
            if name not in _POSIX_CLASSES:
                raise DialplanError(f"regex class [:{name}:] is not supported")
            body.append(_POSIX_CLASSES[name])
            end = close + 2
            continue
        body.append("\\" + pattern[end] if pattern[end] in "\\[" else pattern[end])
        end += 1
    if end >= n:
        raise DialplanError(f"unterminated [ in regex {pattern!r}")
    return "[" + head + "".join(body) + "]", end + 1
