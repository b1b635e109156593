"""The managers ICM may route to: extensions, names, mobiles, exceptions.

Built once from the configuration (and rebuilt on reload). It answers the checks the
router makes before trusting a source: is this a manager's extension, is it an exception,
is this caller one of the managers' own mobiles, which extension is this CRM user's.
"""

from __future__ import annotations

from dataclasses import dataclass

from icm.config import EXTENSION, EXTENSION_RANGE, Config
from icm.numbers import Numbers


@dataclass(frozen=True, slots=True)
class Manager:
    """A manager ICM may route to: his extension, name and mobiles."""

    extension: str
    name: str = ""
    mobiles: tuple[str, ...] = ()


class Managers:
    """Lookup tables over the configured managers.

    :param ranges: extra extensions (or ``(first, last)`` ranges) routable without a
        ``[managers.<ext>]`` entry.
    """

    def __init__(
        self,
        managers: list[Manager],
        *,
        ranges: list[tuple[int, int]] | None = None,
        exceptions: frozenset[str] = frozenset(),
        users: dict[tuple[str, str], str] | None = None,
        emails: dict[str, str] | None = None,
    ) -> None:
        self._by_extension = {m.extension: m for m in managers}
        self._ranges = ranges or []
        self._exceptions = exceptions
        self._mobile_owner = {mobile: m for m in managers for mobile in m.mobiles}
        self._users = users or {}  # (source, CRM user id) -> extension
        self._emails = emails or {}  # e-mail (lower case) -> extension

    @classmethod
    def from_config(cls, config: Config, numbers: Numbers | None = None) -> Managers:
        numbers = numbers or config.numbers()
        managers = [
            Manager(
                extension=ext,
                name=section.name,
                mobiles=tuple(numbers.parse(m) for m in section.mobiles),
            )
            for ext, section in config.managers.items()
        ]
        ranges = []
        for item in config.routing.extensions:
            match = EXTENSION_RANGE.match(item)
            first, last = (int(match[1]), int(match[2])) if match else (int(item), int(item))
            ranges.append((first, last))
        exceptions = frozenset(
            item if EXTENSION.match(item) else numbers.parse(item)
            for item in config.routing.exceptions
        )
        users = {
            (source, str(user)): ext
            for ext, section in config.managers.items()
            for source, user in section.ids.items()
        }
        emails = {s.email: ext for ext, s in config.managers.items() if s.email}
        return cls(managers, ranges=ranges, exceptions=exceptions, users=users, emails=emails)

    def get(self, extension: str) -> Manager | None:
        """The manager at ``extension``, if ICM may route to it."""
        manager = self._by_extension.get(extension)
        if manager is not None:
            return manager
        if EXTENSION.match(extension) and any(a <= int(extension) <= b for a, b in self._ranges):
            return Manager(extension=extension)
        return None

    def by_user(self, source: str, user: str | None, email: str | None = None) -> Manager | None:
        """The manager a CRM user is: by his id in ``source`` (``ids``), else by e-mail."""
        extension = None
        if user is not None:
            extension = self._users.get((source, user))
        if extension is None and email:
            extension = self._emails.get(email.strip().lower())
        return self._by_extension.get(extension) if extension is not None else None

    def is_exception(self, extension_or_number: str) -> bool:
        return extension_or_number in self._exceptions

    def owner_of_mobile(self, number: str) -> Manager | None:
        """The manager whose mobile ``number`` (E.164) is, if any."""
        return self._mobile_owner.get(number)

    def __len__(self) -> int:
        return len(self._by_extension)
