"""A parsed dialplan and Asterisk's lookups in it (``pbx_find_extension``, labels)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from simpbx.dialplan.contexts import Context, Extension, Priority
from simpbx.dialplan.errors import DialplanError
from simpbx.dialplan.parser import parse_text
from simpbx.dialplan.patterns import extension_matches


class Dialplan:
    """Parsed extensions.conf text(s)."""

    def __init__(self) -> None:
        self.globals: dict[str, str] = {}
        self._contexts: dict[str, Context] = {}

    @property
    def contexts(self) -> list[str]:
        return list(self._contexts)

    @classmethod
    def parse(cls, *texts: str, names: Sequence[str] | None = None) -> Dialplan:
        """Parse one or more extensions.conf texts into one dialplan (contexts merge)."""
        plan = cls()
        for index, text in enumerate(texts):
            name = names[index] if names is not None else f"<text {index + 1}>"
            parse_text(text, name, plan._contexts, plan.globals)
        for context in plan._contexts.values():
            for include in context.includes:
                if include not in plan._contexts:
                    raise DialplanError(
                        f"context {context.name!r} includes nonexistent context {include!r}"
                    )
        return plan

    def _search(
        self, context: str, exten: str, pick: Callable[[Extension], int | None]
    ) -> int | None:
        """``pbx_find_extension`` with the legacy matcher: first matching extension (in
        Asterisk's sort order) that has what is looked for, then the includes."""
        visited: list[str] = []

        def search(name: str) -> int | None:
            if any(name.lower() == seen.lower() for seen in visited):
                return None
            ctx = self._contexts.get(name)
            if ctx is None:
                return None
            for ext in ctx.extensions:
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

        def pick(ext: Extension) -> int | None:
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
