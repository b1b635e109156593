"""WaitForCondition's data, read exactly as apps/app_waitforcond.c reads it."""

from __future__ import annotations

from dataclasses import dataclass

from simpbx.dialplan.args import separate_args
from simpbx.dialplan.clib import scan_float


@dataclass(frozen=True)
class WaitForConditionSpec:
    """What ``waitforcond_exec`` extracts from its (already substituted) data."""

    replacement: str
    condition: str  # with '$' put back; NOTE: runs to the end of the data (see parse)
    timeout_ms: int  # 0: no timeout
    poll_ms: int


class WaitForConditionError(Exception):
    """WaitForCondition refuses its data; ``hangup`` tells whether the app returns -1."""

    def __init__(self, message: str, *, hangup: bool) -> None:
        super().__init__(message)
        self.hangup = hangup


def parse_wait_for_condition(data: str) -> WaitForConditionSpec:
    """Parse WaitForCondition's data exactly as apps/app_waitforcond.c does.

    Quirk reproduced: the C code never terminates the expression at its closing bracket,
    so the condition it evaluates is the rest of the whole data, e.g.
    ``$["${X}" = "1"],2,0.02``; pbx_checkcondition then reads only its leading integer.

    Raises :class:`WaitForConditionError`."""
    rep = _replacement(data)
    expression_start = 2
    timeout_ms, poll_ms = _options(data, _expression_end(data, expression_start))
    condition = data[expression_start:].replace(rep, "$")
    return WaitForConditionSpec(rep, condition, timeout_ms, poll_ms)


def _failure(message: str) -> WaitForConditionError:
    return WaitForConditionError(message, hangup=False)


def _replacement(data: str) -> str:
    """The character standing for ``$``, checked with the separator and expression start."""
    if not data:
        raise _failure("WaitForCondition requires a condition")
    open_bracket = data.find("[")
    if open_bracket < 0 or data.find("]", open_bracket) < 0:
        raise _failure("No expression detected. Did you forget to replace the $ signs?")
    rep = data[0]
    if rep in "$[]{}":
        raise _failure(f"Dollar sign replacement cannot be {rep}.")
    if data[1:2] != ",":
        raise _failure(f"Invalid separator: {data[1:2]}")
    if data[2:3] != rep:
        raise _failure(f"Expression start does not match provided replacement: {data[2:3]}")
    return rep


def _expression_end(data: str, pos: int) -> int:
    """The position just after the bracket that closes the expression starting at ``pos``."""
    brackets = 0
    while True:
        pos += 1
        if pos >= len(data):
            raise _failure("Could not parse end of expression.")
        if data[pos] == "[":
            brackets += 1
        elif data[pos] == "]":
            brackets -= 1
        if brackets == 0:
            return pos + 1


def _options(data: str, pos: int) -> tuple[int, int]:
    """(timeout_ms, poll_ms) from what follows the expression."""
    timeout_ms = 0
    poll_ms = 50
    pos += 1  # "eat comma separator" (whatever the character is)
    if pos >= len(data):
        return timeout_ms, poll_ms
    options = separate_args(data[pos:], ",", True, 2)
    timeout_text = options[0] if options else ""
    interval_text = options[1] if len(options) > 1 else ""
    if timeout_text:
        timeout = scan_float(timeout_text)
        if timeout is None:
            raise WaitForConditionError(
                f"Invalid timeout provided: {timeout_text}. No timeout set.", hangup=True
            )
        timeout_ms = int(timeout * 1000.0)
    if interval_text:
        poll_ms = _poll_ms(interval_text)
    return timeout_ms, poll_ms


def _poll_ms(interval_text: str) -> int:
    poll = scan_float(interval_text)
    if poll is None:
        raise WaitForConditionError(
            f"Invalid polling interval provided: {interval_text}.", hangup=True
        )
    if poll < 0.001:
        raise WaitForConditionError("Polling interval cannot be less than 1ms.", hangup=True)
    return int(poll * 1000.0)
