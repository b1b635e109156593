"""Phone numbers as CRMs hold them: typed by people (``8 916 123-45-67``,
``+7 (916) 123 45 67``), searched by text or by exact digits."""

from __future__ import annotations

import re

import phonenumbers

from icm.numbers import Numbers, Skip

_LETTERS = re.compile(r"[^0-9\s()+.\-/]", re.ASCII)


def variants(numbers: Numbers, e164: str) -> list[str]:
    """The forms a CRM may store ``e164`` in, most likely first: ``79161234567``,
    ``+79161234567``, ``89161234567`` (as dialled in the country), ``9161234567``."""
    parsed = phonenumbers.parse(e164, None)
    national = str(parsed.national_number)
    forms = [e164[1:], e164, numbers.national_digits(e164), national]
    return list(dict.fromkeys(f for f in forms if f))


def tail(e164: str, digits: int = 10) -> str:
    """The last ``digits`` digits: what a text search finds in any written form."""
    return e164[-digits:]


def same_number(numbers: Numbers, written: object, e164: str) -> bool:
    """Whether a phone value as written in a CRM is ``e164``. Text after the number
    (``доб. 12``, ``ext 5``) is ignored."""
    if not isinstance(written, str | int):
        return False
    text = str(written)
    cut = _LETTERS.search(text)
    if cut is not None:
        text = text[: cut.start()]
    found = numbers.normalise(text)
    return not isinstance(found, Skip) and found == e164
