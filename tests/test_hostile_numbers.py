"""Caller ID fuzzing: whatever a trunk, a carrier or a hostile caller puts in CallerIDNum,
the normaliser gives an E.164 number or a Skip with a reason, never an exception."""

from __future__ import annotations

import re

import phonenumbers
from hypothesis import given
from hypothesis import strategies as st

from icm.numbers import Numbers, Skip

from .fuzzing import fuzz

# libphonenumber accepts national numbers up to 17 digits (some German ranges): longer
# than E.164's 15 in all, and valid.
E164 = re.compile(r"^\+[1-9][0-9]{4,19}$")
REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)

# Shapes that reach the deep parts of the normaliser more often than random text does.
DIGITS = st.text("0123456789", min_size=1, max_size=20)
SEPARATED = st.lists(
    st.tuples(DIGITS, st.sampled_from(["", " ", "-", ".", "(", ")", "/", "\t", "\u00a0"])),
    max_size=6,
).map(lambda parts: "".join(d + s for d, s in parts))
CALLER_IDS = st.one_of(
    st.text(max_size=80),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=300),  # any code point
    DIGITS,
    SEPARATED,
    st.tuples(st.sampled_from(["+", "00", "8", "7", "+7", "++", "+-", ""]), SEPARATED).map("".join),
    st.from_regex(r"\A[+]?[\d\s()\-./]{0,70}\Z"),  # \d: Arabic-Indic, Devanagari... digits
    st.sampled_from(
        ["", " ", "anonymous", "<unknown>", "Restricted", "PRIVATE", "0", "+", "00", "+0", "\x00"]
    ),
)


def check(numbers: Numbers, raw: str | None) -> None:
    result = numbers.normalise(raw)
    if isinstance(result, Skip):
        assert result.reason, raw
        return
    assert isinstance(result, str) and E164.match(result), (raw, result)
    assert phonenumbers.is_valid_number(phonenumbers.parse(result)), (raw, result)
    assert numbers.normalise(result) == result  # E.164 in, the same E.164 out
    numbers.national_digits(result)  # usable in dial strings


@fuzz(1000)
@given(CALLER_IDS)
def test_any_caller_id_is_a_number_or_skip(raw):
    check(Numbers("RU", "495"), raw)


@fuzz(300)
@given(
    st.one_of(st.sampled_from(REGIONS), st.from_regex(r"\A[A-Za-z]{2}\Z")),
    st.from_regex(r"\A[0-9]{0,5}\Z"),
    CALLER_IDS,
)
def test_in_any_region_with_any_area_code(country, area_code, raw):
    check(Numbers(country, area_code), raw)


def test_none_and_hidden_caller_ids_are_skipped():
    numbers = Numbers("RU", "495")
    for raw in (None, "", "anonymous", "<unknown>", "Withheld", "  "):
        assert isinstance(numbers.normalise(raw), Skip), raw
