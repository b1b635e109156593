"""The dialplan parser: extensions.conf text into contexts, as main/config.c and
pbx/pbx_config.c read it.

``[context]``, ``exten =>``, ``same =>``, priorities ``N``, ``n``, ``s``, ``n+K``, labels
``N(label)``, ``include =>``, ``[globals]``, ``[general]`` (harmless keys only), ``;``
comments, ``\\;`` escapes, ``;-- --;`` blocks. Anything else is refused with the file and
the line."""

from __future__ import annotations

from simpbx.dialplan.clib import C_SPACE, ast_strip, atoi, scan_int, strsep
from simpbx.dialplan.contexts import APP_NAME_RE, Context, Priority
from simpbx.dialplan.errors import DialplanError

_GENERAL_KEYS = {"static", "writeprotect", "clearglobalvars", "userscontext"}
_TRUE = {"yes", "true", "y", "t", "1", "on"}
_FALSE = {"no", "false", "n", "f", "0", "off"}
_BELOW_33 = "".join(chr(c) for c in range(33))


def parse_text(
    text: str, fname: str, contexts: dict[str, Context], globals_: dict[str, str]
) -> None:
    """Add the contexts and globals of one extensions.conf text (named ``fname`` in
    errors) to those given."""
    _TextParser(fname, contexts, globals_).parse(text)


def strip_comments(line: str, depth: int) -> tuple[str | None, int]:
    """One line through config.c's comment handling: (text outside comments, depth)."""
    scanner = _CommentScanner(line, depth)
    scanner.run()
    return ("".join(scanner.out) if scanner.seen_active else None), scanner.depth


class _CommentScanner:
    """One line read as config.c reads it: ``;`` comments, ``\\;``, ``;--`` ... ``--;``."""

    def __init__(self, line: str, depth: int) -> None:
        self.line = line
        self.depth = depth  # block comments open before this line
        self.active = depth == 0  # outside any comment: characters are kept
        self.seen_active = self.active
        self.out: list[str] = []
        self.pos = 0
        self.segment = 0  # C's new_buf: where the current scan segment starts

    def run(self) -> None:
        while self.pos < len(self.line):
            if self.line[self.pos] != ";":
                if self.active:
                    self.out.append(self.line[self.pos])
                self.pos += 1
            elif not self._semicolon():
                return

    def _semicolon(self) -> bool:
        """The ``;`` at ``pos``; False when it starts a comment to the end of the line."""
        line, pos = self.line, self.pos
        if pos > self.segment and line[pos - 1] == "\\":
            if self.active:
                self.out[-1] = ";"
            self._skip(1)
        elif line[pos + 1 : pos + 3] == "--" and line[pos + 3 : pos + 4] != "-":
            self.depth += 1
            self.active = False
            self._skip(3)
        elif pos >= self.segment + 2 and line[pos - 2 : pos] == "--":
            self._close_block()
        elif self.depth == 0:
            return False
        else:
            self._skip(1)
        return True

    def _close_block(self) -> None:
        if self.depth == 0:
            raise ValueError("'--;' closes a block comment that was never opened")
        self.depth -= 1
        self._skip(1)
        if self.depth == 0:
            self.active = self.seen_active = True

    def _skip(self, count: int) -> None:
        self.pos += count
        self.segment = self.pos


def split_exten(value: str) -> tuple[str, str | None]:
    """``pbx_strsep(&stringp, ",")``: commas inside [] do not split."""
    square = 0
    pos = 0
    while pos < len(value):
        char = value[pos]
        if char == "[":
            square += 1
        elif char == "]":
            if square:
                square -= 1
        elif char == "\\":
            pos += 1
        elif char == "," and not square:
            return value[:pos], value[pos + 1 :]
        pos += 1
    return value, None


