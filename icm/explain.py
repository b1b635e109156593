"""``icm lookup --explain --at``: the moment to check the rules at, and the rules' part
of a decision as lines for a person."""

from __future__ import annotations

from datetime import datetime

from icm.model import Decision
from icm.rules import Rules

AT_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")


def parse_at(text: str, rules: Rules) -> datetime:
    """``"2026-12-05 21:30"`` as a moment in the rules' time zone (an offset given in the
    text, ``2026-12-05T21:30+03:00``, wins). ValueError with the expected form."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--at {text!r} is not a date and time (expected e.g. '2026-12-05 21:30')"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=rules.zone) if rules.zone else moment.astimezone()
    return moment


def check_lines(decision: Decision, moment: datetime) -> list[str]:
    """The checks in the order they ran, and what the dialplan will do after the dial."""
    zone = moment.tzname() or ""
    lines = [f"  checks in [rules] order at {moment:%a %Y-%m-%d %H:%M} {zone}:".rstrip()]
    for i, check in enumerate(decision.checks, 1):
        lines.append(f"  {i}. {check.rule:<9} {check.outcome:<8} {check.detail}")
    if not decision.checks:
        lines.append("  (none: the number was settled before the rules)")
    if decision.rule:
        lines.append(f"  decided by: {decision.rule}")
    if decision.deputy:
        lines.append(f"  deputy {decision.deputy} is dialled instead of manager {decision.manager}")
    if decision.fallback is not None:
        fallback = decision.fallback
        lines.append(
            f"  if the manager's dial ends {' or '.join(fallback.on)}: deputy "
            f"{fallback.extension} ({fallback.dial})"
        )
    return lines
