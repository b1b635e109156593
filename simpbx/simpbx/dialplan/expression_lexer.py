"""The ``$[...]`` lexer (main/ast_expr2.fl): flex's longest match, earliest rule on ties."""

from __future__ import annotations

import re

from simpbx.dialplan.errors import DialplanError
from simpbx.dialplan.expression_values import NUMSTR, STRING, Value

Token = tuple[str, Value | None]

# The operator rules of ast_expr2.fl, in its order (the rule number breaks ties).
_OPERATORS: tuple[tuple[str, str], ...] = (
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
_BARE_CHARS = r"(?:[a-zA-Z0-9.';\\_^#@\x80-\U0010ffff]|\$[^{])+"
_BLANKS = " \t\r\n"  # rules 26 and 28: skipped, and nothing else matches there
# The rules after the operators and ${ (rule 25): (rule number, what it yields, pattern).
_RULES: tuple[tuple[int, str, re.Pattern[str]], ...] = (
    (27, "QUOTED", re.compile(r'"[^"]*"')),
    (29, "NUMBER", re.compile(r"[0-9]+(?:\.[0-9]+)?")),
    (30, "BARE", re.compile(_BARE_CHARS)),
    (31, "VAR", re.compile(_BARE_CHARS + r"\$\{")),
)


def lex(text: str) -> list[Token]:
    """The tokens of ``text``, ending with ``EOF``; operands carry their :class:`Value`.

    Unmatched characters are dropped (flex's default rule echoes them)."""
    tokens: list[Token] = []
    pos = 0
    n = len(text)
    while pos < n:
        if text[pos] in _BLANKS:
            pos += 1
            continue
        length, kind = _longest_match(text, pos)
        if length == 0:
            pos += 1  # flex default rule: ECHO the character, i.e. it is ignored
            continue
        lexeme = text[pos : pos + length]
        pos += length
        if kind == "VAR":
            raise DialplanError(
                f"'${{' inside an expression (from a variable's value?) is not supported: $[{text}]"
            )
        tokens.append(_token(kind, lexeme))
    tokens.append(("EOF", None))
    return tokens


def _longest_match(text: str, pos: int) -> tuple[int, str]:
    """(length, kind) of the rule flex picks at ``pos``; length 0 when none matches."""
    best_len, best_rule, best_kind = 0, 0, ""
    for rule, (op, kind) in enumerate(_OPERATORS):
        if text.startswith(op, pos) and len(op) > best_len:
            best_len, best_rule, best_kind = len(op), rule, kind
    if text.startswith("${", pos) and best_len < 2:  # rule 25
        best_len, best_rule, best_kind = 2, 25, "VAR"
    for rule, kind, pattern in _RULES:
        match = pattern.match(text, pos)
        if match is None:
            continue
        length = match.end() - pos
        if length > best_len or (length == best_len and rule < best_rule):
            best_len, best_rule, best_kind = length, rule, kind
    return best_len, best_kind


def _token(kind: str, lexeme: str) -> Token:
    if kind == "NUMBER":
        return "TOKEN", Value(NUMSTR, s=lexeme)
    if kind in ("QUOTED", "BARE"):
        return "TOKEN", Value(STRING, s=lexeme)
    return kind, None
