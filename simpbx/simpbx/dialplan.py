"""A faithful, refusing interpreter for the subset of Asterisk ``extensions.conf`` ICM uses.

Tests use it to run calls through the dialplan file ICM ships, unchanged, without a real
Asterisk.  Every behaviour below was modelled on the Asterisk 18/20 C sources (the file and
function are named next to each piece), including their quirks, because a simulator that is
"nicer" than Asterisk would let broken dialplan pass the tests.  Whatever is not modelled is
refused with :class:`DialplanError` instead of being approximated.

What is modelled:

* ``main/config.c`` + ``pbx/pbx_config.c``: ``[context]``, ``exten =>``, ``same =>``,
  priorities ``N``, ``n``, ``s``, ``n+K``, labels ``N(label)``, ``include =>``, ``[globals]``,
  ``[general]`` (harmless keys only), ``;`` comments, ``\\;`` escapes, ``;-- --;`` blocks.
* ``main/pbx.c``: extension patterns (``_``, ``X Z N [..] . !``, ``-`` ignored), Asterisk's
  sort order (literal before pattern, most specific first), the legacy matcher's rule that a
  priority missing in the best match is looked up in the next matching extension, includes.
* ``main/pbx_variables.c``: ``${VAR}``, ``${VAR:off:len}``, ``${FUNC(args)}``, ``$[expr]``,
  inside-out substitution, builtin variables, variable lookup order, ``Set`` semantics.
* ``main/ast_expr2.fl``/``ast_expr2.y``: the ``$[...]`` lexer and grammar, operator
  precedence, long double arithmetic printed with ``%.18Lg``, string/number comparison
  rules (quoted operands are strings and keep their quotes), syntax errors giving ``0``.
* ``main/app.c``: ``AST_STANDARD_APP_ARGS`` / ``RAW`` / ``NONSTANDARD`` argument splitting.
* Apps: NoOp, Verbose, Log, Set, UserEvent, WaitForCondition, Goto, GotoIf, GosubIf,
  ExecIf, Gosub, Return, Dial, Wait, Answer, Ringing, Progress, Hangup; any other app is
  handed to the :class:`ChannelHost` (which refuses what it does not know).
* Functions: CUT, FILTER, IF, LEN, RAND, CALLERID, CHANNEL (name, uniqueid, hangup
  handlers), LOCAL, GLOBAL, ISNULL, EXISTS.
* ``main/pbx.c`` end of call: the ``h`` extension of the context the channel is in, then
  the hangup handlers (``main/pbx_hangup_handler.c``, ``apps/app_stack.c`` ``gosub_run``).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cmp_to_key
from typing import Protocol

__all__ = [
    "ChannelHost",
    "Dialplan",
    "DialplanError",
    "Hangup",
    "Interpreter",
    "Priority",
    "WaitForConditionSpec",
    "check_condition",
    "evaluate_expression",
    "extension_matches",
    "parse_wait_for_condition",
    "separate_args",
]


class DialplanError(Exception):
    """The dialplan cannot be simulated faithfully: syntax error, unsupported feature, bad
    target.  Parse errors name the file and the line."""


class Hangup(Exception):
    """The channel is hung up.

    A :class:`ChannelHost` may raise it from ``dial``/``app``/``user_event`` to say the
    application returned -1 (the channel hung up under it); the interpreter then stops
    executing the dialplan exactly as Asterisk's PBX loop does."""


@dataclass(frozen=True)
class Priority:
    """One ``exten => name,number(label),App(data)`` line."""

    context: str
    exten: str
    number: int
    label: str | None
    app: str
    data: str
    line: int


class ChannelHost(Protocol):
    """What the interpreter needs from the (fake) channel and PBX around it."""

    name: str
    uniqueid: str
    caller_num: str
    caller_name: str
    variables: dict[str, str]
    globals: dict[str, str]
    hangup_requested: asyncio.Event

    async def user_event(self, name: str, body: list[tuple[str, str]]) -> None: ...

    async def dial(self, dialstring: str, timeout_s: float | None, options: str) -> str: ...

    async def app(self, name: str, args: list[str]) -> None: ...

    async def curl(self, url: str, options: dict[str, str]) -> str:
        """``CURL(url)``: the body whatever the HTTP status, "" if the request failed.
        ``options`` are the channel's ``CURLOPT()`` settings (conntimeout, httptimeout)."""
        ...


# --------------------------------------------------------------------------- C helpers

_INT_MAX = 2**31 - 1
_LONG_MIN = -(2**63)
_LONG_MAX = 2**63 - 1
_C_SPACE = " \t\n\v\f\r"


