"""x86 80-bit ``long double`` arithmetic as ``$[...]`` computes and prints it.

Values are exact fractions rounded to a 64-bit significand after every operation;
``printf("%.18Lg")`` and ``strtold`` are reproduced on them."""

from __future__ import annotations

import re
from fractions import Fraction


def ld_round(value: Fraction) -> Fraction:
    """Round to the x86 80-bit long double (64-bit significand, round half even)."""
    if value == 0:
        return Fraction(0)
    sign = -1 if value < 0 else 1
    mag = -value if value < 0 else value
    num, den = mag.numerator, mag.denominator
    exp = num.bit_length() - den.bit_length()
    if (num << max(0, -exp)) < (den << max(0, exp)):
        exp -= 1
    shift = 63 - exp
    if shift >= 0:
        top, bottom = num << shift, den
    else:
        top, bottom = num, den << -shift
    quot = _round_half_even(top, bottom)
    scaled = Fraction(quot, 1 << shift) if shift >= 0 else Fraction(quot << -shift)
    return sign * scaled


def fmt_ld(value: Fraction, negative_zero: bool = False, precision: int = 18) -> str:
    """``printf("%.18Lg")`` of an exactly representable value."""
    if value == 0:
        return "-0" if negative_zero else "0"
    sign = "-" if value < 0 else ""
    digits, exp10 = _significant_digits(-value if value < 0 else value, precision)
    if -4 <= exp10 < precision:
        return sign + _fixed_notation(digits, exp10)
    mantissa = (digits[0] + "." + digits[1:]).rstrip("0").rstrip(".")
    return f"{sign}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"


def strtold(text: str) -> Fraction:
    """``strtold`` on a numeric string (digits and dots only, as the lexer produces)."""
    match = re.match(r"(\d*)(?:\.(\d*))?", text)
    whole = match.group(1) if match else ""
    frac = (match.group(2) or "") if match else ""
    if not whole and not frac:
        return Fraction(0)
    return ld_round(Fraction(int((whole or "0") + frac), 10 ** len(frac)))


def _round_half_even(top: int, bottom: int) -> int:
    """``top / bottom`` rounded to an integer, ties to even."""
    quot, rem = divmod(top, bottom)
    if 2 * rem > bottom or (2 * rem == bottom and quot & 1):
        quot += 1
    return quot


def _significant_digits(mag: Fraction, precision: int) -> tuple[str, int]:
    """The ``precision`` significant digits of a positive value, rounded half even, and
    the decimal exponent of the first one."""
    exp10 = len(str(mag.numerator)) - len(str(mag.denominator))
    while mag < Fraction(10) ** exp10:
        exp10 -= 1
    while mag >= Fraction(10) ** (exp10 + 1):
        exp10 += 1
    scaled = mag * Fraction(10) ** (precision - 1 - exp10)
    quot = _round_half_even(scaled.numerator, scaled.denominator)
    if quot == 10**precision:
        quot //= 10
        exp10 += 1
    return str(quot), exp10


def _fixed_notation(digits: str, exp10: int) -> str:
    """``%g`` without an exponent: trailing zeros of the fraction dropped."""
    if exp10 >= 0:
        whole, frac = digits[: exp10 + 1], digits[exp10 + 1 :]
    else:
        whole, frac = "0", "0" * (-exp10 - 1) + digits
    frac = frac.rstrip("0")
    return whole + ("." + frac if frac else "")
