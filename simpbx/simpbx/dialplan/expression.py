"""The ``$[...]`` evaluator: ast_expr2.y's grammar and operators on long doubles and strings.

Operator precedence, long double arithmetic printed with ``%.18Lg``, the string/number
comparison rules (quoted operands are strings and keep their quotes), and a syntax error
giving ``0`` with a warning, as ``ast_expr`` does."""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction
from functools import partial

from simpbx.dialplan.clib import INT_MAX, atoi, to_bytes
from simpbx.dialplan.errors import DialplanError
from simpbx.dialplan.expression_lexer import lex
from simpbx.dialplan.expression_values import (
    NUMBER,
    STRING,
    Value,
    is_zero_or_null,
    make_number,
    make_str,
    strip_quotes,
    to_number,
    to_string,
)
from simpbx.dialplan.longdouble import fmt_ld, ld_round
from simpbx.dialplan.posix_regex import posix_ere_to_python

_QUAD_MIN = Fraction(-(2**63))
# Binary operators and their precedence (bison's %left declarations, lowest first).
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
_COMPARISONS: dict[str, Callable[[int], bool]] = {
    "EQ": lambda cmp: cmp == 0,
    "NE": lambda cmp: cmp != 0,
    "LT": lambda cmp: cmp < 0,
    "GT": lambda cmp: cmp > 0,
    "LE": lambda cmp: cmp <= 0,
    "GE": lambda cmp: cmp >= 0,
}
_STARTS_EXPR = frozenset({"TOKEN", "LP", "MINUS", "COMPL"})


def evaluate_expression(text: str) -> tuple[str, list[str]]:
    """Evaluate the body of ``$[...]`` (already substituted) like ``ast_expr``.

    Returns ``(result, warnings)``."""
    warnings: list[str] = []
    return _Evaluator(text, warnings).evaluate(), warnings


class _SyntaxError(Exception):
    """The tokens do not form an expression (bison's syntax error)."""