def _c_int(value: int) -> int:
    """``(int) some_long``: keep the low 32 bits, two's complement."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _scan_int(text: str, pos: int = 0, width: int = 30) -> tuple[int, int] | None:
    """glibc ``sscanf("%30d")`` at ``pos``: skip white space, optional sign, digits.

    Returns ``(value, position after the number)`` or ``None`` if no conversion."""
    n = len(text)
    while pos < n and text[pos] in _C_SPACE:
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
    value = max(_LONG_MIN, min(_LONG_MAX, value))
    return _c_int(value), pos


def _atoi(text: str) -> int:
    """C ``atoi``: like ``%d`` without the width limit; 0 when nothing converts."""
    scanned = _scan_int(text, 0, width=len(text) + 1)
    return scanned[0] if scanned else 0


def _scan_int_whole(text: str) -> int | None:
    """``sscanf(s, "%30d%1s", &i, rest) == 1``: an integer and nothing but blanks after."""
    scanned = _scan_int(text)
    if scanned is None:
        return None
    value, pos = scanned
    if text[pos:].strip(_C_SPACE):
        return None
    return value


_FLOAT_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")


def _scan_float(text: str) -> float | None:
    """``sscanf("%30lg")`` for decimal input (inf, nan and hex floats are refused)."""
    match = _FLOAT_RE.match(text)
    if match is None:
        if re.match(r"[ \t\n\v\f\r]*[+-]?(?:inf|nan|0x)", text, re.IGNORECASE):
            raise DialplanError(f"non-decimal number {text!r} is not supported")
        return None
    return float(match.group(1))


def _ast_strip(text: str) -> str:
    """``ast_strip``: remove characters below 33 (blanks, controls) at both ends."""
    start, end = 0, len(text)
    while start < end and ord(text[start]) < 33:
        start += 1
    while end > start and ord(text[end - 1]) < 33:
        end -= 1
    return text[start:end]


def _strsep(rest: str | None, delims: str) -> tuple[str | None, str | None]:
    """C ``strsep``: (token, rest); rest is None once the string is used up."""
    if rest is None:
        return None, None
    for index, char in enumerate(rest):
        if char in delims:
            return rest[:index], rest[index + 1 :]
    return rest, None


def _to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


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
    out: list[str] = []
    n = len(buf)
    pos = 0
    paren = bracket = 0
    quote = False
    was_delim = -1
    limit = max_args - 1 if max_args is not None else n + 1
    while pos < n and len(out) < limit:
        current: list[str] = []
        while pos < n:
            char = buf[pos]
            if char == "(":
                paren += 1
                current.append(char)
            elif char == ")":
                if paren:
                    paren -= 1
                current.append(char)
            elif char == "[":
                bracket += 1
                current.append(char)
            elif char == "]":
                if bracket:
                    bracket -= 1
                current.append(char)
            elif char == '"' and delim != '"':
                quote = not quote
                if not remove_chars:
                    current.append(char)
            elif char == "\\":
                if not remove_chars:
                    current.append(char)
                if pos + 1 < n:
                    current.append(buf[pos + 1])
                    pos += 1
            elif char == delim and not paren and not quote and not bracket:
                was_delim = pos
                pos += 1
                break
            else:
                current.append(char)
            pos += 1
        out.append("".join(current))
    if pos < n or (n > 0 and pos - 1 == was_delim):
        out.append(buf[pos:])
    return out


def check_condition(condition: str | None) -> bool:
    """``pbx_checkcondition``: empty is false, a leading integer decides, other text is true."""
    if not condition:
        return False
    scanned = _scan_int(condition)
    if scanned is not None:
        return scanned[0] != 0
    return True


def _get_encoded_char(stream: str) -> tuple[str, int] | None:
    """``ast_get_encoded_char``: (character, characters consumed) or None on error."""
    if not stream:
        return None
    if stream[0] != "\\":
        return stream[0], 1
    nxt = stream[1:2]
    simple = {"n": "\n", "r": "\r", "t": "\t"}
    if nxt in simple:
        return simple[nxt], 2
    hexdigits = "0123456789ABCDEFabcdef"
    if nxt == "x":
        if not stream[2:3] or stream[2] not in hexdigits:
            return None
        if stream[3:4] and stream[3] in hexdigits:
            return chr(int(stream[2:4], 16)), 4
        return chr(int(stream[2], 16)), 3
    if nxt == "0":
        end = 2
        while end < len(stream) and stream[end] in "01234567":
            end += 1
        return chr(int(stream[2:end] or "0", 8) & 0xFF), end
    return nxt, 2


# ------------------------------------------------------------------ long double emulation


def _ld_round(value: Fraction) -> Fraction:
    """Round to the x86 80-bit long double (64-bit significand, round half even)."""
    if value == 0:
        return Fraction(0)
    sign = -1 if value < 0 else 1
    mag = -value if value < 0 else value
    num, den = mag.numerator, mag.denominator
    exp = num.bit_length() - den.bit_length()
    if (num << max(0, -exp)) < (den << max(0, exp)):
        exp -= 1
    shift = 63 - exp
    if shift >= 0:
        top, bottom = num << shift, den
    else:
        top, bottom = num, den << -shift
    quot, rem = divmod(top, bottom)
    if 2 * rem > bottom or (2 * rem == bottom and quot & 1):
        quot += 1
    scaled = Fraction(quot, 1 << shift) if shift >= 0 else Fraction(quot << -shift)
    return sign * scaled


def _fmt_ld(value: Fraction, negative_zero: bool = False, precision: int = 18) -> str:
    """``printf("%.18Lg")`` of an exactly representable value."""
    if value == 0:
        return "-0" if negative_zero else "0"
    sign = "-" if value < 0 else ""
    mag = -value if value < 0 else value
    exp10 = len(str(mag.numerator)) - len(str(mag.denominator))
    while mag < Fraction(10) ** exp10:
        exp10 -= 1
    while mag >= Fraction(10) ** (exp10 + 1):
        exp10 += 1
    scaled = mag * Fraction(10) ** (precision - 1 - exp10)
    quot, rem = divmod(scaled.numerator, scaled.denominator)
    if 2 * rem > scaled.denominator or (2 * rem == scaled.denominator and quot & 1):
        quot += 1
    if quot == 10**precision:
        quot //= 10
        exp10 += 1
    digits = str(quot)
    if -4 <= exp10 < precision:
        if exp10 >= 0:
            whole, frac = digits[: exp10 + 1], digits[exp10 + 1 :]
        else:
            whole, frac = "0", "0" * (-exp10 - 1) + digits
        frac = frac.rstrip("0")
        return sign + whole + ("." + frac if frac else "")
    mantissa = (digits[0] + "." + digits[1:]).rstrip("0").rstrip(".")
    return f"{sign}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"


def _strtold(text: str) -> Fraction:
    """``strtold`` on a numeric string (digits and dots only, as the lexer produces)."""
    match = re.match(r"(\d*)(?:\.(\d*))?", text)
    whole = match.group(1) if match else ""
    frac = (match.group(2) or "") if match else ""
    if not whole and not frac:
        return Fraction(0)
    return _ld_round(Fraction(int((whole or "0") + frac), 10 ** len(frac)))


# ------------------------------------------------------------------ $[...] expressions

_NUMBER, _NUMSTR, _STRING = 0, 1, 2
_QUAD_MIN = Fraction(-(2**63))


class _Val:
    """``struct val`` of ast_expr2.y (mutable, as the C code converts values in place)."""

    __slots__ = ("kind", "neg", "num", "s")

    def __init__(self, kind: int, s: str = "", num: Fraction | None = None) -> None:
        self.kind = kind
        self.s = s
        self.num = num if num is not None else Fraction(0)
        self.neg = False  # sign of a zero long double


def _make_number(value: Fraction, negative_zero: bool = False) -> _Val:
    val = _Val(_NUMBER, num=value)
    val.neg = negative_zero and value == 0
    return val


def _make_str(text: str) -> _Val:
    isint = bool(text) and (text[0].isdigit() or text[0] in "-.")
    if isint:
        isint = all(c.isdigit() or c == "." for c in text)
    return _Val(_NUMSTR if isint else _STRING, s=text)


class _ExprSyntaxError(Exception):
    pass


class _Expr:
    """Evaluator for one ``$[...]`` body, mirroring ast_expr2.fl/ast_expr2.y."""

    _OPS: tuple[tuple[str, str], ...] = (
        ("|", "OR"),
        ("&", "AND"),
        ("=", "EQ"),
        ("||", "OR"),
        ("&&", "AND"),
        ("==", "EQ"),
        ("=~", "EQTILDE"),
        ("~~", "TILDETILDE"),
        (">", "GT"),
        ("<", "LT"),
        (">=", "GE"),
        ("<=", "LE"),
        ("!=", "NE"),
        ("+", "PLUS"),
        (",", "COMMA"),
        ("-", "MINUS"),
        ("*", "MULT"),
        ("/", "DIV"),
        ("%", "MOD"),
        ("?", "COND"),
        ("!", "COMPL"),
        (":", "COLON"),
        ("::", "COLONCOLON"),
        ("(", "LP"),
        (")", "RP"),
    )
    _QUOTED = re.compile(r'"[^"]*"')
    _NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
    _BARE = re.compile(r"(?:[a-zA-Z0-9.';\\_^#@\x80-\U0010ffff]|\$[^{])+")
    _BARE_VAR = re.compile(r"(?:[a-zA-Z0-9.';\\_^#@\x80-\U0010ffff]|\$[^{])+\$\{")
    _BINARY: dict[str, int] = {
        "COND": 1,
        "OR": 2,
        "AND": 3,
        "EQ": 4,
        "NE": 4,
        "LT": 4,
        "GT": 4,
        "LE": 4,
        "GE": 4,
        "PLUS": 5,
        "MINUS": 5,
        "MULT": 6,
        "DIV": 6,
        "MOD": 6,
        "COLON": 8,
        "EQTILDE": 8,
        "TILDETILDE": 8,
    }
    _STARTS_EXPR = frozenset({"TOKEN", "LP", "MINUS", "COMPL"})

    def __init__(self, text: str, warnings: list[str]) -> None:
        self.text = text
        self.warnings = warnings
        self.tokens = self._lex(text)
        self.pos = 0

    # lexer (flex: longest match, earliest rule on ties; unmatched characters are echoed,
    # i.e. dropped)
    def _lex(self, text: str) -> list[tuple[str, _Val | None]]:
        tokens: list[tuple[str, _Val | None]] = []
        pos = 0
        n = len(text)
        while pos < n:
            best_len, best_rule, best_kind = 0, 0, ""
            for rule, (op, kind) in enumerate(self._OPS):
                if text.startswith(op, pos) and len(op) > best_len:
                    best_len, best_rule, best_kind = len(op), rule, kind
            candidates: list[tuple[int, int, str]] = []
            if text.startswith("${", pos):
                candidates.append((2, 25, "VAR"))
            if text[pos] in " \t\r":
                candidates.append((1, 26, "SKIP"))
            quoted = self._QUOTED.match(text, pos)
            if quoted:
                candidates.append((quoted.end() - pos, 27, "QUOTED"))
            if text[pos] == "\n":
                candidates.append((1, 28, "SKIP"))
            number = self._NUMBER_RE.match(text, pos)
            if number:
                candidates.append((number.end() - pos, 29, "NUMBER"))
            bare = self._BARE.match(text, pos)
            if bare:
                candidates.append((bare.end() - pos, 30, "BARE"))
            bare_var = self._BARE_VAR.match(text, pos)
            if bare_var:
                candidates.append((bare_var.end() - pos, 31, "VAR"))
            for length, rule, kind in candidates:
                if length > best_len or (length == best_len and rule < best_rule):
                    best_len, best_rule, best_kind = length, rule, kind
            if best_len == 0:
                pos += 1  # flex default rule: ECHO the character, i.e. it is ignored
                continue
            lexeme = text[pos : pos + best_len]
            pos += best_len
            if best_kind == "SKIP":
                continue
            if best_kind == "VAR":
                raise DialplanError(
                    f"'${{' inside an expression (from a variable's value?) is not supported: "
                    f"$[{text}]"
                )
            if best_kind == "NUMBER":
                tokens.append(("TOKEN", _Val(_NUMSTR, s=lexeme)))
            elif best_kind in ("QUOTED", "BARE"):
                tokens.append(("TOKEN", _Val(_STRING, s=lexeme)))
            else:
                tokens.append((best_kind, None))
        tokens.append(("EOF", None))
        return tokens

    def _warn(self, message: str) -> None:
        self.warnings.append(f"{message} in $[{self.text}]")

    def evaluate(self) -> str:
        try:
            if self.tokens[0][0] == "EOF":
                return ""  # the grammar's empty alternative: "" and no warning
            value = self._expr(1)
            self._expect("EOF")
        except _ExprSyntaxError as exc:
            self._warn(f"syntax error: {exc}")
            return "0"  # ast_expr(): no io.val -> "0"
        if value.kind == _NUMBER:
            return _fmt_ld(value.num, value.neg)
        return value.s

    # parser (precedence climbing, equivalent to the bison precedence declarations)
    def _peek(self) -> str:
        return self.tokens[self.pos][0]

    def _expect(self, kind: str) -> None:
        if self._peek() != kind:
            raise _ExprSyntaxError(f"unexpected {self._peek()}, expecting {kind}")
        self.pos += 1

    def _expr(self, min_prec: int) -> _Val:
        left = self._prefix()
        while True:
            kind = self._peek()
            prec = self._BINARY.get(kind)
            if prec is None or prec < min_prec:
                return left
            self.pos += 1
            if kind == "COND":
                middle = self._expr(1)
                self._expect("COLONCOLON")
                right = self._expr(2)
                left = self._op_cond(left, middle, right)
            else:
                right = self._expr(prec + 1)
                left = self._binary(kind, left, right)

    def _prefix(self) -> _Val:
        kind = self._peek()
        if kind == "MINUS":
            self.pos += 1
            return self._op_negate(self._expr(7))
        if kind == "COMPL":
            self.pos += 1
            return self._op_compl(self._expr(7))
        if kind == "LP":
            self.pos += 1
            value = self._expr(1)
            self._expect("RP")
            return value
        if kind == "TOKEN":
            token = self.tokens[self.pos][1]
            assert token is not None
            self.pos += 1
            if self._peek() == "LP":
                return self._call(token)
            return token
        raise _ExprSyntaxError(f"unexpected {kind}")

    def _call(self, name: _Val) -> _Val:
        self.pos += 1  # (
        self._expr(1)
        while self._peek() == "COMMA":
            self.pos += 1
            if self._peek() in self._STARTS_EXPR:
                self._expr(1)
        self._expect("RP")
        if name.s and all(c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789" for c in name.s):
            raise DialplanError(f"function call {name.s}() inside $[...] is not supported")
        self._warn(f"Error! '{name.s}' is not possibly a function name!")
        return _make_number(Fraction(0))

    # value helpers
    @staticmethod
    def _to_number(val: _Val) -> bool:
        if val.kind == _NUMBER:
            return True
        if val.kind == _STRING:
            return False
        val.num = _strtold(val.s)
        val.neg = False
        val.kind = _NUMBER
        return True

    @staticmethod
    def _to_string(val: _Val) -> None:
        if val.kind != _NUMBER:
            return
        val.s = _fmt_ld(val.num, val.neg)
        val.kind = _STRING

    @staticmethod
    def _strip_quotes(val: _Val) -> None:
        if val.kind == _NUMBER:
            return
        if val.s[:1] == '"' and val.s[-1:] == '"':
            val.s = val.s.replace('"', "")

    def _is_zero_or_null(self, val: _Val) -> bool:
        if val.kind == _NUMBER:
            return val.num == 0
        return val.s == "" or (self._to_number(val) and val.num == 0)

    def _binary(self, kind: str, left: _Val, right: _Val) -> _Val:
        if kind == "OR":
            return right if self._is_zero_or_null(left) else left
        if kind == "AND":
            if self._is_zero_or_null(left) or self._is_zero_or_null(right):
                return _make_number(Fraction(0))
            return left
        if kind in ("EQ", "NE", "LT", "GT", "LE", "GE"):
            return self._compare(kind, left, right)
        if kind == "PLUS":
            return self._op_plus(left, right)
        if kind == "MINUS":
            return self._op_minus(left, right)
        if kind == "MULT":
            return self._op_times(left, right)
        if kind == "DIV":
            return self._op_div(left, right)
        if kind == "MOD":
            return self._op_rem(left, right)
        if kind == "TILDETILDE":
            self._to_string(left)
            self._to_string(right)
            self._strip_quotes(left)
            self._strip_quotes(right)
            return _make_str(left.s + right.s)
        return self._op_regex(left, right, anchored=kind == "COLON")

    def _compare(self, kind: str, left: _Val, right: _Val) -> _Val:
        if left.kind == _STRING or right.kind == _STRING:
            self._to_string(left)
            self._to_string(right)
            a, b = _to_bytes(left.s), _to_bytes(right.s)  # strcoll, C locale: byte order
            cmp = (a > b) - (a < b)
        else:
            self._to_number(left)
            self._to_number(right)
            cmp = (left.num > right.num) - (left.num < right.num)
        result = {
            "EQ": cmp == 0,
            "NE": cmp != 0,
            "LT": cmp < 0,
            "GT": cmp > 0,
            "LE": cmp <= 0,
            "GE": cmp >= 0,
        }[kind]
        return _make_number(Fraction(int(result)))

    def _op_cond(self, cond: _Val, iftrue: _Val, iffalse: _Val) -> _Val:
        if cond.kind == _STRING:
            return iftrue if cond.s not in ("", '""', "0") else iffalse
        self._to_number(cond)
        return iftrue if cond.num != 0 else iffalse

    def _op_plus(self, left: _Val, right: _Val) -> _Val:
        if not self._to_number(left):
            self._warn("non-numeric argument")
            if not self._to_number(right):
                return _make_number(Fraction(0))
            return right
        if not self._to_number(right):
            return left
        result = _ld_round(left.num + right.num)
        if self._chk_plus(left.num, right.num, result):
            self._warn("overflow")
        return _make_number(result, left.neg and right.neg)

    @staticmethod
    def _chk_plus(a: Fraction, b: Fraction, r: Fraction) -> bool:
        return (a > 0 and b > 0 and r <= 0) or (a < 0 and b < 0 and r >= 0)

    def _chk_minus(self, a: Fraction, b: Fraction, r: Fraction) -> bool:
        if b == _QUAD_MIN:
            return a >= 0
        return self._chk_plus(a, -b, r)

    def _op_minus(self, left: _Val, right: _Val) -> _Val:
        if not self._to_number(left):
            self._warn("non-numeric argument")
            if not self._to_number(right):
                return _make_number(Fraction(0))
            return _make_number(-right.num)
        if not self._to_number(right):
            self._warn("non-numeric argument")
            return left
        result = _ld_round(left.num - right.num)
        if self._chk_minus(left.num, right.num, result):
            self._warn("overflow")
        return _make_number(result, left.neg and not right.neg)

    def _op_negate(self, val: _Val) -> _Val:
        if not self._to_number(val):
            self._warn("non-numeric argument")
            return _make_number(Fraction(0))
        result = -val.num
        if self._chk_minus(Fraction(0), val.num, result):
            self._warn("overflow")
        return _make_number(result, not val.neg if val.num == 0 else False)

    def _op_compl(self, val: _Val) -> _Val:
        if val.kind == _NUMBER:
            truth = 0 if val.num == 0 else 1
        elif val.s in ("", "0"):
            truth = 0
        else:
            truth = _atoi(val.s)
        return _make_number(Fraction(int(not truth)))

    def _op_times(self, left: _Val, right: _Val) -> _Val:
        if not self._to_number(left) or not self._to_number(right):
            self._warn("non-numeric argument")
            return _make_number(Fraction(0))
        result = _ld_round(left.num * right.num)
        if left.num != 0 and _ld_round(result / left.num) != right.num:
            self._warn("overflow")
        negative = (left.num < 0 or (left.num == 0 and left.neg)) != (
            right.num < 0 or (right.num == 0 and right.neg)
        )
        return _make_number(result, negative)

    def _op_div(self, left: _Val, right: _Val) -> _Val:
        if not self._to_number(left):
            self._warn("non-numeric argument")
            return _make_number(Fraction(0))
        if not self._to_number(right):
            self._warn("non-numeric argument")
            return _make_number(Fraction(_INT_MAX))
        if right.num == 0:
            self._warn("division by zero")
            return _make_number(Fraction(_INT_MAX))
        result = _ld_round(left.num / right.num)
        if left.num == _QUAD_MIN and right.num == -1:
            self._warn("overflow")
        return _make_number(result, (left.neg if left.num == 0 else False) != (right.num < 0))

    def _op_rem(self, left: _Val, right: _Val) -> _Val:
        if not self._to_number(left) or not self._to_number(right):
            self._warn("non-numeric argument")
            return _make_number(Fraction(0))
        if right.num == 0:
            self._warn("div by zero")
            return right
        quotient = left.num / right.num
        truncated = quotient.numerator // quotient.denominator
        if quotient < 0 and truncated != quotient:
            truncated += 1
        result = left.num - truncated * right.num
        return _make_number(result, left.num < 0 or (left.num == 0 and left.neg))

    def _op_regex(self, left: _Val, right: _Val, *, anchored: bool) -> _Val:
        self._to_string(left)
        self._to_string(right)
        self._strip_quotes(left)
        self._strip_quotes(right)
        try:
            pattern = re.compile(_posix_ere_to_python(right.s))
        except re.error as exc:
            self._warn(f"regcomp() error : {exc}")
            return _make_str("")
        match = pattern.match(left.s) if anchored else pattern.search(left.s)
        if match is not None:
            if pattern.groups and match.group(1) is not None:
                return _make_str(match.group(1))
            return _make_number(Fraction(match.end() - match.start()))
        if pattern.groups == 0:
            return _make_number(Fraction(0))
        return _make_str("")


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


def _posix_ere_to_python(pattern: str) -> str:
    """Translate the POSIX ERE subset whose Python meaning is the same; refuse the rest.

    Alternation is refused because POSIX picks the longest alternative and Python the
    first; GNU backslash classes and Python-only syntax are refused too."""
    out: list[str] = []
    pos = 0
    n = len(pattern)
    while pos < n:
        char = pattern[pos]
        if char == "[":
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
                if pattern[end] in "\\[":
                    body.append("\\" + pattern[end])
                else:
                    body.append(pattern[end])
                end += 1
            if end >= n:
                raise DialplanError(f"unterminated [ in regex {pattern!r}")
            out.append("[" + head + "".join(body) + "]")
            pos = end + 1
            continue
        if char == "|":
            raise DialplanError(f"regex alternation is not supported: {pattern!r}")
        if char == "\\":
            nxt = pattern[pos + 1 : pos + 2]
            if not nxt or nxt.isalnum():
                raise DialplanError(f"regex escape \\{nxt} is not supported: {pattern!r}")
            out.append("\\" + nxt)
            pos += 2
            continue
        if char in "*+?" and pattern[pos + 1 : pos + 2] in ("?", "+"):
            raise DialplanError(f"regex quantifier {char}{pattern[pos + 1]} is not POSIX")
        if char == "(" and pattern[pos + 1 : pos + 2] == "?":
            raise DialplanError(f"regex (? syntax is not POSIX: {pattern!r}")
        out.append(char)
        pos += 1
    return "".join(out)


def evaluate_expression(text: str) -> tuple[str, list[str]]:
    """Evaluate the body of ``$[...]`` (already substituted) like ``ast_expr``.

    Returns ``(result, warnings)``."""
    warnings: list[str] = []
    return _Expr(text, warnings).evaluate(), warnings


# ------------------------------------------------------------------ extension patterns


def _ext_cmp_exten(left: str, right: str) -> int:
    a = left.replace("-", "")
    b = right.replace("-", "")
    return (a > b) - (a < b)


def _pattern_pos(pattern: str, pos: int) -> tuple[int, bytes, int | None]:
    """``ext_cmp_pattern_pos``: (score, character bitmap, next position or None at end)."""
    bitwise = bytearray(32)
    n = len(pattern)
    while True:
        while pos < n and pattern[pos] == "-":
            pos += 1
        if pos >= n:
            return 0x30000, bytes(bitwise), None
        char = pattern[pos]
        pos += 1
        if char in "nN":
            bitwise[6], bitwise[7] = 0x3F, 0xC0
            return 0x0800 | ord("2"), bytes(bitwise), pos
        if char in "xX":
            bitwise[6], bitwise[7] = 0xFF, 0xC0
            return 0x0A00 | ord("0"), bytes(bitwise), pos
        if char in "zZ":
            bitwise[6], bitwise[7] = 0x7F, 0xC0
            return 0x0900 | ord("1"), bytes(bitwise), pos
        if char == ".":
            return 0x18000, bytes(bitwise), pos
        if char == "!":
            return 0x28000, bytes(bitwise), pos
        if char != "[":
            code = ord(char)
            bitwise[code // 8] = 1 << (7 - code % 8)
            return 0x0100 | code, bytes(bitwise), pos
        end = pattern.find("]", pos)
        count = 0
        cmin = 0xFF
        while pos < end:
            first = ord(pattern[pos])
            if pos + 2 < end and pattern[pos + 1] == "-":
                last = ord(pattern[pos + 2])
                pos += 2
            else:
                last = first
            cmin = min(cmin, first)
            for code in range(first, last + 1):
                mask = 1 << (7 - code % 8)
                if not bitwise[code // 8] & mask:
                    bitwise[code // 8] |= mask
                    count += 0x100
            pos += 1
        pos = end + 1
        if count:
            return count | cmin, bytes(bitwise), pos


def _ext_cmp_pattern(left: str, right: str) -> int:
    lpos: int | None = 0
    rpos: int | None = 0
    while True:
        assert lpos is not None and rpos is not None
        lscore, lbits, lpos = _pattern_pos(left, lpos)
        rscore, rbits, rpos = _pattern_pos(right, rpos)
        cmp = lscore - rscore
        if not cmp:
            cmp = (rbits > lbits) - (rbits < lbits)
        if cmp or lpos is None:
            return cmp


def _ext_cmp(left: str, right: str) -> int:
    """``ext_cmp``: literal extensions first, then patterns, most specific first."""
    if not left.startswith("_"):
        if right.startswith("_"):
            return -1
        return _ext_cmp_exten(left, right)
    if not right.startswith("_"):
        return 1
    return _ext_cmp_pattern(left[1:], right[1:])


def extension_matches(pattern: str, data: str) -> bool:
    """``_extension_match_core(pattern, data, E_MATCH)`` (the legacy matcher)."""
    if not pattern.startswith("_"):
        return _ext_cmp_exten(pattern, data) == 0
    if data.startswith("_") and _ext_cmp_pattern(pattern[1:], data[1:]) == 0:
        return True
    pat = pattern[1:]
    p = d = 0
    while True:
        while d < len(data) and data[d] == "-":
            d += 1
        while p < len(pat) and pat[p] == "-":
            p += 1
        if d >= len(data) or p >= len(pat):
            break
        char, ch = pat[p], data[d]
        if char == "[":
            end = pat.find("]", p + 1)
            if end < 0:
                return False
            if end == p + 1:
                p = end + 1
                continue
            q = p + 1
            found = False
            while q < end:
                if q + 2 < end and pat[q + 1] == "-":
                    if pat[q] <= ch <= pat[q + 2]:
                        found = True
                        break
                    q += 3
                    continue
                if ch == pat[q]:
                    found = True
                    break
                q += 1
            if not found:
                return False
            p = end
        elif char in "nN":
            if not "2" <= ch <= "9":
                return False
        elif char in "xX":
            if not "0" <= ch <= "9":
                return False
        elif char in "zZ":
            if not "1" <= ch <= "9":
                return False
        elif char in ".!":
            return True
        elif ch != char:
            return False
        d += 1
        p += 1
    if d < len(data):
        return False
    return p >= len(pat) or pat[p] == "!"


# ------------------------------------------------------------------ dialplan parsing


@dataclass
class _Exten:
    name: str
    priorities: dict[int, Priority] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)


@dataclass
class _Context:
    name: str
    extens: list[_Exten] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)


_APP_NAME_RE = re.compile(r"[A-Za-z0-9_]+")
_GENERAL_KEYS = {"static", "writeprotect", "clearglobalvars", "userscontext"}
_TRUE = {"yes", "true", "y", "t", "1", "on"}
_FALSE = {"no", "false", "n", "f", "0", "off"}


def _strip_comments(line: str, depth: int) -> tuple[str | None, int]:
    """One line through config.c's comment handling: (text outside comments, depth)."""
    out: list[str] = []
    active = depth == 0
    seen_active = active
    pos = 0
    segment = 0  # C's new_buf: where the current scan segment starts
    n = len(line)
    while pos < n:
        char = line[pos]
        if char != ";":
            if active:
                out.append(char)
            pos += 1
            continue
        if pos > segment and line[pos - 1] == "\\":
            if active:
                out[-1] = ";"
            pos += 1
            segment = pos
        elif line[pos + 1 : pos + 3] == "--" and line[pos + 3 : pos + 4] != "-":
            depth += 1
            active = False
            pos += 3
            segment = pos
        elif pos >= segment + 2 and line[pos - 2 : pos] == "--":
            if depth == 0:
                raise ValueError("'--;' closes a block comment that was never opened")
            depth -= 1
            pos += 1
            segment = pos
            if depth == 0:
                active = seen_active = True
        elif depth == 0:
            break
        else:
            pos += 1
            segment = pos
    return ("".join(out) if seen_active else None), depth


