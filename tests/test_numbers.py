"""The normaliser: every form of one number is one client; junk is never a number."""

import pytest

from icm.numbers import NumberError, Numbers, Skip


@pytest.fixture
def moscow() -> Numbers:
    return Numbers("RU", "495")


@pytest.mark.parametrize(
    "raw",
    [
        "8 495 123-45-67",
        "+7 (495) 123 45 67",
        "74951234567",
        "1234567",
        "84951234567",
        "4951234567",
    ],
)
def test_every_form_is_the_same_client(moscow, raw):
    assert moscow.normalise(raw) == "+74951234567"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("89161234567", "+79161234567"),
        ("+7 916 123 45 67", "+79161234567"),
        ("8-800-555-35-35", "+78005553535"),
        ("+44 20 7946 0958", "+442079460958"),
        ("00442079460958", "+442079460958"),
        ("810442079460958", "+442079460958"),
    ],
)
def test_other_forms(moscow, raw, expected):
    assert moscow.normalise(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "anonymous",
        "Anonymous",
        "<unknown>",
        "unknown",
        "restricted",
        "private",
        "abc",
        "123",
        "0",
        "+",
        "++79161234567",
        "9161234567x",
        "1" * 80,
        "8916123456789012345",
        "+7 916 12",
        "👍",
        "\x00\x01",
        None,
    ],
)
def test_junk_is_skipped_with_a_reason(moscow, raw):
    result = moscow.normalise(raw)
    assert isinstance(result, Skip)
    assert result.reason


def test_local_numbers_need_an_area_code():
    assert isinstance(Numbers("RU").normalise("1234567"), Skip)
    assert Numbers("RU", "812").normalise("1234567") == "+78121234567"


def test_parse_raises_for_configured_junk(moscow):
    with pytest.raises(NumberError, match="not a phone number"):
        moscow.parse("12")
    assert moscow.parse("8 916 123-45-67") == "+79161234567"


def test_national_digits_are_what_the_trunk_dials(moscow):
    assert moscow.national_digits("+79161234567") == "89161234567"
    assert moscow.national_digits("+442079460958") == "810442079460958"
    assert Numbers("GB").national_digits("+442079460958") == "02079460958"


@pytest.mark.parametrize(
    "raw", ["7916\n1234567", "79161234567\r\n", "7916\t1234567", "\x0079161234567", "7916\x7f"]
)
def test_control_characters_make_junk(moscow, raw):
    """A real Asterisk passes CR/LF from a SIP From (%0D%0A) into CALLERID(num); each
    entry would then read a different piece of it (AMI and AGI cut lines there)."""
    skip = moscow.normalise(raw)
    assert isinstance(skip, Skip) and "control" in skip.reason
