"""Extension patterns (main/pbx.c): matching a dialled extension, and Asterisk's sort order.

``_`` patterns with ``X Z N [..] . !`` (``-`` ignored); literal extensions sort before
patterns, the most specific pattern first."""

from __future__ import annotations

# Pattern letters: (characters they take, sort score, bitmap bytes 6 and 7 of '0'..'9').
_LETTERS = {
    "n": ("2", "9", 0x0800 | ord("2"), 0x3F),
    "x": ("0", "9", 0x0A00 | ord("0"), 0xFF),
    "z": ("1", "9", 0x0900 | ord("1"), 0x7F),
}
_LETTERS.update({letter.upper(): value for letter, value in list(_LETTERS.items())})
_WILDCARD_SCORES = {".": 0x18000, "!": 0x28000}


def ext_cmp(left: str, right: str) -> int:
    """``ext_cmp``: literal extensions first, then patterns, most specific first."""
    if not left.startswith("_"):
        if right.startswith("_"):
            return -1
        return _ext_cmp_exten(left, right)
    if not right.startswith("_"):
        return 1
    return _ext_cmp_pattern(left[1:], right[1:])


def extension_matches(pattern: str, data: str) -> bool:
    """``_extension_match_core(pattern, data, E_MATCH)`` (the legacy matcher)."""
    if not pattern.startswith("_"):
        return _ext_cmp_exten(pattern, data) == 0
    if data.startswith("_") and _ext_cmp_pattern(pattern[1:], data[1:]) == 0:
        return True
    return _pattern_matches(pattern[1:], data)


def _pattern_matches(pat: str, data: str) -> bool:
    """The pattern (without its ``_``) against the whole of ``data``."""
    p = d = 0
    while True:
        d = _skip_dashes(data, d)
        p = _skip_dashes(pat, p)
        if d >= len(data) or p >= len(pat):
            break
        if pat[p] in ".!":
            return True
        if pat.startswith("[]", p):  # an empty class takes nothing
            p += 2
            continue
        p = _match_one(pat, p, data[d])
        if p < 0:
            return False
        d += 1
        p += 1
    if d < len(data):
        return False
    return p >= len(pat) or pat[p] == "!"


def _match_one(pat: str, p: int, ch: str) -> int:
    """Match ``ch`` against the pattern element at ``p`` (a letter, a character or a
    ``[...]`` class): the position of the element's last character, -1 on no match."""
    if pat[p] != "[":
        return p if _letter_matches(pat[p], ch) else -1
    end = pat.find("]", p + 1)
    if end < 0 or not _in_class(pat[p + 1 : end], ch):
        return -1
    return end


def _skip_dashes(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] == "-":
        pos += 1
    return pos


def _in_class(body: str, ch: str) -> bool:
    """Whether ``ch`` is in the character class ``[body]`` (ranges ``a-b`` allowed)."""
    q = 0
    while q < len(body):
        if q + 2 < len(body) and body[q + 1] == "-":
            if body[q] <= ch <= body[q + 2]:
                return True
            q += 3
            continue
        if ch == body[q]:
            return True
        q += 1
    return False


def _letter_matches(char: str, ch: str) -> bool:
    """One pattern character other than ``[``, ``.``, ``!`` against one dialled one."""
    letter = _LETTERS.get(char)
    if letter is None:
        return ch == char
    return letter[0] <= ch <= letter[1]


def _ext_cmp_exten(left: str, right: str) -> int:
    a = left.replace("-", "")
    b = right.replace("-", "")
    return (a > b) - (a < b)


def _pattern_pos(pattern: str, pos: int) -> tuple[int, bytes, int | None]:
    """``ext_cmp_pattern_pos``: (score, character bitmap, next position or None at end)."""
    n = len(pattern)
    while True:
        pos = _skip_dashes(pattern, pos)
        if pos >= n:
            return 0x30000, bytes(32), None
        char = pattern[pos]
        pos += 1
        if char != "[":
            score, bitmap = _char_score(char)
            return score, bitmap, pos
        count, cmin, bitmap, pos = _class_score(pattern, pos)
        if count:
            return count | cmin, bitmap, pos


def _char_score(char: str) -> tuple[int, bytes]:
    """Sort score and bitmap of a pattern character other than ``[``."""
    bitwise = bytearray(32)
    letter = _LETTERS.get(char)
    if letter is not None:
        bitwise[6], bitwise[7] = letter[3], 0xC0
        return letter[2], bytes(bitwise)
    if char in _WILDCARD_SCORES:
        return _WILDCARD_SCORES[char], bytes(bitwise)
    code = ord(char)
    bitwise[code // 8] = 1 << (7 - code % 8)
    return 0x0100 | code, bytes(bitwise)


def _class_score(pattern: str, pos: int) -> tuple[int, int, bytes, int]:
    """``[...]`` from just after ``[``: (characters * 0x100, lowest character, bitmap,
    position after ``]``)."""
    bitwise = bytearray(32)
    end = pattern.find("]", pos)
    count = 0
    cmin = 0xFF
    while pos < end:
        first = ord(pattern[pos])
        if pos + 2 < end and pattern[pos + 1] == "-":
            last = ord(pattern[pos + 2])
            pos += 2
        else:
            last = first
        cmin = min(cmin, first)
        for code in range(first, last + 1):
            mask = 1 << (7 - code % 8)
            if not bitwise[code // 8] & mask:
                bitwise[code // 8] |= mask
                count += 0x100
        pos += 1
    return count, cmin, bytes(bitwise), end + 1


def _ext_cmp_pattern(left: str, right: str) -> int:
    lpos: int | None = 0
    rpos: int | None = 0
    while True:
        assert lpos is not None and rpos is not None
        lscore, lbits, lpos = _pattern_pos(left, lpos)
        rscore, rbits, rpos = _pattern_pos(right, rpos)
        cmp = lscore - rscore
        if not cmp:
            cmp = (rbits > lbits) - (rbits < lbits)
        if cmp or lpos is None:
            return cmp