class Dialplan:
    """Parsed extensions.conf text(s)."""

    def __init__(self) -> None:
        self.globals: dict[str, str] = {}
        self._contexts: dict[str, _Context] = {}

    @property
    def contexts(self) -> list[str]:
        return list(self._contexts)

    @classmethod
    def parse(cls, *texts: str, names: Sequence[str] | None = None) -> Dialplan:
        """Parse one or more extensions.conf texts into one dialplan (contexts merge)."""
        plan = cls()
        for index, text in enumerate(texts):
            name = names[index] if names is not None else f"<text {index + 1}>"
            plan._parse_text(text, name)
        for context in plan._contexts.values():
            for include in context.includes:
                if include not in plan._contexts:
                    raise DialplanError(
                        f"context {context.name!r} includes nonexistent context {include!r}"
                    )
        return plan

    def _parse_text(self, text: str, fname: str) -> None:
        depth = 0
        section: str | None = None
        context: _Context | None = None
        last_exten: str | None = None
        last_pri = -2
        for lineno, raw in enumerate(text.split("\n"), start=1):

            def fail(message: str, lineno: int = lineno) -> DialplanError:
                return DialplanError(f"{fname}:{lineno}: {message}")

            try:
                stripped, depth = _strip_comments(raw, depth)
            except ValueError as exc:
                raise fail(str(exc)) from None
            if stripped is None:
                continue
            line = _ast_strip(stripped)
            if not line:
                continue
            if line.startswith("["):
                close = line.find("]")
                if close < 0:
                    raise fail("no closing ']'")
                section = line[1:close]
                if not section:
                    raise fail("empty section name")
                if line[close + 1 :].strip(_C_SPACE):
                    raise fail("section options/templates after ']' are not supported")
                last_exten, last_pri = None, -2
                context = None
                if section.lower() not in ("general", "globals"):
                    context = self._contexts.setdefault(section, _Context(section))
                continue
            if line.startswith("#"):
                raise fail(f"directive {line.split()[0]!r} is not supported")
            if section is None:
                raise fail("line outside any [section]")
            if line.startswith("\\"):
                raise fail("escaped variable names are not supported")
            equal = line.find("=")
            if equal < 0:
                raise fail("no '=' in line")
            if equal > 0 and line[equal - 1] == "+":
                raise fail("'+=' is not supported")
            key = _ast_strip(line[:equal])
            value = line[equal + 1 :]
            if value.startswith(">"):
                value = value[1:]
            value = _ast_strip(value)
            if not key:
                raise fail("no variable name")
            lower = section.lower()
            if lower == "general":
                if key.lower() == "autofallthrough" and value.lower() in _TRUE:
                    continue
                if key.lower() == "extenpatternmatchnew" and value.lower() in _FALSE:
                    continue
                if key.lower() in _GENERAL_KEYS:
                    continue
                raise fail(f"[general] setting {key}={value} is not supported")
            if lower == "globals":
                if "$" in value:
                    raise fail("substitutions in [globals] values are not supported")
                self.globals[key] = value
                continue
            assert context is not None
            lkey = key.lower()
            if lkey.startswith("same"):
                if last_exten is None:
                    raise fail("'same' without a previous 'exten' in this context")
                last_pri = self._add_priority(context, last_exten, value, last_pri, lineno, fail)
            elif lkey == "exten":
                ext_name, rest = self._split_exten(value)
                ext_name = ext_name.replace(" ", "")
                if "$" in ext_name:
                    raise fail("substitutions in extension names are not supported")
                if "/" in ext_name:
                    raise fail("caller ID matching ('exten/cid') is not supported")
                if not ext_name:
                    raise fail("empty extension name")
                if not ext_name.isascii():
                    raise fail("non-ASCII extension names are not supported")
                if ext_name.startswith("_") and ext_name.count("[") != ext_name.count("]"):
                    raise fail(f"unbalanced [] in pattern {ext_name!r}")
                last_exten = ext_name
                last_pri = self._add_priority(context, ext_name, rest, last_pri, lineno, fail)
            elif lkey == "include":
                if "$" in value or "," in value or "|" in value:
                    raise fail("timed or substituted includes are not supported")
                if value in context.includes:
                    raise fail(f"context {value!r} already included in {context.name!r}")
                context.includes.append(value)
            else:
                raise fail(f"directive {key!r} is not supported")
        if depth:
            raise DialplanError(f"{fname}: unterminated ';--' block comment")

    @staticmethod
    def _split_exten(value: str) -> tuple[str, str | None]:
        """``pbx_strsep(&stringp, ",")``: commas inside [] do not split."""
        square = 0
        pos = 0
        while pos < len(value):
            char = value[pos]
            if char == "[":
                square += 1
            elif char == "]":
                if square:
                    square -= 1
            elif char == "\\":
                pos += 1
            elif char == "," and not square:
                return value[:pos], value[pos + 1 :]
            pos += 1
        return value, None

    def _add_priority(
        self,
        context: _Context,
        ext_name: str,
        rest: str | None,
        last_pri: int,
        lineno: int,
        fail: Callable[[str], DialplanError],
    ) -> int:
        pri_text, rest = _strsep(rest, ",")
        pri = _ast_strip(pri_text or "")
        label: str | None = None
        paren = pri.find("(")
        if paren >= 0:
            close = pri.find(")", paren)
            if close < 0:
                raise fail("label missing trailing ')'")
            label = pri[paren + 1 : close]
            pri = pri[:paren]
        plus = 0
        if "+" in pri:
            pri, plus_text = pri.split("+", 1)
            plus = _atoi(plus_text)
        if pri == "hint":
            raise fail("hints are not supported")
        if pri in ("n", "next"):
            if last_pri <= -2:
                raise fail("can't use 'next' priority on the first entry")
            number = last_pri + 1
        elif pri in ("s", "same"):
            if last_pri <= -2:
                raise fail("can't use 'same' priority on the first entry")
            number = last_pri
        else:
            scanned = _scan_int(pri)
            if scanned is None:
                raise fail(f"invalid priority {pri!r}")
            number = scanned[0]
            if number < 1:
                raise fail(f"invalid priority {pri!r}")
        number += plus
        appl = rest or ""
        data = ""
        if "(" in appl:
            appl, data = appl.split("(", 1)
            if "${" in appl or "$[" in appl:
                raise fail("extension data without an application is not supported")
            close = data.rfind(")")
            if close < 0:
                raise fail(f"no closing parenthesis for {appl}(")
            data = data[:close]
        appl = appl.lstrip("".join(chr(c) for c in range(33)))
        if not _APP_NAME_RE.fullmatch(appl):
            raise fail(f"invalid application name {appl!r}")
        exten = self._get_exten(context, ext_name)
        if number in exten.priorities:
            raise fail(f"priority {number} of {ext_name}@{context.name} is already in use")
        if label is not None:
            if label in exten.labels:
                raise fail(f"label {label!r} already used in {ext_name}@{context.name}")
            exten.labels[label] = number
        exten.priorities[number] = Priority(
            context.name, ext_name, number, label or None, appl, data, lineno
        )
        return number

    @staticmethod
    def _get_exten(context: _Context, name: str) -> _Exten:
        for exten in context.extens:
            if _ext_cmp(exten.name, name) == 0:
                return exten
        new = _Exten(name)
        context.extens.append(new)
        context.extens.sort(key=cmp_to_key(lambda a, b: _ext_cmp(a.name, b.name)))
        return new

    def _search(self, context: str, exten: str, pick: Callable[[_Exten], int | None]) -> int | None:
        """``pbx_find_extension`` with the legacy matcher: first matching extension (in
        Asterisk's sort order) that has what is looked for, then the includes."""
        visited: list[str] = []

        def search(name: str) -> int | None:
            if any(name.lower() == seen.lower() for seen in visited):
                return None
            ctx = self._contexts.get(name)
            if ctx is None:
                return None
            for ext in ctx.extens:
                if extension_matches(ext.name, exten):
                    found = pick(ext)
                    if found is not None:
                        return found
            visited.append(name)
            for include in ctx.includes:
                found = search(include)
                if found is not None:
                    return found
            return None

        return search(context)

    def find(self, context: str, exten: str, priority: int) -> Priority | None:
        """The priority Asterisk would execute at ``context,exten,priority``, or None."""
        result: list[Priority] = []

        def pick(ext: _Exten) -> int | None:
            prio = ext.priorities.get(priority)
            if prio is None:
                return None
            result.append(prio)
            return prio.number

        self._search(context, exten, pick)
        return result[0] if result else None

    def find_label(self, context: str, exten: str, label: str) -> int | None:
        return self._search(context, exten, lambda ext: ext.labels.get(label))

    def label(self, context: str, exten: str, label: str) -> int:
        """The priority number of ``label`` (DialplanError if there is none)."""
        number = self.find_label(context, exten, label)
        if number is None:
            raise DialplanError(f"no label {label!r} in {context},{exten}")
        return number

    def has_exten(self, context: str, exten: str) -> bool:
        """Whether the extension exists in Asterisk's sense (it has a priority 1)."""
        return self.find(context, exten, 1) is not None


