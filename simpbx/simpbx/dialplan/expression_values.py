"""The values of ``$[...]``: ``struct val`` of main/ast_expr2.y and its in-place conversions."""

from __future__ import annotations

from fractions import Fraction

from simpbx.dialplan.longdouble import fmt_ld, strtold

NUMBER, NUMSTR, STRING = 0, 1, 2  # AST_EXPR_number, AST_EXPR_numeric_string, AST_EXPR_string


class Value:
    """``struct val`` of ast_expr2.y (mutable, as the C code converts values in place)."""

    __slots__ = ("kind", "neg", "num", "s")

    def __init__(self, kind: int, s: str = "", num: Fraction | None = None) -> None:
        self.kind = kind
        self.s = s
        self.num = num if num is not None else Fraction(0)
        self.neg = False  # sign of a zero long double


def make_number(value: Fraction, negative_zero: bool = False) -> Value:
    """``make_number``: a long double value (a zero keeps its sign)."""
    val = Value(NUMBER, num=value)
    val.neg = negative_zero and value == 0
    return val


def make_str(text: str) -> Value:
    """``make_str``: a numeric string if it looks like a number, else a string."""
    isint = bool(text) and (text[0].isdigit() or text[0] in "-.")
    if isint:
        isint = all(c.isdigit() or c == "." for c in text)
    return Value(NUMSTR if isint else STRING, s=text)


def to_number(val: Value) -> bool:
    """``to_number``: convert in place; False for a string that is no number."""
    if val.kind == NUMBER:
        return True
    if val.kind == STRING:
        return False
    val.num = strtold(val.s)
    val.neg = False
    val.kind = NUMBER
    return True


def to_string(val: Value) -> None:
    """``to_string``: a number becomes its ``%.18Lg`` text, in place."""
    if val.kind != NUMBER:
        return
    val.s = fmt_ld(val.num, val.neg)
    val.kind = STRING


def strip_quotes(val: Value) -> None:
    """``strip_quotes``: a double-quoted string loses every double quote, in place."""
    if val.kind == NUMBER:
        return
    if val.s[:1] == '"' and val.s[-1:] == '"':
        val.s = val.s.replace('"', "")


def is_zero_or_null(val: Value) -> bool:
    """``is_zero_or_null``: a zero number, an empty string or a string that reads as 0."""
    if val.kind == NUMBER:
        return val.num == 0
    return val.s == "" or (to_number(val) and val.num == 0)