class _Evaluator:
    """One ``$[...]`` body: parsed by precedence climbing and evaluated as it is parsed."""

    def __init__(self, text: str, warnings: list[str]) -> None:
        self.text = text
        self.warnings = warnings
        self.tokens = lex(text)
        self.pos = 0
        self._binary_ops: dict[str, Callable[[Value, Value], Value]] = {
            "OR": self._op_or,
            "AND": self._op_and,
            "PLUS": self._op_plus,
            "MINUS": self._op_minus,
            "MULT": self._op_times,
            "DIV": self._op_div,
            "MOD": self._op_rem,
            "TILDETILDE": self._op_tildetilde,
            "COLON": partial(self._op_regex, anchored=True),
            "EQTILDE": partial(self._op_regex, anchored=False),
        }

    def _warn(self, message: str) -> None:
        self.warnings.append(f"{message} in $[{self.text}]")

    def evaluate(self) -> str:
        try:
            if self.tokens[0][0] == "EOF":
                return ""  # the grammar's empty alternative: "" and no warning
            value = self._expr(1)
            self._expect("EOF")
        except _SyntaxError as exc:
            self._warn(f"syntax error: {exc}")
            return "0"  # ast_expr(): no io.val -> "0"
        if value.kind == NUMBER:
            return fmt_ld(value.num, value.neg)
        return value.s

    # ---------------------------------------------------------------- grammar

    def _peek(self) -> str:
        return self.tokens[self.pos][0]

    def _expect(self, kind: str) -> None:
        if self._peek() != kind:
            raise _SyntaxError(f"unexpected {self._peek()}, expecting {kind}")
        self.pos += 1

    def _expr(self, min_prec: int) -> Value:
        left = self._prefix()
        while True:
            kind = self._peek()
            prec = _BINARY.get(kind)
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

    def _prefix(self) -> Value:
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
        raise _SyntaxError(f"unexpected {kind}")

    def _call(self, name: Value) -> Value:
        self.pos += 1  # (
        self._expr(1)
        while self._peek() == "COMMA":
            self.pos += 1
            if self._peek() in _STARTS_EXPR:
                self._expr(1)
        self._expect("RP")
        if name.s and all(c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789" for c in name.s):
            raise DialplanError(f"function call {name.s}() inside $[...] is not supported")
        self._warn(f"Error! '{name.s}' is not possibly a function name!")
        return make_number(Fraction(0))

    # ---------------------------------------------------------------- operators

    def _binary(self, kind: str, left: Value, right: Value) -> Value:
        if kind in _COMPARISONS:
            return self._compare(kind, left, right)
        return self._binary_ops[kind](left, right)

    def _op_or(self, left: Value, right: Value) -> Value:
        return right if is_zero_or_null(left) else left

    def _op_and(self, left: Value, right: Value) -> Value:
        if is_zero_or_null(left) or is_zero_or_null(right):
            return make_number(Fraction(0))
        return left

    def _op_tildetilde(self, left: Value, right: Value) -> Value:
        to_string(left)
        to_string(right)
        strip_quotes(left)
        strip_quotes(right)
        return make_str(left.s + right.s)

    def _compare(self, kind: str, left: Value, right: Value) -> Value:
        if left.kind == STRING or right.kind == STRING:
            to_string(left)
            to_string(right)
            a, b = to_bytes(left.s), to_bytes(right.s)  # strcoll, C locale: byte order
            cmp = (a > b) - (a < b)
        else:
            to_number(left)
            to_number(right)
            cmp = (left.num > right.num) - (left.num < right.num)
        return make_number(Fraction(int(_COMPARISONS[kind](cmp))))

    def _op_cond(self, cond: Value, iftrue: Value, iffalse: Value) -> Value:
        if cond.kind == STRING:
            return iftrue if cond.s not in ("", '""', "0") else iffalse
        to_number(cond)
        return iftrue if cond.num != 0 else iffalse

    def _op_plus(self, left: Value, right: Value) -> Value:
        if not to_number(left):
            self._warn("non-numeric argument")
            if not to_number(right):
                return make_number(Fraction(0))
            return right
        if not to_number(right):
            return left
        result = ld_round(left.num + right.num)
        if _chk_plus(left.num, right.num, result):
            self._warn("overflow")
        return make_number(result, left.neg and right.neg)

    def _op_minus(self, left: Value, right: Value) -> Value:
        if not to_number(left):
            self._warn("non-numeric argument")
            if not to_number(right):
                return make_number(Fraction(0))
            return make_number(-right.num)
        if not to_number(right):
            self._warn("non-numeric argument")
            return left
        result = ld_round(left.num - right.num)
        if _chk_minus(left.num, right.num, result):
            self._warn("overflow")
        return make_number(result, left.neg and not right.neg)

    def _op_negate(self, val: Value) -> Value:
        if not to_number(val):
            self._warn("non-numeric argument")
            return make_number(Fraction(0))
        result = -val.num
        if _chk_minus(Fraction(0), val.num, result):
            self._warn("overflow")
        return make_number(result, not val.neg if val.num == 0 else False)

    def _op_compl(self, val: Value) -> Value:
        if val.kind == NUMBER:
            truth = 0 if val.num == 0 else 1
        elif val.s in ("", "0"):
            truth = 0
        else:
            truth = atoi(val.s)
        return make_number(Fraction(int(not truth)))

    def _op_times(self, left: Value, right: Value) -> Value:
        if not to_number(left) or not to_number(right):
            self._warn("non-numeric argument")
            return make_number(Fraction(0))
        result = ld_round(left.num * right.num)
        if left.num != 0 and ld_round(result / left.num) != right.num:
            self._warn("overflow")
        negative = (left.num < 0 or (left.num == 0 and left.neg)) != (
            right.num < 0 or (right.num == 0 and right.neg)
        )
        return make_number(result, negative)

    def _op_div(self, left: Value, right: Value) -> Value:
        if not to_number(left):
            self._warn("non-numeric argument")
            return make_number(Fraction(0))
        if not to_number(right):
            self._warn("non-numeric argument")
            return make_number(Fraction(INT_MAX))
        if right.num == 0:
            self._warn("division by zero")
            return make_number(Fraction(INT_MAX))
        result = ld_round(left.num / right.num)
        if left.num == _QUAD_MIN and right.num == -1:
            self._warn("overflow")
        return make_number(result, (left.neg if left.num == 0 else False) != (right.num < 0))

    def _op_rem(self, left: Value, right: Value) -> Value:
        if not to_number(left) or not to_number(right):
            self._warn("non-numeric argument")
            return make_number(Fraction(0))
        if right.num == 0:
            self._warn("div by zero")
            return right
        quotient = left.num / right.num
        truncated = quotient.numerator // quotient.denominator
        if quotient < 0 and truncated != quotient:
            truncated += 1
        result = left.num - truncated * right.num
        return make_number(result, left.num < 0 or (left.num == 0 and left.neg))

    def _op_regex(self, left: Value, right: Value, *, anchored: bool) -> Value:
        to_string(left)
        to_string(right)
        strip_quotes(left)
        strip_quotes(right)
        try:
            pattern = re.compile(posix_ere_to_python(right.s))
        except re.error as exc:
            self._warn(f"regcomp() error : {exc}")
            return make_str("")
        match = pattern.match(left.s) if anchored else pattern.search(left.s)
        if match is not None:
            if pattern.groups and match.group(1) is not None:
                return make_str(match.group(1))
            return make_number(Fraction(match.end() - match.start()))
        if pattern.groups == 0:
            return make_number(Fraction(0))
        return make_str("")


def _chk_plus(a: Fraction, b: Fraction, r: Fraction) -> bool:
    """``chk_plus``: the sum overflowed (its sign is wrong)."""
    return (a > 0 and b > 0 and r <= 0) or (a < 0 and b < 0 and r >= 0)


def _chk_minus(a: Fraction, b: Fraction, r: Fraction) -> bool:
    """``chk_minus``: the difference overflowed."""
    if b == _QUAD_MIN:
        return a >= 0
    return _chk_plus(a, -b, r)