# ------------------------------------------------------------------ WaitForCondition


@dataclass(frozen=True)
class WaitForConditionSpec:
    """What ``waitforcond_exec`` extracts from its (already substituted) data."""

    replacement: str
    condition: str  # with '$' put back; NOTE: runs to the end of the data (see parse)
    timeout_ms: int  # 0: no timeout
    poll_ms: int


class _WaitForConditionError(Exception):
    def __init__(self, message: str, *, hangup: bool) -> None:
        super().__init__(message)
        self.hangup = hangup


def parse_wait_for_condition(data: str) -> WaitForConditionSpec:
    """Parse WaitForCondition's data exactly as apps/app_waitforcond.c does.

    Quirk reproduced: the C code never terminates the expression at its closing bracket,
    so the condition it evaluates is the rest of the whole data, e.g.
    ``$["${X}" = "1"],2,0.02``; pbx_checkcondition then reads only its leading integer.

    Raises ``_WaitForConditionError`` (``hangup`` tells whether the app returns -1)."""

    def failure(message: str) -> _WaitForConditionError:
        return _WaitForConditionError(message, hangup=False)

    if not data:
        raise failure("WaitForCondition requires a condition")
    open_bracket = data.find("[")
    if open_bracket < 0 or data.find("]", open_bracket) < 0:
        raise failure("No expression detected. Did you forget to replace the $ signs?")
    rep = data[0]
    if rep in "$[]{}":
        raise failure(f"Dollar sign replacement cannot be {rep}.")
    pos = 1
    if data[pos : pos + 1] != ",":
        raise failure(f"Invalid separator: {data[pos : pos + 1]}")
    pos += 1
    if data[pos : pos + 1] != rep:
        raise failure(
            f"Expression start does not match provided replacement: {data[pos : pos + 1]}"
        )
    expression_start = pos
    brackets = 0
    while True:
        pos += 1
        if pos >= len(data):
            raise failure("Could not parse end of expression.")
        if data[pos] == "[":
            brackets += 1
        elif data[pos] == "]":
            brackets -= 1
        if brackets == 0:
            break
    pos += 1
    timeout_ms = 0
    poll_ms = 50
    if pos < len(data):
        pos += 1  # "eat comma separator" (whatever the character is)
        if pos < len(data):
            options = separate_args(data[pos:], ",", True, 2)
            timeout_text = options[0] if options else ""
            interval_text = options[1] if len(options) > 1 else ""
            if timeout_text:
                timeout = _scan_float(timeout_text)
                if timeout is None:
                    raise _WaitForConditionError(
                        f"Invalid timeout provided: {timeout_text}. No timeout set.", hangup=True
                    )
                timeout_ms = int(timeout * 1000.0)
            if interval_text:
                poll = _scan_float(interval_text)
                if poll is None:
                    raise _WaitForConditionError(
                        f"Invalid polling interval provided: {interval_text}.", hangup=True
                    )
                if poll < 0.001:
                    raise _WaitForConditionError(
                        "Polling interval cannot be less than 1ms.", hangup=True
                    )
                poll_ms = int(poll * 1000.0)
    condition = data[expression_start:].replace(rep, "$")
    return WaitForConditionSpec(rep, condition, timeout_ms, poll_ms)


