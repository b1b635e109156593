"""How applications and functions read their data: argument splitting and truth.

``__ast_app_separate_args`` (main/app.c) behind ``AST_STANDARD_APP_ARGS``,
``AST_NONSTANDARD_APP_ARGS`` and their ``RAW`` variants, and ``pbx_checkcondition``
(main/pbx.c)."""

from __future__ import annotations

from simpbx.dialplan.clib import scan_int


def separate_args(
    buf: str | None, delim: str = ",", remove_chars: bool = True, max_args: int | None = None
) -> list[str]:
    """``__ast_app_separate_args`` (main/app.c).

    ``remove_chars=True`` is ``AST_STANDARD_APP_ARGS``/``AST_NONSTANDARD_APP_ARGS`` (double
    quotes and backslashes removed), ``False`` the ``RAW`` variants.  ``max_args`` is the
    number of declared arguments: the last one receives the rest of the string unsplit and
    unprocessed.  Delimiters inside ``(...)``, ``[...]`` or double quotes do not split."""
    if buf is None:
        return []
    scanner = _ArgScanner(buf, delim, remove_chars)
    n = len(buf)
    limit = max_args - 1 if max_args is not None else n + 1
    out: list[str] = []
    while scanner.pos < n and len(out) < limit:
        out.append(scanner.next_arg())
    if scanner.pos < n or (n > 0 and scanner.pos - 1 == scanner.was_delim):
        out.append(buf[scanner.pos :])
    return out


class _ArgScanner:
    """One pass of ``__ast_app_separate_args`` over a buffer: where it is, what is open."""

    def __init__(self, buf: str, delim: str, remove_chars: bool) -> None:
        self.buf = buf
        self.delim = delim
        self.remove_chars = remove_chars
        self.pos = 0
        self.paren = 0
        self.bracket = 0
        self.quote = False
        self.was_delim = -1  # position of the last delimiter that split

    def next_arg(self) -> str:
        """The argument from the current position to the next splitting delimiter."""
        current: list[str] = []
        n = len(self.buf)
        while self.pos < n:
            char = self.buf[self.pos]
            if self._nest(char):
                current.append(char)
            elif char == '"' and self.delim != '"':
                self.quote = not self.quote
                if not self.remove_chars:
                    current.append(char)
            elif char == "\\":
                self._escape(current)
            elif char == self.delim and not self.paren and not self.quote and not self.bracket:
                self.was_delim = self.pos
                self.pos += 1
                break
            else:
                current.append(char)
            self.pos += 1
        return "".join(current)

    def _nest(self, char: str) -> bool:
        """Count an opening or closing parenthesis or bracket; False for other characters."""
        if char == "(":
            self.paren += 1
        elif char == ")":
            if self.paren:
                self.paren -= 1
        elif char == "[":
            self.bracket += 1
        elif char == "]":
            if self.bracket:
                self.bracket -= 1
        else:
            return False
        return True

    def _escape(self, current: list[str]) -> None:
        """A backslash: the next character is taken as it is (and the backslash too, RAW)."""
        if not self.remove_chars:
            current.append("\\")
        if self.pos + 1 < len(self.buf):
            current.append(self.buf[self.pos + 1])
            self.pos += 1


def check_condition(condition: str | None) -> bool:
    """``pbx_checkcondition``: empty is false, a leading integer decides, other text is true."""
    if not condition:
        return False
    scanned = scan_int(condition)
    if scanned is not None:
        return scanned[0] != 0
    return True
