"""Text from callers and peers made safe to write in a log line: control characters
escaped (a CR or LF would start a forged line), and a length cap (a 900 KB caller ID
must not cost 900 KB of log per request)."""

from __future__ import annotations

import re

MAX_VALUE = 80  # characters of one caller-controlled value shown in a log line
MAX_MESSAGE = 4096  # characters of one log message, whatever it holds

# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or f"\\x{ord(char):02x}"


def escaped(text: str) -> str:
    """``text`` on one line: every control character written as an escape."""
    return _CONTROL.sub(_escape, text)


def capped(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more characters)"


def shown(value: object, limit: int = MAX_VALUE) -> str:
    """A caller-controlled value as it may appear in a log line: escaped, then capped."""
    return escaped(capped(str(value), limit))
