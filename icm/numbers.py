"""One normalised form for every phone number: E.164 (``+74951234567``).

``8 495 123-45-67``, ``+7 (495) 123 45 67``, ``74951234567`` and, with area code 495,
``1234567`` are the same client. Hidden or junk caller IDs are not numbers: they give a
:class:`Skip` that says why, so the router sends the call straight back to its scenario.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

# What carriers and Asterisk put in CallerIDNum when the number is hidden.
_HIDDEN = frozenset(
    {"", "anonymous", "unknown", "<unknown>", "restricted", "private", "unavailable", "withheld"}
)
# Characters people and carriers put around digits; anything else means junk.
_SEPARATORS = re.compile(r"[\s().\-/]", re.ASCII)
_DIALABLE = re.compile(r"\+?[0-9]+")
_MAX_RAW = 64
# A caller ID with control characters is junk, not a number with odd separators: a CR or
# LF in it (a SIP From can carry %0D%0A) cuts AMI frames and AGI environments, so each
# entry would read a different piece of it.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_digits(text: str) -> bool:
    """Only ASCII digits 0-9, at least one: ``str.isdigit`` also takes Arabic-Indic,
    full-width and superscript digits, which no PBX token or extension holds."""
    return text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class Skip:
    """A caller ID that is not a number; ``reason`` is for logs and explanations."""

    reason: str


class NumberError(ValueError):
    """A configured number (default number, mobile, binding) that is not a phone number."""


class Numbers:
    """Normalises numbers for one region (country and optional area code).

    :param country: ISO 3166 country code used for numbers written without ``+``, e.g. ``RU``.
    :param area_code: prepended to local numbers delivered without it, e.g. ``495``.
    """

    def __init__(self, country: str, area_code: str = "") -> None:
        self.country = country.upper()
        self.area_code = area_code
        self._cached = lru_cache(maxsize=8192)(self._normalise)

    def normalise(self, raw: str | None) -> str | Skip:
        """The E.164 form of a caller ID, or :class:`Skip` saying why it is not a number."""
        return self._cached(raw or "")

    def parse(self, raw: str) -> str:
        """The E.164 form of a configured number; :class:`NumberError` if it is not one."""
        result = self.normalise(raw)
        if isinstance(result, Skip):
            raise NumberError(f"{raw!r} is not a phone number ({result.reason})")
        return result

    def is_number(self, raw: str) -> bool:
        return not isinstance(self.normalise(raw), Skip)

    def national_digits(self, e164: str) -> str:
        """Digits as dialled inside the country, trunk prefix included (``89161234567``)."""
        parsed = phonenumbers.parse(e164, None)
        dialled = phonenumbers.format_out_of_country_calling_number(parsed, self.country)
        return re.sub(r"[^0-9]", "", dialled)

    def _normalise(self, raw: str) -> str | Skip:
        if _CONTROL.search(raw):
            return Skip("caller ID holds control characters")
        text = raw.strip()
        if text.lower() in _HIDDEN:
            return Skip("hidden caller ID")
        if len(text) > _MAX_RAW:
            return Skip("caller ID too long")
        compact = _SEPARATORS.sub("", text)
        if not _DIALABLE.fullmatch(compact):
            return Skip("caller ID is not a number")
        if compact.startswith("00"):
            compact = "+" + compact[2:]
        for candidate in self._candidates(compact):
            number = self._possible(candidate)
            if number is not None:
                return number
        return Skip("too short" if len(compact.lstrip("+")) < 7 else "not a valid number")

    def _candidates(self, compact: str) -> list[str]:
        if compact.startswith("+"):
            return [compact]
        candidates = [compact]
        if self.area_code:
            candidates.append(self.area_code + compact)
        # Country code written without "+" (74951234567).
        candidates.append("+" + compact)
        return candidates

    def _possible(self, candidate: str) -> str | None:
        try:
            parsed = phonenumbers.parse(candidate, self.country)
        except NumberParseException:
            return None
        reason = phonenumbers.is_possible_number_with_reason(parsed)
        if reason != ValidationResult.IS_POSSIBLE:
            return None
        if not phonenumbers.is_valid_number(parsed):
            return None
        return phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
