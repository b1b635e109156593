"""Dial strings from the configured templates, and back: which extension a channel is.

``[dial] extension = "SIP/{ext}"`` gives ``SIP/101`` for extension 101, and tells that
channel ``SIP/101-0000002a`` is extension 101's phone. External numbers use
``[dial] external`` with ``{number}`` (E.164 digits without ``+``), ``{e164}`` or
``{national}`` (as dialled inside the country, trunk prefix included).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from icm.config import EXTENSION, DialSettings
from icm.numbers import Numbers


class DialStrings:
    """Dial() strings from the configured templates, and the extension behind a channel."""

    def __init__(self, settings: DialSettings, numbers: Numbers) -> None:
        self.settings = settings
        self.numbers = numbers
        before, _, after = settings.extension.partition("{ext}")
        self._device = re.compile(f"^{re.escape(before)}(?P<ext>[0-9]+){re.escape(after)}$")

    def extension(self, ext: str) -> str:
        return self.settings.extension.format(ext=ext)

    def external(self, e164: str) -> str:
        return self._number(self.settings.external, e164)

    def default(self, target: str) -> str:
        """The default number: an extension or a phone number (already validated)."""
        if self.settings.default:
            number = target if EXTENSION.match(target) else self.numbers.parse(target)
            return self._number(self.settings.default, number)
        if EXTENSION.match(target):
            return self.extension(target)
        return self.external(self.numbers.parse(target))

    def device(self, ext: str) -> str:
        """The device whose state tells whether ``ext`` is reachable (``SIP/101``)."""
        return self.extension(ext).split("@", 1)[0]

    def extension_of_channel(self, channel: str) -> str | None:
        """The extension whose phone ``channel`` (``SIP/101-0000002a``) belongs to."""
        device = channel.rpartition("-")[0] or channel
        match = self._device.match(device)
        return match["ext"] if match else None

    @staticmethod
    def join(parts: list[str]) -> str:
        """Several targets rung at once (``SIP/101&SIP/trunk/79161234567``)."""
        return "&".join(dict.fromkeys(p for p in parts if p))

    def _number(self, template: str, number: str) -> str:
        if not number.startswith("+"):  # an extension given to the default template
            return template.format(number=number, e164=number, national=number)
        return template.format(
            number=number[1:], e164=number, national=self.numbers.national_digits(number)
        )


_TECHNOLOGY = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)/")
# Channel technologies that never show up as devices (a Local channel is dialplan).
_NOT_DEVICES = {"LOCAL"}


def technology_warnings(settings: DialSettings, devices: Iterable[str]) -> list[str]:
    """One line for each dial template whose channel technology is not among the
    devices Asterisk reports (``PJSIP/101``, or a hint's ``SIP/101&Custom:DND101``): such
    a template dials a technology this Asterisk does not have (CHANUNAVAIL, every known
    client OFFLINE). Nothing to say when Asterisk reports no channel device at all."""
    reported: dict[str, str] = {}
    for device in devices:
        for part in device.split("&"):
            match = _TECHNOLOGY.match(part.strip())
            if match:
                reported.setdefault(match[1].upper(), part.strip())
    if not reported:
        return []
    seen = ", ".join(f"{tech} (e.g. {example})" for tech, example in sorted(reported.items()))
    lines = []
    for key in ("extension", "external", "default"):
        template = getattr(settings, key)
        match = _TECHNOLOGY.match(template)
        if not match or match[1].upper() in reported or match[1].upper() in _NOT_DEVICES:
            continue
        lines.append(
            f"dial.{key} = {template!r} dials channel technology {match[1]}, but Asterisk "
            f"reports devices of {seen} only: such calls fail (CHANUNAVAIL, the manager "
            "counts as OFFLINE); set [dial] to the technology your phones use, e.g. "
            f"{key} = {_suggest(template, reported)!r}"
        )
    return lines


def _suggest(template: str, reported: dict[str, str]) -> str:
    if "PJSIP" in reported:
        if template.startswith("SIP/trunk/"):
            return template.replace("SIP/trunk/", "PJSIP/", 1) + "@trunk"
        return _TECHNOLOGY.sub("PJSIP/", template, count=1)
    tech = next(iter(sorted(reported)))
    if tech == "SIP" and template.startswith("PJSIP/") and "@" in template:
        head, _, endpoint = template.partition("@")
        return f"SIP/{endpoint}/{head.removeprefix('PJSIP/')}"
    return _TECHNOLOGY.sub(f"{tech}/", template, count=1)
