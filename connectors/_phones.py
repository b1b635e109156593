"""Phone numbers as CRMs hold them: typed by people (``8 916 123-45-67``,
``+7 (916) 123 45 67``), searched by text or by exact digits."""

from __future__ import annotations

import re

import phonenumbers

from icm.numbers import Numbers, Skip

_LETTERS = re.compile(r"[^0-9\s()+.\-/]", re.ASCII)
# A number written inside free text: digits with the separators people type.
_WRITTEN = re.compile(r"\+?[0-9][0-9\s().\-/]{3,}[0-9]", re.ASCII)


def variants(numbers: Numbers, e164: str) -> list[str]:
    """The forms a CRM may store ``e164`` in, most likely first: ``79161234567``,
    ``+79161234567``, ``89161234567`` (as dialled in the country), ``9161234567``, and
    for a number of the configured area its local digits (``2221100``)."""
    parsed = phonenumbers.parse(e164, None)
    national = str(parsed.national_number)
    forms = [e164[1:], e164, numbers.national_digits(e164), national, local(numbers, e164)]
    return list(dict.fromkeys(f for f in forms if f))


def tail(e164: str, digits: int = 10) -> str:
    """The last ``digits`` digits: what a text search finds in any written form."""
    return e164[-digits:]


def local(numbers: Numbers, e164: str) -> str:
    """The local digits of a number in the configured area (``2221100`` for
    ``+74952221100`` with area code 495), as people there write it; else ``""``."""
    area = numbers.area_code
    if not area or not e164.startswith("+"):
        return ""
    national = str(phonenumbers.parse(e164, None).national_number)
    rest = national[len(area) :]
    return rest if national.startswith(area) and len(rest) >= 5 else ""


def search_digits(numbers: Numbers, e164: str) -> str:
    """What to give a textual search (digits matched anywhere in a stored phone): the
    last 10 digits, or for a number of the configured area its local digits, which every
    written form holds, the local one (``222-11-00``) included."""
    return local(numbers, e164) or tail(e164)


def in_text(numbers: Numbers, text: object, e164: str) -> bool:
    """Whether free text (a lead's name, a text field) holds ``e164`` written in any
    form."""
    if not isinstance(text, str | int):
        return False
    return any(same_number(numbers, m.group(), e164) for m in _WRITTEN.finditer(str(text)))


def written_number(numbers: Numbers, written: object) -> str | None:
    """A phone value as written in a CRM, in E.164; None if it is not a number. Text
    after the number (``доб. 12``, ``ext 5``) is ignored."""
    if not isinstance(written, str | int):
        return None
    text = str(written)
    cut = _LETTERS.search(text)
    if cut is not None:
        text = text[: cut.start()]
    found = numbers.normalise(text)
    return None if isinstance(found, Skip) else found


def same_number(numbers: Numbers, written: object, e164: str) -> bool:
    """Whether a phone value as written in a CRM is ``e164``."""
    return written_number(numbers, written) == e164