# ------------------------------------------------------------------ the interpreter


@dataclass
class _Frame:
    """A Gosub stack frame (apps/app_stack.c ``gosub_stack_frame``)."""

    context: str
    exten: str
    priority: int  # the return priority (the one after the Gosub)
    arguments: int
    is_special: bool
    locals: dict[str, str] = field(default_factory=dict)


_REFUSED_APPS = frozenset(
    {
        "macro",
        "macroexclusive",
        "macroexit",
        "macroif",
        "exec",
        "tryexec",
        "execiftime",
        "gotoiftime",
        "while",
        "endwhile",
        "exitwhile",
        "continuewhile",
        "stackpop",
        "waitexten",
        "eagi",
        "deadagi",
        "stasis",
        "raiseexception",
        "mset",
        "importvar",
        "channelredirect",
    }
)
_REFUSED_BUILTINS = frozenset(
    {
        "HINT",
        "HINTNAME",
        "HANGUPCAUSE",
        "CALLINGPRES",
        "CALLINGANI2",
        "CALLINGTON",
        "CALLINGTNS",
        "SYSTEMNAME",
        "ENTITYID",
        "ASTCACHEDIR",
        "ASTETCDIR",
        "ASTMODDIR",
        "ASTVARLIBDIR",
        "ASTDBDIR",
        "ASTKEYDIR",
        "ASTDATADIR",
        "ASTAGIDIR",
        "ASTSPOOLDIR",
        "ASTRUNDIR",
        "ASTLOGDIR",
        "ASTSBINDIR",
    }
)
_DIAL_STATUSES = frozenset(
    {
        "ANSWER",
        "BUSY",
        "NOANSWER",
        "CANCEL",
        "CONGESTION",
        "CHANUNAVAIL",
        "DONTCALL",
        "TORTURE",
        "INVALIDARGS",
    }
)
_REFUSED_DIAL_OPTIONS = frozenset("GBUM")


def _parse_options(options: str) -> set[str]:
    """``ast_app_parse_options``: the option letters (arguments in parentheses skipped)."""
    letters: set[str] = set()
    pos = 0
    while pos < len(options):
        letters.add(options[pos])
        pos += 1
        if options[pos : pos + 1] == "(":
            close = options.find(")", pos)
            if close < 0:
                raise DialplanError(f"missing ')' in options {options!r}")
            pos = close + 1
    return letters


def _parse_timelen_ms(text: str) -> int | None:
    """``ast_app_parse_timelen(..., TIMELEN_SECONDS)`` -> milliseconds, None on error."""
    match = re.match(r"[ \t\n\v\f\r]*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(\S*)", text)
    if match is None:
        return None
    amount = float(match.group(1))
    unit = match.group(2)
    factors = {"": 1000.0, "s": 1000.0, "S": 1000.0, "h": 3_600_000.0, "H": 3_600_000.0}
    factors.update({"m": 60_000.0, "M": 60_000.0})
    if unit.lower() == "ms":
        factor = 1.0
    elif unit in factors:
        factor = factors[unit]
    else:
        return None
    ms = amount * factor
    return _INT_MAX if ms > _INT_MAX else int(ms)


_AppHandler = Callable[[str], Awaitable[bool]]