class _TextParser:
    """The state of reading one text: comment depth, section, last extension and priority."""

    def __init__(self, fname: str, contexts: dict[str, Context], globals_: dict[str, str]) -> None:
        self.fname = fname
        self.contexts = contexts
        self.globals = globals_
        self.lineno = 0
        self.depth = 0
        self.section: str | None = None
        self.context: Context | None = None
        self.last_exten: str | None = None
        self.last_pri = -2

    def parse(self, text: str) -> None:
        for lineno, raw in enumerate(text.split("\n"), start=1):
            self.lineno = lineno
            line = self._content(raw)
            if line:
                self._line(line)
        if self.depth:
            raise DialplanError(f"{self.fname}: unterminated ';--' block comment")

    def _fail(self, message: str) -> DialplanError:
        return DialplanError(f"{self.fname}:{self.lineno}: {message}")

    def _content(self, raw: str) -> str:
        """The line without comments and surrounding blanks ("" when nothing is left)."""
        try:
            stripped, self.depth = strip_comments(raw, self.depth)
        except ValueError as exc:
            raise self._fail(str(exc)) from None
        return "" if stripped is None else ast_strip(stripped)

    def _line(self, line: str) -> None:
        if line.startswith("["):
            self._section_header(line)
            return
        if line.startswith("#"):
            raise self._fail(f"directive {line.split()[0]!r} is not supported")
        if self.section is None:
            raise self._fail("line outside any [section]")
        if line.startswith("\\"):
            raise self._fail("escaped variable names are not supported")
        key, value = self._assignment(line)
        lower = self.section.lower()
        if lower == "general":
            self._general(key, value)
        elif lower == "globals":
            self._global(key, value)
        else:
            self._context_line(key, value)

    def _section_header(self, line: str) -> None:
        close = line.find("]")
        if close < 0:
            raise self._fail("no closing ']'")
        section = line[1:close]
        if not section:
            raise self._fail("empty section name")
        if line[close + 1 :].strip(C_SPACE):
            raise self._fail("section options/templates after ']' are not supported")
        self.section = section
        self.last_exten, self.last_pri = None, -2
        self.context = None
        if section.lower() not in ("general", "globals"):
            self.context = self.contexts.setdefault(section, Context(section))

    def _assignment(self, line: str) -> tuple[str, str]:
        """``key = value`` or ``key => value``: (key, value), both stripped."""
        equal = line.find("=")
        if equal < 0:
            raise self._fail("no '=' in line")
        if equal > 0 and line[equal - 1] == "+":
            raise self._fail("'+=' is not supported")
        key = ast_strip(line[:equal])
        value = line[equal + 1 :]
        if value.startswith(">"):
            value = value[1:]
        value = ast_strip(value)
        if not key:
            raise self._fail("no variable name")
        return key, value

    def _general(self, key: str, value: str) -> None:
        """A ``[general]`` setting: accepted only where it changes nothing simulated."""
        lkey, lvalue = key.lower(), value.lower()
        if lkey == "autofallthrough" and lvalue in _TRUE:
            return
        if lkey == "extenpatternmatchnew" and lvalue in _FALSE:
            return
        if lkey in _GENERAL_KEYS:
            return
        raise self._fail(f"[general] setting {key}={value} is not supported")

    def _global(self, key: str, value: str) -> None:
        if "$" in value:
            raise self._fail("substitutions in [globals] values are not supported")
        self.globals[key] = value

    def _context_line(self, key: str, value: str) -> None:
        lkey = key.lower()
        if lkey.startswith("same"):
            if self.last_exten is None:
                raise self._fail("'same' without a previous 'exten' in this context")
            self.last_pri = self._add_priority(self.last_exten, value)
        elif lkey == "exten":
            ext_name, rest = split_exten(value)
            ext_name = ext_name.replace(" ", "")
            self._check_exten_name(ext_name)
            self.last_exten = ext_name
            self.last_pri = self._add_priority(ext_name, rest)
        elif lkey == "include":
            self._include(value)
        else:
            raise self._fail(f"directive {key!r} is not supported")

    def _check_exten_name(self, ext_name: str) -> None:
        if "$" in ext_name:
            raise self._fail("substitutions in extension names are not supported")
        if "/" in ext_name:
            raise self._fail("caller ID matching ('exten/cid') is not supported")
        if not ext_name:
            raise self._fail("empty extension name")
        if not ext_name.isascii():
            raise self._fail("non-ASCII extension names are not supported")
        if ext_name.startswith("_") and ext_name.count("[") != ext_name.count("]"):
            raise self._fail(f"unbalanced [] in pattern {ext_name!r}")

    def _include(self, value: str) -> None:
        assert self.context is not None
        if "$" in value or "," in value or "|" in value:
            raise self._fail("timed or substituted includes are not supported")
        if value in self.context.includes:
            raise self._fail(f"context {value!r} already included in {self.context.name!r}")
        self.context.includes.append(value)

    def _add_priority(self, ext_name: str, rest: str | None) -> int:
        """Add ``priority[(label)],App(data)`` to ``ext_name``; its priority number."""
        context = self.context
        assert context is not None
        pri_text, rest = strsep(rest, ",")
        number, label = self._priority(ast_strip(pri_text or ""))
        appl, data = self._application(rest or "")
        exten = context.extension(ext_name)
        if number in exten.priorities:
            raise self._fail(f"priority {number} of {ext_name}@{context.name} is already in use")
        if label is not None:
            if label in exten.labels:
                raise self._fail(f"label {label!r} already used in {ext_name}@{context.name}")
            exten.labels[label] = number
        exten.priorities[number] = Priority(
            context.name, ext_name, number, label or None, appl, data, self.lineno
        )
        return number

    def _priority(self, pri: str) -> tuple[int, str | None]:
        """``N``, ``n``, ``s``, ``n+K`` with an optional ``(label)``: (number, label)."""
        label: str | None = None
        paren = pri.find("(")
        if paren >= 0:
            close = pri.find(")", paren)
            if close < 0:
                raise self._fail("label missing trailing ')'")
            label = pri[paren + 1 : close]
            pri = pri[:paren]
        plus = 0
        if "+" in pri:
            pri, plus_text = pri.split("+", 1)
            plus = atoi(plus_text)
        if pri == "hint":
            raise self._fail("hints are not supported")
        return self._base_priority(pri) + plus, label

    def _base_priority(self, pri: str) -> int:
        if pri in ("n", "next"):
            if self.last_pri <= -2:
                raise self._fail("can't use 'next' priority on the first entry")
            return self.last_pri + 1
        if pri in ("s", "same"):
            if self.last_pri <= -2:
                raise self._fail("can't use 'same' priority on the first entry")
            return self.last_pri
        scanned = scan_int(pri)
        if scanned is None:
            raise self._fail(f"invalid priority {pri!r}")
        if scanned[0] < 1:
            raise self._fail(f"invalid priority {pri!r}")
        return scanned[0]

    def _application(self, appl: str) -> tuple[str, str]:
        """``App(data)``: (application name, data)."""
        data = ""
        if "(" in appl:
            appl, data = appl.split("(", 1)
            if "${" in appl or "$[" in appl:
                raise self._fail("extension data without an application is not supported")
            close = data.rfind(")")
            if close < 0:
                raise self._fail(f"no closing parenthesis for {appl}(")
            data = data[:close]
        appl = appl.lstrip(_BELOW_33)
        if not APP_NAME_RE.fullmatch(appl):
            raise self._fail(f"invalid application name {appl!r}")
        return appl, data
