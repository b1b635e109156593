"""What individual applications read from their data: Goto and Gosub targets, Dial
options, Wait's time length, ExecIf's branches (main/app.c, apps/app_stack.c,
apps/app_exec.c)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from simpbx.dialplan.args import separate_args
from simpbx.dialplan.clib import INT_MAX
from simpbx.dialplan.errors import DialplanError

_TIMELEN_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(\S*)")
_TIMELEN_FACTORS = {
    "": 1000.0,
    "s": 1000.0,
    "S": 1000.0,
    "h": 3_600_000.0,
    "H": 3_600_000.0,
    "m": 60_000.0,
    "M": 60_000.0,
}


def split_label(target: str) -> tuple[str | None, str | None, str]:
    """``[[context,]exten,]priority``: (context or None, exten or None, priority)."""
    parts = target.split(",")
    if len(parts) == 1:
        return None, None, parts[0]
    if len(parts) == 2:
        return None, parts[0], parts[1]
    return parts[0], parts[1], parts[2]


def split_priority_offset(pri: str) -> tuple[int, str]:
    """A Goto priority ``+N`` or ``-N`` (relative) or ``N``/label: (direction, the rest)."""
    if pri.startswith("+"):
        return 1, pri[1:]
    if pri.startswith("-"):
        return -1, pri[1:]
    return 0, pri


@dataclass(frozen=True)
class SubArgs:
    """A Gosub-style ``label(args)``: the label, the arguments text, how it was written."""

    label: str
    params: str
    has_paren: bool
    closed: bool  # False: '(' without its ')' (Asterisk says "Ouch.  No closing paren")


def split_sub_args(data: str) -> SubArgs:
    """``label(args)`` as Gosub and hangup handlers read it."""
    label, paren, params = data.partition("(")
    closed = True
    if paren:
        close = params.rfind(")")
        if close >= 0:
            params = params[:close]
        else:
            closed = False
    return SubArgs(label, params, bool(paren), closed)


def parse_options(options: str) -> set[str]:
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


def parse_timelen_ms(text: str) -> int | None:
    """``ast_app_parse_timelen(..., TIMELEN_SECONDS)`` -> milliseconds, None on error."""
    match = _TIMELEN_RE.match(text)
    if match is None:
        return None
    amount = float(match.group(1))
    unit = match.group(2)
    if unit.lower() == "ms":
        factor = 1.0
    elif unit in _TIMELEN_FACTORS:
        factor = _TIMELEN_FACTORS[unit]
    else:
        return None
    ms = amount * factor
    return INT_MAX if ms > INT_MAX else int(ms)


@dataclass(frozen=True)
class ExecIfBranches:
    """ExecIf's data: the condition and the application (with its data) for each side."""

    expr: str
    true_app: str | None
    true_data: str | None
    false_app: str | None = None
    false_data: str | None = None


def is_deprecated_execif(data: str) -> bool:
    """Whether ExecIf's data is the old ``expr,app,data`` form (no ``?`` before a comma)."""
    first_comma = data.find(",")
    first_question = data.find("?")
    return first_question < 0 or 0 <= first_comma < first_question


def deprecated_execif(data: str) -> ExecIfBranches:
    """``ExecIf(expr,app,data)``: the old form, with no false branch."""
    parts = separate_args(data, ",", True, 3)
    expr = parts[0] if parts else ""
    true_app = parts[1] if len(parts) > 1 else None
    true_data = parts[2] if len(parts) > 2 else None
    return ExecIfBranches(expr, true_app, true_data)


def execif_branches(data: str) -> ExecIfBranches | None:
    """``ExecIf(expr?app(data)[:app(data)])``; None when nothing follows the ``?``."""
    parts = separate_args(data, "?", False, 2)
    expr = parts[0]
    remainder = parts[1] if len(parts) > 1 else ""
    if not remainder:
        return None
    apps = separate_args(remainder, ":", False, 2)
    true_app, true_data = _app_call(apps[0] if apps else None)
    false_app, false_data = _app_call(apps[1] if len(apps) > 1 else None)
    return ExecIfBranches(expr, true_app, true_data, false_app, false_data)


def _app_call(text: str | None) -> tuple[str | None, str | None]:
    """``App(data)``: (application, data or None when there are no parentheses)."""
    if text is None or "(" not in text:
        return text, None
    app, data = text.split("(", 1)
    close = data.rfind(")")
    if close >= 0:
        data = data[:close]
    return app, data