class Interpreter:
    """Runs one channel through a :class:`Dialplan`.

    ``trace`` gets one line per executed priority, ``warnings`` every message Asterisk would
    log at WARNING or ERROR level.  Variables set by the dialplan live in
    ``channel.variables`` (Gosub ``LOCAL``/``ARGn`` variables in the interpreter's frames);
    ``channel.globals`` is read and written as Asterisk's global variables (seed it with
    ``Dialplan.globals``)."""

    def __init__(
        self,
        dialplan: Dialplan,
        channel: ChannelHost,
        *,
        rng: random.Random | None = None,
        max_steps: int = 10_000,
    ) -> None:
        self.dialplan = dialplan
        self.channel = channel
        self.rng = rng if rng is not None else random.Random()
        self.max_steps = max_steps
        self.trace: list[str] = []
        self.warnings: list[str] = []
        self._frames: list[_Frame] = []
        self._stack_allocated = False
        self._handlers: list[str] = []
        self._curlopts: dict[str, str] = {}
        self._curl_results: list[str] = []
        self._context = ""
        self._exten = ""
        self._priority = 0
        self._dead = False
        self._steps = 0
        self._apps: dict[str, _AppHandler] = {
            "noop": self._app_nothing,
            "verbose": self._app_nothing,
            "log": self._app_nothing,
            "ringing": self._app_nothing,
            "progress": self._app_nothing,
            "answer": self._app_answer,
            "set": self._app_set,
            "userevent": self._app_userevent,
            "waitforcondition": self._app_waitforcondition,
            "goto": self._app_goto,
            "gotoif": self._app_gotoif,
            "gosub": self._app_gosub,
            "gosubif": self._app_gosubif,
            "return": self._app_return,
            "execif": self._app_execif,
            "dial": self._app_dial,
            "wait": self._app_wait,
            "hangup": self._app_hangup,
        }

    # ---------------------------------------------------------------- public API

    @property
    def location(self) -> tuple[str, str, int]:
        return self._context, self._exten, self._priority

    @property
    def hangup_handlers(self) -> list[str]:
        """Pushed handlers, most recent last (as ``context,exten,prio(args)``)."""
        return list(self._handlers)

    async def run(self, context: str, exten: str, priority: int = 1) -> None:
        """Execute from ``context,exten,priority`` until the call ends, then run the ``h``
        extension of the context the channel is in and the hangup handlers."""
        if self.dialplan.find(context, exten, priority) is None:
            raise DialplanError(f"nothing at {context},{exten},{priority}")
        self._context, self._exten, self._priority = context, exten, priority
        await self._pbx_loop()
        self._dead = True
        if self.dialplan.find(self._context, "h", 1) is not None:
            await self._run_h_exten()
        while self._handlers:
            await self._run_sub(self._handlers.pop())

    def substitute(self, text: str) -> str:
        """``pbx_substitute_variables_helper`` on the channel's current state."""
        out: list[str] = []
        pos = 0
        n = len(text)
        while pos < n:
            dollar = text.find("$", pos)
            if dollar < 0:
                out.append(text[pos:])
                break
            nxt = text[dollar + 1 : dollar + 2]
            if nxt == "{":
                out.append(text[pos:dollar])
                pos = self._substitute_variable(text, dollar, out)
            elif nxt == "[":
                out.append(text[pos:dollar])
                pos = self._substitute_expression(text, dollar, out)
            else:
                out.append(text[pos : dollar + 1])
                pos = dollar + 1
        return "".join(out)

    def get_variable(self, name: str) -> str | None:
        """A variable as ``${name}`` reads it (None when unset)."""
        if name in ("EXTEN", "CONTEXT", "PRIORITY", "CHANNEL", "UNIQUEID"):
            return {
                "EXTEN": self._exten,
                "CONTEXT": self._context,
                "PRIORITY": str(self._priority),
                "CHANNEL": self.channel.name,
                "UNIQUEID": self.channel.uniqueid,
            }[name]
        if name == "EPOCH":
            return str(_c_int(int(time.time())))
        if name in _REFUSED_BUILTINS:
            raise DialplanError(f"builtin variable {name} is not simulated")
        for frame in reversed(self._frames):
            if name in frame.locals:
                return frame.locals[name]
        if name in self.channel.variables:
            return self.channel.variables[name]
        return self.channel.globals.get(name)

    # ---------------------------------------------------------------- substitution

    def _warn(self, message: str) -> None:
        where = f"{self._context},{self._exten},{self._priority}"
        self.warnings.append(f"{where}: {message}")

    def _substitute_variable(self, text: str, dollar: int, out: list[str]) -> int:
        start = end = dollar + 2
        n = len(text)
        brackets = 1
        needsub = False
        while brackets and end < n:
            char = text[end]
            nxt = text[end + 1 : end + 2]
            if char == "$" and nxt == "{":
                needsub = True
                brackets += 1
                end += 1
            elif char == "{":
                brackets += 1
            elif char == "}":
                brackets -= 1
            elif char == "$" and nxt == "[":
                needsub = True
                end += 1
            end += 1
        if brackets:
            self._warn("Error in extension logic (missing '}')")
            body = text[start:end]
        else:
            body = text[start : end - 1]
        if needsub:
            body = self.substitute(body)
        name, offset, length, isfunc = self._parse_variable_name(body)
        value = self._function_read(name) if isfunc else self.get_variable(name)
        if value is not None:
            out.append(self._substring(value, offset, length))
        return end

    def _substitute_expression(self, text: str, dollar: int, out: list[str]) -> int:
        start = end = dollar + 2
        n = len(text)
        brackets = 1
        needsub = False
        while brackets and end < n:
            char = text[end]
            nxt = text[end + 1 : end + 2]
            if char == "$" and nxt == "[":
                needsub = True
                brackets += 1
                end += 1
            elif char == "[":
                brackets += 1
            elif char == "]":
                brackets -= 1
            elif char == "$" and nxt == "{":
                needsub = True
                end += 1
            end += 1
        if brackets:
            self._warn("Error in extension logic (missing ']')")
            body = text[start:end]
        else:
            body = text[start : end - 1]
        if needsub:
            body = self.substitute(body)
        result, warnings = evaluate_expression(body)
        for warning in warnings:
            self._warn(warning)
        out.append(result)
        return end

    @staticmethod
    def _parse_variable_name(body: str) -> tuple[str, int, int, bool]:
        parens = 0
        isfunc = False
        for index, char in enumerate(body):
            if char == "(":
                isfunc = True
                parens += 1
            elif char == ")":
                parens -= 1
            elif char == ":" and parens == 0:
                rest = body[index + 1 :]
                offset, length = 0, _INT_MAX
                first = _scan_int(rest)
                if first is not None:
                    offset = first[0]
                    if rest[first[1] : first[1] + 1] == ":":
                        second = _scan_int(rest, first[1] + 1)
                        if second is not None:
                            length = second[0]
                return body[:index], offset, length, isfunc
        return body, 0, _INT_MAX, isfunc

    @staticmethod
    def _substring(value: str, offset: int, length: int) -> str:
        """``ast_str_substring`` (byte based, like the C string)."""
        data = _to_bytes(value)
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
        return _from_bytes(data)

    # ---------------------------------------------------------------- functions

    @staticmethod
    def _func_args(expr: str) -> tuple[str, str]:
        name, _, args = expr.partition("(")
        close = args.rfind(")")
        if close >= 0:
            args = args[:close]
        return name, args

    def _function_read(self, expr: str) -> str | None:
        """``ast_func_read``: the value, or None when the function fails (logged)."""
        name, args = self._func_args(expr)
        if ")" not in expr[len(name) :]:
            self._warn(f"Can't find trailing parenthesis for function '{name}({args}'?")
        reader = {
            "CUT": self._fn_cut,
            "FILTER": self._fn_filter,
            "IF": self._fn_if,
            "LEN": lambda a: str(len(_to_bytes(a))),
            "RAND": self._fn_rand,
            "CALLERID": self._fn_callerid_read,
            "CHANNEL": self._fn_channel_read,
            "LOCAL": self._fn_local_read,
            "GLOBAL": lambda a: self.channel.globals.get(a, ""),
            "ISNULL": lambda a: "0" if a else "1",
            "EXISTS": lambda a: "1" if a else "0",
            "URIENCODE": lambda a: urllib.parse.quote(a, safe="-_.~"),
            "CURLOPT": lambda a: self._curlopts.get(a.lower(), ""),
            "CURL": self._fn_curl_result,
        }.get(name)
        if reader is None:
            raise DialplanError(f"dialplan function {name}() is not supported (in ${{{expr}}})")
        return reader(args)

    async def _prefetch_curl(self, data: str) -> str:
        """CURL() does network I/O, which substitution (synchronous here, blocking in
        Asterisk) cannot await: each ``${CURL(url)}`` is fetched first, its arguments
        substituted, and replaced by a reference to the result that substitution reads."""
        out = []
        pos = 0
        while (start := data.find("${CURL(", pos)) >= 0:
            depth, end = 0, start
            for end in range(start, len(data)):
                if data.startswith("${", end):
                    depth += 1
                elif data[end] == "}":
                    depth -= 1
                    if depth == 0:
                        break
            inner = data[start + len("${CURL(") : end]
            url = self.substitute(inner[: inner.rfind(")")] if ")" in inner else inner)
            self._curl_results.append(await self.channel.curl(url, dict(self._curlopts)))
            out.append(data[pos:start] + f"${{CURL({len(self._curl_results) - 1})}}")
            pos = end + 1
        out.append(data[pos:])
        return "".join(out)

    def _fn_curl_result(self, args: str) -> str:
        if not args.isdigit() or int(args) >= len(self._curl_results):
            raise DialplanError(f"CURL({args}) was not fetched")
        return self._curl_results[int(args)]

    def _fn_cut(self, args: str) -> str | None:
        parts = separate_args(args, ",", True, 3)
        if len(parts) < 3:
            self._warn("Syntax: CUT(<varname>,<char-delim>,<range-spec>) - missing argument!")
            return None
        varname, delimiter, spec = parts
        value = self.substitute("${" + varname + "}")
        encoded = _get_encoded_char(delimiter)
        delim = encoded[0] if encoded else "-"
        if not delim.isascii():
            raise DialplanError(f"non-ASCII CUT delimiter {delim!r} is not supported")
        if not value:
            return ""
        rest: str | None = value
        ranges: str | None = spec
        field_no = 1
        out: list[str] = []
        while rest is not None and ranges is not None:
            next_range, ranges = _strsep(ranges, "&")
            assert next_range is not None
            bounds = self._cut_range(next_range)
            if bounds is None:
                self._warn("Usage: CUT(<varname>,<char-delim>,<range-spec>)")
                return None
            start, stop = bounds
            while rest is not None and field_no < start:
                _, rest = _strsep(rest, delim)
                field_no += 1
            if field_no > start:
                self._warn("We're already past the field you wanted?")
            while rest is not None and field_no <= stop:
                token, rest = _strsep(rest, delim)
                out.append(token or "")
                field_no += 1
        return delim.join(out)

    @staticmethod
    def _cut_range(text: str) -> tuple[int, int] | None:
        first = _scan_int(text)
        if first is not None and text[first[1] : first[1] + 1] == "-":
            second = _scan_int(text, first[1] + 1)
            if second is not None:
                return first[0], second[0]
        if text.startswith("-"):
            second = _scan_int(text, 1)
            if second is not None:
                return 1, second[0]
        if first is not None:
            if text[first[1] : first[1] + 1] == "-":
                return first[0], _INT_MAX
            return first[0], first[0]
        return None

    def _fn_filter(self, args: str) -> str | None:
        parts = separate_args(args, ",", False, 2)
        if len(parts) < 2:
            self._warn("Usage: FILTER(<allowed-chars>,<string>)")
            return None
        allowed, string = parts
        if allowed.startswith('"'):
            self._warn('FILTER allowed characters includes the quote (") character.')
        bitmap = [False] * 256
        stream = _to_bytes(allowed).decode("latin-1")  # one character per byte, like C
        while stream:
            first = _get_encoded_char(stream)
            if first is None:
                return None
            c1, used = first
            stream = stream[used:]
            if stream.startswith("-"):
                second = _get_encoded_char(stream[1:])
                c2, used2 = second if second is not None else (c1, 0)
                stream = stream[used2 + 1 :]
                a, b = ord(c1) & 0xFF, ord(c2) & 0xFF
                if b < a:
                    self._warn(f"Range wrapping in FILTER({args}).")
                code = a
                while code != b:
                    bitmap[code] = True
                    code = (code + 1) & 0xFF
                bitmap[code] = True
            else:
                bitmap[ord(c1) & 0xFF] = True
        return _from_bytes(bytes(byte for byte in _to_bytes(string) if bitmap[byte]))

    def _fn_if(self, args: str) -> str | None:
        first = separate_args(args, "?", True, 2)
        expr = first[0] if first else None
        remainder = first[1] if len(first) > 1 else None
        second = separate_args(remainder, ":", True, 2)
        iftrue = second[0] if second else None
        iffalse = second[1] if len(second) > 1 else None
        if not expr or (iftrue is None and iffalse is None):
            self._warn(
                "Syntax IF(<expr>?[<true>][:<false>])  (expr must be non-null, and either "
                f"<true> or <false> must be non-null); IF({args})"
            )
            return None
        if check_condition(_ast_strip(expr)):
            return _ast_strip(iftrue) if iftrue else ""
        return _ast_strip(iffalse) if iffalse else ""

    def _fn_rand(self, args: str) -> str:
        parts = separate_args(args, ",", True, 2)
        low_text = parts[0] if parts else ""
        high_text = parts[1] if len(parts) > 1 else ""
        low_scan = _scan_int(low_text) if low_text else None
        high_scan = _scan_int(high_text) if high_text else None
        low = low_scan[0] if low_scan else 0
        high = high_scan[0] if high_scan else _INT_MAX
        if high < low:
            low, high = high, low
        return str(self.rng.randint(low, high))

    def _fn_callerid_read(self, args: str) -> str:
        parts = separate_args(args, ",", True, 2)
        if len(parts) != 1:
            raise DialplanError(f"CALLERID({args}) is not supported")
        member = parts[0].lower()
        if member == "name":
            return self.channel.caller_name
        if member.startswith("num"):
            return self.channel.caller_num
        raise DialplanError(f"CALLERID({args}) is not supported")

    def _fn_channel_read(self, args: str) -> str:
        item = args.lower()
        if item == "name":
            return self.channel.name
        if item == "uniqueid":
            return self.channel.uniqueid
        raise DialplanError(f"CHANNEL({args}) is not supported for reading")

    def _fn_local_read(self, args: str) -> str | None:
        if not self._frames:
            return None
        return self._frames[-1].locals.get(args, "")

    # ---------------------------------------------------------------- variables

    def set_variable(self, name: str, value: str) -> None:
        """``pbx_builtin_setvar_helper``: functions when the name ends with ')'."""
        if name.endswith(")"):
            self._function_write(name, value)
            return
        if name.startswith("__"):
            name = name[2:]
        elif name.startswith("_"):
            name = name[1:]
        for frame in reversed(self._frames):
            if name in frame.locals:
                frame.locals[name] = value
                return
        self.channel.variables[name] = value

    def _function_write(self, expr: str, value: str) -> None:
        name, args = self._func_args(expr)
        if name == "LOCAL":
            if not self._stack_allocated:
                self._warn(f"Tried to set LOCAL({args}), but we aren't within a Gosub routine")
            elif self._frames:
                self._frames[-1].locals[args] = value
        elif name == "CALLERID":
            member = args.lower()
            if member == "name":
                self.channel.caller_name = value
            elif member.startswith("num"):
                self.channel.caller_num = value
            else:
                raise DialplanError(f"CALLERID({args}) is not supported for writing")
        elif name == "CHANNEL":
            item = args.lower()
            if item == "hangup_handler_push":
                self._push_handler(value)
            elif item == "hangup_handler_pop":
                if self._handlers:
                    self._handlers.pop()
                self._push_handler(value)
            elif item == "hangup_handler_wipe":
                self._handlers.clear()
                self._push_handler(value)
            else:
                raise DialplanError(f"CHANNEL({args}) is not supported for writing")
        elif name == "GLOBAL":
            self.channel.globals[args] = value
        elif name == "CURLOPT":
            if args.lower() not in ("conntimeout", "httptimeout"):
                raise DialplanError(f"CURLOPT({args}) is not simulated")
            self._curlopts[args.lower()] = value
        else:
            raise DialplanError(f"dialplan function {name}() is not supported for writing")

    def _push_handler(self, value: str) -> None:
        if value:
            self._handlers.append(self._expand_sub_args(value))

    def _expand_sub_args(self, args: str) -> str:
        """``expand_gosub_args``: fill in the context and extension from the channel."""
        label, paren, params = args.partition("(")
        if paren:
            close = params.rfind(")")
            if close >= 0:
                params = params[:close]
            else:
                self._warn(f"Ouch.  No closing paren: '{args}'?")
        parts = label.split(",")
        context: str | None = parts[0]
        exten: str | None = parts[1] if len(parts) > 1 else None
        pri: str | None = parts[2] if len(parts) > 2 else None
        if exten is None:
            pri, exten, context = context, None, None
        elif pri is None:
            pri, exten, context = exten, context, None
        exten = exten or self._exten
        context = context or self._context
        if paren and params:
            return f"{context},{exten},{pri}({params})"
        return f"{context},{exten},{pri}"

    # ---------------------------------------------------------------- execution loops

    def _hung_up(self) -> bool:
        return self._dead or self.channel.hangup_requested.is_set()

    async def _pbx_loop(self) -> None:
        """``__ast_pbx_run``: run priorities; stop on -1, hangup, or the end (autofallthrough)."""
        while True:
            prio = self.dialplan.find(self._context, self._exten, self._priority)
            if prio is None:
                if self.dialplan.find(self._context, self._exten, 1) is None:
                    raise DialplanError(
                        f"channel sent to invalid extension {self._context},{self._exten}"
                    )
                return
            if not await self._execute(prio):
                return
            if self._hung_up():
                return
            self._priority += 1

    async def _run_h_exten(self) -> None:
        """``ast_pbx_h_exten_run``."""
        self._exten, self._priority = "h", 1
        while True:
            prio = self.dialplan.find(self._context, self._exten, self._priority)
            if prio is None or not await self._execute(prio):
                return
            self._priority += 1

    async def _run_sub(self, sub_args: str) -> None:
        """``gosub_run`` with ignore_hangup (hangup handlers)."""
        saved = (self._context, self._exten, self._priority)
        if await self._gosub(sub_args, special=True):
            while True:
                self._priority += 1
                prio = self.dialplan.find(self._context, self._exten, self._priority)
                if prio is None or not await self._execute(prio):
                    break
            if (self._context, self._exten, self._priority) != saved:
                # Abnormal exit (logged at NOTICE level): pop up to the special frame.
                while self._frames:
                    if self._frames.pop().is_special:
                        break
                self.set_variable("GOSUB_RETVAL", "")
        self._context, self._exten, self._priority = saved

    async def _execute(self, prio: Priority) -> bool:
        self._steps += 1
        if self._steps > self.max_steps:
            raise DialplanError(f"more than {self.max_steps} priorities executed (a loop?)")
        data = self.substitute(await self._prefetch_curl(prio.data))
        self.trace.append(f"{self._context},{self._exten},{self._priority}: {prio.app}({data})")
        return await self._exec_app(prio.app, data)

    async def _exec_app(self, name: str, data: str) -> bool:
        """``pbx_exec``: True when the application returned 0, False for -1."""
        if not _APP_NAME_RE.fullmatch(name):
            raise DialplanError(f"invalid application name {name!r}")
        key = name.lower()
        handler = self._apps.get(key)
        if handler is not None:
            return await handler(data)
        if key in _REFUSED_APPS:
            raise DialplanError(f"application {name} is not supported by the simulator")
        try:
            await self.channel.app(name, separate_args(data))
        except Hangup:
            return False
        return True

    # ---------------------------------------------------------------- applications

    async def _app_nothing(self, data: str) -> bool:
        return True

    async def _app_answer(self, data: str) -> bool:
        return not self._hung_up()

    async def _app_hangup(self, data: str) -> bool:
        return False

    async def _app_set(self, data: str) -> bool:
        if not data:
            self._warn("Set requires one variable name/value pair.")
            return True
        name, equal, value = data.partition("=")
        if not equal:
            self._warn("Set requires an '=' to be a valid assignment.")
            return True
        if " " in name:
            self._warn(f"Please avoid unnecessary spaces on variables ('{name}' set to '{value}')")
        if not name:
            self._warn("Set with an empty variable name")
            return True
        self.set_variable(name, value)
        return True

    async def _app_userevent(self, data: str) -> bool:
        if not data:
            self._warn("UserEvent requires an argument (eventname,optional event body)")
            return False
        args = separate_args(data, ",", True, 101)
        event = args[0]
        body: dict[str, str] = {}
        for extra in args[1:]:
            key, colon, value = extra.partition(":")
            if not colon:
                continue
            if key == "eventname":
                event = _ast_strip(value)
                continue
            body[key] = _ast_strip(value)
        try:
            await self.channel.user_event(event, list(body.items()))
        except Hangup:
            return False
        return True

    async def _safe_sleep(self, seconds: float) -> bool:
        """``ast_safe_sleep``: False when the channel is (or gets) hung up."""
        if self._hung_up():
            return False
        try:
            async with asyncio.timeout(seconds):
                await self.channel.hangup_requested.wait()
        except TimeoutError:
            return not self._hung_up()
        return False

    async def _app_waitforcondition(self, data: str) -> bool:
        try:
            spec = parse_wait_for_condition(data)
        except _WaitForConditionError as exc:
            self._warn(str(exc))
            if exc.hangup:
                return False
            self.set_variable("WAITFORCONDITIONSTATUS", "FAILURE")
            return True
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            condition = _from_bytes(_to_bytes(self.substitute(spec.condition))[:511])
            if check_condition(condition):
                self.set_variable("WAITFORCONDITIONSTATUS", "TRUE")
                return True
            elapsed_ms = int((loop.time() - start) * 1000)
            if spec.timeout_ms > 0 and elapsed_ms >= spec.timeout_ms:
                self.set_variable("WAITFORCONDITIONSTATUS", "TIMEOUT")
                return True
            if not await self._safe_sleep(spec.poll_ms / 1000):
                self.set_variable("WAITFORCONDITIONSTATUS", "HANGUP")
                return False

    async def _app_wait(self, data: str) -> bool:
        ms = _parse_timelen_ms(data)
        if ms is not None and ms > 0:
            return await self._safe_sleep(ms / 1000)
        return True

    def _resolve_goto(self, target: str) -> tuple[str, str, int]:
        """``ast_parseable_goto`` target -> (context, exten, priority); DialplanError when
        the label does not exist (Asterisk logs a warning and hangs up)."""
        parts = target.split(",")
        context: str | None = parts[0]
        exten: str | None = parts[1] if len(parts) > 1 else None
        pri: str = parts[2] if len(parts) > 2 else ""
        if exten is None:
            pri, exten, context = parts[0], None, None
        elif len(parts) == 2:
            pri, exten, context = parts[1], parts[0], None
        mode = 0
        if pri.startswith("+"):
            mode, pri = 1, pri[1:]
        elif pri.startswith("-"):
            mode, pri = -1, pri[1:]
        number = _scan_int_whole(pri)
        if number is None:
            found = self.dialplan.find_label(
                context if context is not None else self._context,
                exten if exten is not None else self._exten,
                pri,
            )
            if found is None or found < 1:
                raise DialplanError(
                    f"{self._context},{self._exten},{self._priority}: priority {pri!r} must be "
                    f"a number > 0, or valid label (target {target!r})"
                )
            number, mode = found, 0
        if mode:
            number = self._priority + number * mode
        return context or self._context, exten or self._exten, number

    def _goto(self, target: str) -> bool:
        if not target:
            self._warn("Goto requires an argument ([[context,]extension,]priority)")
            return False
        context, exten, number = self._resolve_goto(target)
        if self.dialplan.find(context, exten, number) is None:
            raise DialplanError(
                f"{self._context},{self._exten},{self._priority}: Goto({target}) leads to "
                f"nonexistent {context},{exten},{number}"
            )
        self._context, self._exten, self._priority = context, exten, number - 1
        return True

    async def _app_goto(self, data: str) -> bool:
        return self._goto(data)

    async def _app_gotoif(self, data: str) -> bool:
        if not data:
            self._warn("Ignoring, since there is no variable to check")
            return True
        condition, rest = _strsep(data, "?")
        branch1, branch2 = _strsep(rest, ":")
        branch = branch1 if check_condition(condition) else branch2
        if not branch:
            return True
        return self._goto(branch)

    async def _gosub(self, data: str, *, special: bool = False) -> bool:
        if not data:
            self._warn("Gosub requires an argument")
            return False
        label, paren, params = data.partition("(")
        args: list[str] = []
        if paren:
            close = params.rfind(")")
            if close >= 0:
                params = params[:close]
            else:
                self._warn(f"Ouch.  No closing paren: '{data}'?")
            args = separate_args(params, ",", False, 100)
        origin = (self._context, self._exten, self._priority)
        context, exten, number = self._resolve_goto(label)
        if self.dialplan.find(context, exten, number) is None:
            raise DialplanError(
                f"{origin[0]},{origin[1]},{origin[2]}: Gosub({data}) attempted to reach "
                f"nonexistent destination {context},{exten},{number}"
            )
        max_argc = max(len(args), self._frames[-1].arguments if self._frames else 0)
        frame = _Frame(origin[0], origin[1], origin[2] + 1, max_argc, special)
        for index in range(max_argc):
            frame.locals[f"ARG{index + 1}"] = args[index] if index < len(args) else ""
        frame.locals["ARGC"] = str(len(args))
        self._frames.append(frame)
        self._stack_allocated = True
        self._context, self._exten, self._priority = context, exten, number - 1
        return True

    async def _app_gosub(self, data: str) -> bool:
        return await self._gosub(data)

    async def _app_gosubif(self, data: str) -> bool:
        usage = "GosubIf requires an argument: GosubIf(cond?label1(args):label2(args)"
        if not data:
            self._warn(usage)
            return True
        cond = separate_args(data, "?", False, 2)
        if len(cond) != 2:
            self._warn(usage)
            return True
        labels = separate_args(cond[1], ":", False, 2)
        iftrue = labels[0] if labels else ""
        iffalse = labels[1] if len(labels) > 1 else ""
        if check_condition(cond[0]):
            return await self._gosub(iftrue) if iftrue else True
        return await self._gosub(iffalse) if iffalse else True

    async def _app_return(self, data: str) -> bool:
        if not self._frames:
            if self._stack_allocated:
                self._warn("Return without Gosub: stack is empty")
            else:
                self._warn("Return without Gosub: stack is unallocated")
            return False
        frame = self._frames.pop()
        self._context, self._exten, self._priority = frame.context, frame.exten, frame.priority - 1
        self.set_variable("GOSUB_RETVAL", data)
        return not frame.is_special

    async def _app_execif(self, data: str) -> bool:
        first_comma = data.find(",")
        first_question = data.find("?")
        truedata: str | None = None
        falsedata: str | None = None
        false_app: str | None = None
        if first_question < 0 or 0 <= first_comma < first_question:
            deprecated = separate_args(data, ",", True, 3)
            expr = deprecated[0] if deprecated else ""
            true_app = deprecated[1] if len(deprecated) > 1 else None
            truedata = deprecated[2] if len(deprecated) > 2 else None
            self._warn(
                f"Deprecated syntax found.  Please upgrade to using ExecIf(<expr>?"
                f"{true_app}({truedata}))"
            )
        else:
            parts = separate_args(data, "?", False, 2)
            expr = parts[0]
            remainder = parts[1] if len(parts) > 1 else ""
            if not remainder:
                self._warn("Usage: ExecIf(<expr>?<appiftrue>(<args>)[:<appiffalse>(<args)])")
                return False
            apps = separate_args(remainder, ":", False, 2)
            true_app = apps[0] if apps else None
            false_app = apps[1] if len(apps) > 1 else None
            if true_app is not None and "(" in true_app:
                true_app, truedata = true_app.split("(", 1)
                close = truedata.rfind(")")
                if close >= 0:
                    truedata = truedata[:close]
            if false_app is not None and "(" in false_app:
                false_app, falsedata = false_app.split("(", 1)
                close = falsedata.rfind(")")
                if close >= 0:
                    falsedata = falsedata[:close]
        if check_condition(expr):
            if not true_app:
                self._warn(f"Could not find application! ({true_app})")
                return False
            return await self._exec_app(true_app, truedata or "")
        if false_app:
            return await self._exec_app(false_app, falsedata or "")
        return True

    async def _app_dial(self, data: str) -> bool:
        args = separate_args(data, ",", True, 4)
        peers = args[0] if args else ""
        if not peers:
            self._warn("Dial requires an argument (technology/resource)")
            return False
        if self._hung_up():
            self.set_variable("DIALSTATUS", "CANCEL")  # "Caller hung up before dial."
            return False
        timeout_text = args[1] if len(args) > 1 else ""
        options = args[2] if len(args) > 2 else ""
        timeout: float | None = None
        if timeout_text:
            if "^" in timeout_text:
                raise DialplanError("Dial progress timeouts (answer^progress) are not supported")
            seconds = _atoi(timeout_text)
            if seconds > 0:
                timeout = float(seconds)
            else:
                self._warn(
                    f"Invalid timeout specified: '{timeout_text}'. Setting timeout to infinite"
                )
        letters = _parse_options(options)
        refused = letters & _REFUSED_DIAL_OPTIONS
        if refused:
            raise DialplanError(f"Dial options {''.join(sorted(refused))} are not supported")
        try:
            status = await self.channel.dial(peers, timeout, options)
        except Hangup:
            return False
        if status not in _DIAL_STATUSES:
            raise DialplanError(f"the host returned an unknown DIALSTATUS {status!r}")
        self.set_variable("DIALSTATUS", status)
        if self._hung_up() or status == "CANCEL":
            return False
        return not (status == "ANSWER" and "g" not in letters)
