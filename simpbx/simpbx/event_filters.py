"""A manager.conf user's ``eventfilter`` lines, as ``main/manager.c`` (Asterisk 20.19)
reads and applies them.

Legacy form: ``eventfilter = PATTERN`` (``!PATTERN`` excludes), a POSIX extended regular
expression searched in the whole event text. Advanced form:
``eventfilter(action(include|exclude),name(Event),header(Name),method(M)) = PATTERN`` with
M one of regex, exact, starts_with, ends_with, contains, none. With include filters only,
an event passes when one matches; with exclude filters only, when none does; with both,
when an include matches and no exclude does. A filter Asterisk would refuse is skipped,
with its warning kept in :attr:`EventFilters.warnings`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from simpbx.dialplan.errors import DialplanError
from simpbx.dialplan.posix_regex import posix_ere_to_python

METHODS = frozenset({"regex", "exact", "starts_with", "ends_with", "contains", "none"})
# glibc's GNU operators: a backslash before any other letter or digit is that character.
_GNU_ESCAPES = frozenset("wWsSbB<>`'")


class FilterError(ValueError):
    """A filter Asterisk refuses (it logs a warning and ignores the line)."""


@dataclass(frozen=True)
class EventFilter:
    """One ``eventfilter`` line."""

    exclude: bool
    method: str
    pattern: str
    event_name: str | None = None
    header: str | None = None  # with its trailing ":"
    regex: re.Pattern[str] | None = None

    def matches(self, event_name: str, text: str) -> bool:
        """``filter_cmp_fn``: the whole text, or each line starting with the header."""
        if self.event_name is not None and self.event_name != event_name:
            return False
        if self.header is None:
            return self._match(text)
        for line in text.split("\n"):
            line = line.rstrip("\r")
            if not line.startswith(self.header):
                continue
            value = line[len(self.header) :].lstrip(" \t")
            if value and self._match(value):
                return True
        return False

    def _match(self, data: str) -> bool:
        """``match_eventdata``."""
        if self.method == "regex":
            assert self.regex is not None
            return self.regex.search(data) is not None
        if self.method == "exact":
            return data == self.pattern
        if self.method == "starts_with":
            return data.startswith(self.pattern)
        if self.method == "ends_with":
            return data.endswith(self.pattern)
        if self.method == "contains":
            return self.pattern in data
        return True  # none


def compile_posix(pattern: str) -> re.Pattern[str]:
    """``regcomp(REG_EXTENDED | REG_NOSUB)``: only whether it matches counts, so POSIX's
    longest alternative and Python's first one agree here; ``\\d`` is a "d" (not a GNU
    operator), ``.`` crosses line ends (no REG_NEWLINE)."""
    plain: list[str] = []
    pos = 0
    while pos < len(pattern):
        char, nxt = pattern[pos], pattern[pos + 1 : pos + 2]
        if char != "\\":
            plain.append(char)
            pos += 1
            continue
        if nxt in _GNU_ESCAPES or nxt.isdigit():
            raise FilterError(f"regex operator \\{nxt} is not supported: {pattern!r}")
        plain.append(nxt if nxt.isalpha() else char + nxt)
        pos += 2
    try:
        return re.compile(posix_ere_to_python("".join(plain), match_only=True), re.DOTALL)
    except (DialplanError, re.error) as exc:
        raise FilterError(f"Unable to compile regex filter for '{pattern}': {exc}") from exc


def parse_filter(criteria: str, pattern: str) -> EventFilter:
    """``manager_add_filter``: ``criteria`` is the key (``eventfilter`` or
    ``eventfilter(...)``), ``pattern`` the value."""
    exclude = pattern.startswith("!")
    if exclude:
        pattern = pattern[1:]
    opening = criteria.find("(")
    if opening < 0:
        if not pattern:
            raise FilterError(f"'{criteria} = {pattern}': Legacy filter with no filter pattern")
        return EventFilter(exclude, "regex", pattern, regex=compile_posix(pattern))
    options = criteria[opening + 1 :].strip()
    if not options.endswith(")"):
        raise FilterError(f"'{criteria} = {pattern}': Filter options not formatted correctly")
    method, name, header, found = "none", None, None, set()
    for option in (o for o in re.split(r"[ ,)]+", options) if o):
        key, _, value = option.partition("(")
        value = value.strip()
        if key == "action" and value in ("include", "exclude"):
            exclude = value == "exclude"
        elif key == "name" and value:
            name = value
        elif key == "header" and value:
            header = value if value.endswith(":") else value + ":"
        elif key == "method" and value in METHODS:
            method = value
        else:
            raise FilterError(f"'{criteria} = {pattern}': Filter option '{option}' is unknown")
        found.add(key)
    if pattern and method == "none":
        raise FilterError(f"'{criteria} = {pattern}': method can't be 'none' with a pattern")
    if not pattern and method != "none":
        raise FilterError(f"'{criteria} = {pattern}': method can't be '{method}' with no pattern")
    if not pattern and not ({"name", "header"} & found):
        raise FilterError(f"'{criteria} = {pattern}': No name or header option found")
    regex = compile_posix(pattern) if method == "regex" else None
    return EventFilter(exclude, method, pattern, name, header, regex)


@dataclass
class EventFilters:
    """A user's filters, split as Asterisk keeps them."""

    include: list[EventFilter] = field(default_factory=list)
    exclude: list[EventFilter] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, lines: list[tuple[str, str]]) -> EventFilters:
        filters = cls()
        for criteria, pattern in lines:
            try:
                entry = parse_filter(criteria, pattern)
            except FilterError as exc:
                filters.warnings.append(str(exc))
                continue
            (filters.exclude if entry.exclude else filters.include).append(entry)
        return filters

    def should_send(self, event_name: str, text: str) -> bool:
        """``should_send_event``."""
        if self.include and not any(f.matches(event_name, text) for f in self.include):
            return False
        return not any(f.matches(event_name, text) for f in self.exclude)
