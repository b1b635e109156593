"""What a parsed dialplan holds: contexts of extensions of priorities."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cmp_to_key

from simpbx.dialplan.patterns import ext_cmp

# A valid application name (pbx_config.c and pbx_exec refuse anything else).
APP_NAME_RE = re.compile(r"[A-Za-z0-9_]+")


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


@dataclass
class Extension:
    """One extension (name or ``_`` pattern) of a context: its priorities and labels."""

    name: str
    priorities: dict[int, Priority] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)


@dataclass
class Context:
    """One ``[context]``: its extensions in Asterisk's sort order, and what it includes."""

    name: str
    extensions: list[Extension] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)

    def extension(self, name: str) -> Extension:
        """The extension ``name`` (the same pattern however written), added if new."""
        for exten in self.extensions:
            if ext_cmp(exten.name, name) == 0:
                return exten
        new = Extension(name)
        self.extensions.append(new)
        self.extensions.sort(key=cmp_to_key(lambda a, b: ext_cmp(a.name, b.name)))
        return new
