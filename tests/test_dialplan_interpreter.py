"""The dialplan interpreter (simpbx.dialplan), then the shipped extensions_icm.conf.

The expected values come from Asterisk's C sources (named in the interpreter), not from
what the interpreter happens to print: a mismatch is a simulation bug."""

from __future__ import annotations

import asyncio
import random
import re
import time
from pathlib import Path

import pytest

from simpbx.dialplan import (
    Dialplan,
    DialplanError,
    Hangup,
    Interpreter,
    check_condition,
    evaluate_expression,
    extension_matches,
    parse_wait_for_condition,
    separate_args,
)
from simpbx.dialplan.timeouts import parse_offset

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "asterisk" / "extensions_icm.conf"

SCENARIO = """
[from-trunk]
exten => _X.,1,Gosub(icm,6100,1)
 same => n,Queue(sales)

[from-trunk-number]
exten => _X.,1,Gosub(icm,6100,1(+7 (916) 123-45-67))
 same => n,Queue(sales)

[from-trunk-after-dial]
exten => _X.,1,Dial(SIP/operator,10,g)
 same => n,Gosub(icm,6100,1)
 same => n,Queue(sales)
"""


class Host:
    """A fake channel/PBX (ChannelHost) that records what the dialplan does."""

    def __init__(
        self,
        *,
        globals_: dict[str, str] | None = None,
        reply: str | None = None,
        reply_after: float = 0.03,
        reply_token: str | None = None,
        dial_status: str | list[str] = "NOANSWER",
        hangup_in_dial: bool = False,
        hangup_after: float | None = None,
    ) -> None:
        self.name = "SIP/trunk-00000001"
        self.uniqueid = "1700000000.17"
        self.caller_num = "79161234567"
        self.caller_name = "Client"
        self.variables: dict[str, str] = {}
        self.globals: dict[str, str] = dict(globals_ or {})
        self.hangup_requested = asyncio.Event()
        self.soft_hangups: set[str] = set()
        self.events: list[tuple[str, dict[str, str]]] = []
        self.dials: list[tuple[str, float | None, str]] = []
        self.apps: list[tuple[str, list[str]]] = []
        self.reply = reply
        self.reply_after = reply_after
        self.reply_token = reply_token
        self.statuses = [dial_status] if isinstance(dial_status, str) else list(dial_status)
        self.hangup_in_dial = hangup_in_dial
        self._handles: list[asyncio.TimerHandle] = []
        if hangup_after is not None:
            self._later(hangup_after, self.hangup_requested.set)

    def _later(self, delay: float, callback) -> None:
        self._handles.append(asyncio.get_running_loop().call_later(delay, callback))

    def cleanup(self) -> None:
        for handle in self._handles:
            handle.cancel()

    def event(self, name: str) -> dict[str, str]:
        found = [body for event, body in self.events if event == name]
        assert len(found) == 1, f"{name}: {self.events}"
        return found[0]

    async def user_event(self, name: str, body: list[tuple[str, str]]) -> None:
        self.events.append((name, dict(body)))
        if name == "ICMRoute" and self.reply is not None:
            token = self.reply_token if self.reply_token is not None else dict(body)["ICMToken"]
            value = f"{token}|{self.reply}"
            self._later(self.reply_after, lambda: self.variables.__setitem__("ICM_REPLY", value))

    async def dial(self, dialstring: str, timeout_s: float | None, options: str) -> str:
        self.dials.append((dialstring, timeout_s, options))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        await asyncio.sleep(0)
        if self.hangup_in_dial:
            self.hangup_requested.set()
        return status

    async def app(self, name: str, args: list[str]) -> None:
        if name not in ("Queue", "Playback"):
            raise DialplanError(f"no application {name}")
        self.apps.append((name, args))


def plan(text: str) -> Dialplan:
    return Dialplan.parse(text)


async def run(dialplan: Dialplan, host: Host, context: str, exten: str = "s") -> Interpreter:
    interp = Interpreter(dialplan, host, rng=random.Random(7))
    try:
        await interp.run(context, exten)
    finally:
        host.cleanup()
    return interp


# --------------------------------------------------------------------------- parsing

PARSE_TEXT = r"""
; a comment
[ctx]
exten => 100,1,NoOp(first)       ; trailing comment
 same => n(second),NoOp(a\;b)
 same => n+2,NoOp(skipped two)
exten => 100,10(ten),Set(X=1)
 same => s,NoOp(never: same priority is refused as a duplicate)
"""


def test_parse_labels_next_and_plus() -> None:
    with pytest.raises(DialplanError, match=r"<text 1>:8: priority 10 .* already in use"):
        plan(PARSE_TEXT)
    dialplan = plan(PARSE_TEXT.replace(" same => s,", ";"))
    assert dialplan.find("ctx", "100", 1).data == "first"
    second = dialplan.find("ctx", "100", 2)
    assert (second.label, second.data, second.line) == ("second", "a;b", 5)
    assert dialplan.find("ctx", "100", 3) is None
    assert dialplan.find("ctx", "100", 5).data == "skipped two"
    assert dialplan.label("ctx", "100", "ten") == 10
    assert dialplan.find("ctx", "100", 10).app == "Set"
    with pytest.raises(DialplanError):
        dialplan.label("ctx", "100", "nope")


def test_parse_app_without_parentheses_and_block_comments() -> None:
    dialplan = plan(
        "[c]\nexten => s,1,Hangup\n;-- a block\nexten => t,1,NoOp(no)\n--;\n"
        "exten => u,1,NoOp(x) ;-- inline --; \n"
    )
    hang = dialplan.find("c", "s", 1)
    assert (hang.app, hang.data) == ("Hangup", "")
    assert not dialplan.has_exten("c", "t")
    assert dialplan.find("c", "u", 1).data == "x"


def test_parse_globals_and_general() -> None:
    dialplan = plan("[general]\nstatic=yes\n[globals]\nICM_WAIT = 2\nEMPTY=\n[c]\n")
    assert dialplan.globals == {"ICM_WAIT": "2", "EMPTY": ""}
    assert dialplan.contexts == ["c"]


def test_contexts_merge_across_texts() -> None:
    dialplan = Dialplan.parse("[c]\nexten => 1,1,NoOp(a)\n", "[c]\nexten => 2,1,NoOp(b)\n")
    assert dialplan.has_exten("c", "1")
    assert dialplan.has_exten("c", "2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('#include "other.conf"', r":1: directive '#include'"),
        ("[c]\nexten => 1,hint,SIP/1", r":2: hints are not supported"),
        ("[c]\nsame => n,NoOp()", r":2: 'same' without a previous 'exten'"),
        ("[c]\nexten => 1,n,NoOp()", r":2: can't use 'next' priority"),
        ("[c]\nexten => 1,1(lbl,NoOp()", r":2: label missing trailing"),
        ("[c]\nexten => 1,1,NoOp(", r":2: no closing parenthesis"),
        ("[c]\nexten => 1,0,NoOp()", r":2: invalid priority"),
        ("[c]\nexten => 1,1,No Op()", r":2: invalid application name"),
        ("[c]\nswitch => Realtime/x", r":2: directive 'switch'"),
        ("[c]\ninclude => missing", r"includes nonexistent context 'missing'"),
        ("[c]\nexten => 1/100,1,NoOp()", r":2: caller ID matching"),
        ("[c]\n\nexten => 1,1,NoOp()\nexten => 1,1,NoOp()", r":4: priority 1 of 1@c"),
        ("[c](template)", r":1: section options"),
        ("exten => 1,1,NoOp()", r":1: line outside any"),
        ("[c]\nexten 1,1,NoOp()", r":2: no '='"),
        ("[general]\nautofallthrough=no", r":2: \[general\] setting"),
        ("[c]\nexten => 1,1,NoOp() --;", r":2: '--;' closes"),
    ],
)
def test_parse_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(DialplanError, match=message):
        plan(text)


def test_parse_error_names_the_file() -> None:
    with pytest.raises(DialplanError, match=r"^extra\.conf:2: "):
        Dialplan.parse("[c]\nbogus => 1", names=["extra.conf"])


# --------------------------------------------------------------------------- patterns

PATTERNS = """
[p]
exten => _X.,1,NoOp(X.)
exten => _6XXX,1,NoOp(6XXX)
 same => n,NoOp(6XXX-2)
exten => _61XX,1,NoOp(61XX)
exten => 6100,1,NoOp(literal)
exten => _[a-c]!,1,NoOp(abc!)
exten => _1-800-NXX,1,NoOp(dashes)
include => q

[q]
exten => _Z,1,NoOp(Z in q)
exten => 6100,2,NoOp(from include)
include => p
"""


@pytest.mark.parametrize(
    ("exten", "data"),
    [
        ("6100", "literal"),
        ("6123", "61XX"),
        ("6234", "6XXX"),
        ("62345", "X."),
        ("12", "X."),
        ("a", "abc!"),
        ("c", "abc!"),
        ("1800234", "dashes"),
        ("1-800-234", "dashes"),
        ("7", "Z in q"),
    ],
)
def test_pattern_matching_order(exten: str, data: str) -> None:
    prio = plan(PATTERNS).find("p", exten, 1)
    assert prio is not None
    assert prio.data == data


def test_missing_priority_is_looked_up_in_the_next_matching_extension() -> None:
    dialplan = plan(PATTERNS)
    # _61XX has no priority 2: Asterisk's legacy matcher takes it from _6XXX.
    assert dialplan.find("p", "6123", 2).data == "6XXX-2"
    # 6100 (literal) has no priority 2 and no other extension of p has one for "6100"
    # except _6XXX; includes come after the context's own extensions.
    assert dialplan.find("p", "6100", 2).data == "6XXX-2"
    assert dialplan.find("q", "6100", 2).data == "from include"
    assert dialplan.find("p", "0", 1) is None  # _X. needs two characters; include loop ends


@pytest.mark.parametrize(
    ("pattern", "data", "matches"),
    [
        ("_X.", "1", False),
        ("_X.", "12", True),
        ("_X!", "1", True),
        ("_N", "1", False),
        ("_Z", "0", False),
        ("_[13-5]", "4", True),
        ("_[13-5]", "2", False),
        ("_x", "5", True),
        ("abc", "abc", True),
        ("abc", "ab", False),
        ("_ABC", "ABC", True),
        ("_ABC", "abc", False),
    ],
)
def test_extension_matches(pattern: str, data: str, matches: bool) -> None:
    assert extension_matches(pattern, data) is matches


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("buf", "standard", "raw"),
    [
        ("a,b,c", ["a", "b", "c"], ["a", "b", "c"]),
        ("a,(b,c),d", ["a", "(b,c)", "d"], ["a", "(b,c)", "d"]),
        ('a,"b,c",d', ["a", "b,c", "d"], ["a", '"b,c"', "d"]),
        ("a\\,b,c", ["a,b", "c"], ["a\\,b", "c"]),
        ("a,[b,c]", ["a", "[b,c]"], ["a", "[b,c]"]),
        ("a,", ["a", ""], ["a", ""]),
        (",", ["", ""], ["", ""]),
        ("", [], []),
        ("a),b", ["a)", "b"], ["a)", "b"]),
        ("ICMToken: 1,ICMNumber: ", ["ICMToken: 1", "ICMNumber: "], None),
    ],
)
def test_separate_args(buf: str, standard: list[str], raw: list[str] | None) -> None:
    assert separate_args(buf) == standard
    if raw is not None:
        assert separate_args(buf, ",", remove_chars=False) == raw


def test_separate_args_last_slot_takes_the_rest_unprocessed() -> None:
    assert separate_args('a,"b",c', ",", True, 2) == ["a", '"b",c']
    assert separate_args("x?y:z", "?", True, 2) == ["x", "y:z"]


@pytest.mark.parametrize(
    ("condition", "truth"),
    [
        ("", False),
        ("0", False),
        ("1", True),
        ("abc", True),
        ("0.5", False),
        (" 2", True),
        ("-0", False),
        ("1abc", True),
        ("0,2,0.02", False),
        ("1,2,0.02", True),
    ],
)
def test_check_condition(condition: str, truth: bool) -> None:
    assert check_condition(condition) is truth


# --------------------------------------------------------------------------- expressions


@pytest.mark.parametrize(
    ("expr", "result"),
    [
        ('"" = ""', "1"),
        ('"1.8" = ""', "0"),
        ('"x" != "x"', "0"),
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("1 + 2 = 3", "1"),
        ("2 * 3 = 6 & 1", "1"),
        ("10 / 4", "2.5"),
        ("10 / 3", "3.33333333333333333"),
        ("2 / 3", "0.666666666666666667"),
        ("0.1 + 0.2", "0.3"),
        ("99999999999999999999 + 1", "1e+20"),
        ("7 % 3", "1"),
        ("-7 % 3", "-1"),
        ("3 - -2", "5"),
        ("-0", "-0"),
        ("1 = 01", "1"),  # numbers compare as numbers
        ('"1" = "01"', "0"),  # quoted operands are strings
        ('5 = "5"', "0"),  # ...and keep their quotes: 5 vs "5"
        ("1.8 = 1.80", "1"),
        ("10 < 9", "0"),
        ('"10" < "9"', "1"),
        ('"abc" < "abd"', "1"),
        ("abc = abc", "1"),
        ("1 | 0", "1"),
        ("0 | 5", "5"),
        ('"" | x', '""'),  # "" (two quote characters) is not empty
        ("0 & 1", "0"),
        ("3 & 4", "3"),
        ("1 ? a :: b", "a"),
        ("0 ? a :: b", "b"),
        ('"" ? a :: b', "b"),
        ("1 = 1 ? yes :: no", "yes"),
        ("0 ? a :: 1 ? b :: c", "b"),
        ("!0", "1"),
        ("!abc", "1"),
        ("!5", "0"),
        ('!"x" : "x"', "0"),  # ':' binds tighter than unary '!'
        ('"abc" : "a(b)"', "b"),
        ('"abcd" : "ab"', "2"),
        ('"xab" : "ab"', "0"),
        ('"xab" =~ "ab"', "2"),
        ('"abc"', '"abc"'),
        ("abc ~~ def", "abcdef"),
        ("1e3", "1e3"),
        ("~ 1", "1"),  # characters no flex rule matches are dropped
        ("", ""),
        ("   ", ""),
    ],
)
def test_expression(expr: str, result: str) -> None:
    assert evaluate_expression(expr) == (result, [])


@pytest.mark.parametrize(
    ("expr", "result", "warning"),
    [
        ("1 +", "0", "syntax error"),
        ("a ? b : c", "0", "syntax error"),  # ':' is the regex operator, '::' the ternary
        ("1,2", "0", "syntax error"),
        ("= 1", "0", "syntax error"),
        ("5 / 0", "2147483647", "division by zero"),
        ("a + 1", "1", "non-numeric argument"),
        ("a * 2", "0", "non-numeric argument"),
        ("abc(1)", "0", "not possibly a function name"),
    ],
)
def test_expression_warnings(expr: str, result: str, warning: str) -> None:
    value, warnings = evaluate_expression(expr)
    assert value == result
    assert len(warnings) == 1
    assert warning in warnings[0]


def test_expression_quirks_without_warning() -> None:
    # op_plus warns only when the left operand is not a number.
    assert evaluate_expression("1 + a") == ("1", [])


def test_expression_refuses_what_it_cannot_simulate() -> None:
    with pytest.raises(DialplanError, match="function call"):
        evaluate_expression("SQRT(4)")
    with pytest.raises(DialplanError, match="alternation"):
        evaluate_expression('"ab" : "a|b"')


# --------------------------------------------------------------------------- substitution


def make_interp(text: str = "[c]\nexten => s,1,NoOp()\n", **host_kwargs) -> Interpreter:
    host = Host(**host_kwargs)
    interp = Interpreter(plan(text), host, rng=random.Random(3))
    interp._context, interp._exten, interp._priority = "c", "s", 1
    return interp


async def test_substitution_basics() -> None:
    interp = make_interp(globals_={"G": "global", "SHADOW": "global"})
    host = interp.channel
    host.variables.update({"X": "abcdef", "EMPTY": "", "SHADOW": "", "NAME": "X", "R": "a|b|c"})
    cases = {
        "${X}": "abcdef",
        "${X:2}": "cdef",
        "${X:-2}": "ef",
        "${X:1:2}": "bc",
        "${X:-4:2}": "cd",
        "${X:2:-1}": "cde",
        "${X::3}": "abcdef",  # sscanf("%d:%d") fails on ":3": no substring
        "${X:10}": "",
        "${UNSET}-": "-",
        "${G}": "global",
        "${SHADOW}": "",  # a channel variable set to "" hides the global
        "${${NAME}}": "abcdef",
        "$${X}": "$abcdef",
        "$x and $": "$x and $",
        "${CUT(R,|,2):0:1}": "b",
        '${IF($["${EMPTY}" = ""]?empty:full)}': "empty",
        '${IF($["${X}" = ""]?empty:full)}': "full",
        "${EXTEN},${CONTEXT},${PRIORITY}": "s,c,1",
        "${CHANNEL}|${UNIQUEID}": "SIP/trunk-00000001|1700000000.17",
        "$[1 + ${LEN(${X})}]": "7",
    }
    for text, expected in cases.items():
        assert interp.substitute(text) == expected, text
    assert interp.warnings == []
    assert interp.substitute("${EPOCH}").isdigit()


async def test_substitution_missing_brace_warns() -> None:
    interp = make_interp()
    interp.channel.variables["X"] = "v"
    assert interp.substitute("${X") == "v"
    assert interp.warnings and "missing '}'" in interp.warnings[0]


async def test_functions() -> None:
    interp = make_interp()
    host = interp.channel
    host.variables.update({"R": "tok|DIAL|SIP/101||icmdb|20", "S": "a-b-c-d"})
    cases = {
        "${CUT(R,|,1)}": "tok",
        "${CUT(R,|,4)}": "",
        "${CUT(R,|,2-3)}": "DIAL|SIP/101",
        "${CUT(R,|,-2)}": "tok|DIAL",
        "${CUT(R,|,5-)}": "icmdb|20",
        "${CUT(R,|,1&3)}": "tok|SIP/101",
        "${CUT(R,|,9)}": "",
        "${CUT(S,,2)}": "b",  # an empty delimiter means '-'
        "${CUT(UNSET,|,1)}": "",
        "${FILTER(0-9,1700000000.17)}": "170000000017",
        "${FILTER(0-9+,+7 (916) 123-45-67)}": "+79161234567",
        "${FILTER(0-9+,)}": "",
        "${FILTER(a-c,abcdef)}": "abc",
        "${IF(1?yes:no)}": "yes",
        "${IF(0?yes:no)}": "no",
        "${IF(0?yes)}": "",
        "${IF( 1 ? yes : no )}": "yes",
        "${LEN(abc)}": "3",
        "${LEN(é)}": "2",  # bytes, like strlen
        "${ISNULL()}${ISNULL(x)}${EXISTS()}${EXISTS(x)}": "1001",
        "${CALLERID(num)}/${CALLERID(name)}": "79161234567/Client",
        "${CHANNEL(name)}|${CHANNEL(uniqueid)}": "SIP/trunk-00000001|1700000000.17",
        "${LOCAL(x)}": "",
    }
    for text, expected in cases.items():
        assert interp.substitute(text) == expected, text
    assert interp.warnings == []
    rand = int(interp.substitute("${RAND(100000,999999)}"))
    assert 100000 <= rand <= 999999
    assert 5 <= int(interp.substitute("${RAND(9,5)}")) <= 9


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        ("${CUT(R,|)}", "missing argument"),
        ("${CUT(R,|,x)}", "Usage: CUT"),
        ("${FILTER(0-9)}", "Usage: FILTER"),
        ("${IF(?a:b)}", "Syntax IF"),
        ("${IF(1?)}", "Syntax IF"),
    ],
)
async def test_function_errors_are_warnings(text: str, warning: str) -> None:
    interp = make_interp()
    interp.channel.variables["R"] = "a|b"
    assert interp.substitute(text) == ""
    assert len(interp.warnings) == 1
    assert warning in interp.warnings[0]


@pytest.mark.parametrize(
    "text",
    ["${cut(R,|,1)}", "${SHELL(ls)}", "${CALLERID(ani)}", "${CHANNEL(state)}", "${HANGUPCAUSE}"],
)
async def test_unsupported_functions_are_refused(text: str) -> None:
    with pytest.raises(DialplanError):
        make_interp().substitute(text)


# --------------------------------------------------------------------------- applications

APPS = r"""
[c]
exten => s,1,Set(A=x,y=z)
 same => n,Set(CALLERID(num)=123)
 same => n,Set(_INHERIT=1)
 same => n,Gosub(sub,s,1(one,"two, three"))
 same => n,Set(AFTER=${GOSUB_RETVAL}|${ARG1}|${LOCAL(L)}|${L})
 same => n,ExecIf($[1 = 1]?Set(E1=yes):Set(E1=no))
 same => n,ExecIf(0?Set(E2=yes):Set(E2=no))
 same => n,ExecIf(0?Set(E3=yes))
 same => n,GotoIf($["${A}" = "x,y=z"]?ok:bad)
 same => n(bad),Set(RESULT=bad)
 same => n,Hangup()
 same => n(ok),Set(RESULT=ok)
 same => n,GosubIf(1?sub2,s,1(a):sub2,s,1(b))
 same => n,UserEvent(Ev,Key: value ,NoColon,Other:x:y, Spaced: v)
 same => n,Goto(end,s,1)

[end]
exten => s,1,Set(END=${EXTEN}@${CONTEXT})

[sub]
exten => s,1,Set(LOCAL(L)=local)
 same => n,Set(IN=${ARG1}|${ARG2}|${ARGC}|${LOCAL(L)}|${L})
 same => n,Return(done,really)

[sub2]
exten => s,1,Set(SUB2=${ARG1}|${ARGC}|${ARG2})
 same => n,Return()
"""


async def test_applications() -> None:
    host = Host()
    interp = await run(plan(APPS), host, "c")
    assert interp.warnings == []
    v = host.variables
    assert v["A"] == "x,y=z"
    assert host.caller_num == "123"
    assert v["INHERIT"] == "1"
    assert v["IN"] == 'one|"two, three"|2|local|local'  # Gosub arguments are RAW
    assert v["AFTER"] == "done,really|||"  # locals and ARGn are gone after Return
    assert (v["E1"], v["E2"]) == ("yes", "no")
    assert "E3" not in v
    assert v["RESULT"] == "ok"
    assert v["SUB2"] == "a|1|"
    assert host.events == [("Ev", {"Key": "value", "Other": "x:y", " Spaced": "v"})]
    assert v["END"] == "s@end"
    assert interp.trace[0] == "c,s,1: Set(A=x,y=z)"
    assert interp.trace[-1] == "end,s,1: Set(END=s@end)"


async def test_gosub_masks_outer_arguments_and_locals_are_dynamic() -> None:
    text = """
[c]
exten => s,1,Gosub(outer,s,1(a,b))
[outer]
exten => s,1,Set(LOCAL(V)=outer)
 same => n,Gosub(inner,s,1)
 same => n,Return()
[inner]
exten => s,1,Set(SEEN=${ARG1}|${ARG2}|${ARGC}|${V}|${LOCAL(V)})
 same => n,Set(V=changed-by-inner)
 same => n,Set(OUTER_V_AFTER=x)
 same => n,Return()
"""
    host = Host()
    interp = await run(plan(text), host, "c")
    assert interp.warnings == []
    # ARG1/ARG2 of the outer frame are masked; V (local to outer) is visible but LOCAL(V)
    # reads only the current frame; Set(V=) writes the outer frame's local.
    assert host.variables["SEEN"] == "||0|outer|"
    assert "V" not in host.variables


async def test_return_without_gosub_warns_and_hangs_up() -> None:
    host = Host()
    interp = await run(plan("[c]\nexten => s,1,Return()\n same => n,Set(NOT=reached)\n"), host, "c")
    assert interp.warnings == ["c,s,1: Return without Gosub: stack is unallocated"]
    assert "NOT" not in host.variables


async def test_falling_off_the_end_hangs_up_without_warning() -> None:
    host = Host()
    interp = await run(plan("[c]\nexten => s,1,Set(A=1)\n"), host, "c")
    assert interp.warnings == []
    assert interp.trace == ["c,s,1: Set(A=1)"]


async def test_bad_goto_targets_are_refused() -> None:
    for target in ("nolabel", "c,nosuch,1", "c,s,9"):
        with pytest.raises(DialplanError):
            await run(plan(f"[c]\nexten => s,1,Goto({target})\n"), Host(), "c")
    with pytest.raises(DialplanError, match="nonexistent destination"):
        await run(plan("[c]\nexten => s,1,Gosub(nowhere,s,1)\n"), Host(), "c")


async def test_relative_goto() -> None:
    text = "[c]\nexten => s,1,Goto(+2)\n same => n,Set(A=skipped)\n same => n,Set(B=1)\n"
    host = Host()
    await run(plan(text), host, "c")
    assert host.variables == {"B": "1"}


async def test_loops_are_bounded() -> None:
    with pytest.raises(DialplanError, match="more than"):
        await run(plan("[c]\nexten => s,1,Goto(1)\n"), Host(), "c")


async def test_unsupported_apps_and_dial_options_are_refused() -> None:
    with pytest.raises(DialplanError, match="Macro"):
        await run(plan("[c]\nexten => s,1,Macro(x)\n"), Host(), "c")
    with pytest.raises(DialplanError, match="no application Nonsense"):
        await run(plan("[c]\nexten => s,1,Nonsense(x)\n"), Host(), "c")
    with pytest.raises(DialplanError, match="Dial options G"):
        await run(plan("[c]\nexten => s,1,Dial(SIP/1,10,G(c^s^1))\n"), Host(), "c")


async def test_dial_semantics() -> None:
    text = """
[c]
exten => s,1,Dial(SIP/1,${T},${O})
 same => n,Set(AFTER=${DIALSTATUS})
"""
    cases = [
        ("20", "", "NOANSWER", True, 20.0),
        ("20", "", "ANSWER", False, 20.0),  # answered without g: the call ends
        ("20", "gT", "ANSWER", True, 20.0),
        ("2.9", "g", "BUSY", True, 2.9),  # %lf: a fraction counts (Asterisk 20)
        ("0.5", "", "NOANSWER", True, 0.5),
    ]
    for timeout, options, status, continues, seen_timeout in cases:
        host = Host(globals_={"T": timeout, "O": options}, dial_status=status)
        interp = await run(plan(text), host, "c")
        assert interp.warnings == []
        assert host.dials == [("SIP/1", seen_timeout, options)]
        assert host.variables["DIALSTATUS"] == status
        assert ("AFTER" in host.variables) is continues
    host = Host(globals_={"T": "0", "O": ""})
    interp = await run(plan(text), host, "c")
    assert host.dials == [("SIP/1", None, "")]
    assert "Invalid answer timeout specified: '0'" in interp.warnings[0]


async def test_dial_after_hangup_is_cancelled() -> None:
    host = Host()
    host.hangup_requested.set()
    interp = Interpreter(plan("[c]\nexten => h,1,Dial(SIP/1)\n"), host)
    interp._context, interp._exten = "c", "h"
    await interp._run_h_exten()
    assert host.dials == []
    assert host.variables["DIALSTATUS"] == "CANCEL"


async def test_host_hangup_exception_stops_execution() -> None:
    class Hanging(Host):
        async def app(self, name: str, args: list[str]) -> None:
            raise Hangup

    host = Hanging()
    await run(plan("[c]\nexten => s,1,Playback(x)\n same => n,Set(A=1)\n"), host, "c")
    assert "A" not in host.variables


async def test_wait_is_interrupted_by_hangup() -> None:
    host = Host(hangup_after=0.05)
    started = time.monotonic()
    await run(plan("[c]\nexten => s,1,Wait(5)\n same => n,Set(A=1)\n"), host, "c")
    assert time.monotonic() - started < 1
    assert "A" not in host.variables


async def test_hangup_handlers_and_h_exten() -> None:
    text = """
[c]
exten => s,1,Set(CHANNEL(hangup_handler_push)=hh,s,1(first))
 same => n,Set(CHANNEL(hangup_handler_push)=hh,s,1(second))
 same => n,Set(CHANNEL(hangup_handler_push)=hh,s,1(popped))
 same => n,Set(CHANNEL(hangup_handler_pop)=)
 same => n,Set(CHANNEL(hangup_handler_push)=s,1(short))
 same => n,Gosub(sub,s,1)
exten => h,1,Set(H=${EXTEN}@${CONTEXT})
exten => s,100,NoOp(unused)
 same => n,Set(RAN=${RAN}short:${ARG1}/)
 same => n,Return()

[sub]
exten => s,1,Wait(1)
 same => n,Set(NOT=reached)
exten => h,1,Set(H=in sub)

[hh]
exten => s,1,Set(RAN=${RAN}${ARG1}/)
 same => n,UserEvent(Handler,Arg: ${ARG1})
 same => n,Wait(10)
 same => n,Set(WAITED=${RAN})
 same => n,Return()
"""
    dialplan = plan(text.replace("s,1(short)", "s,101(short)"))
    host = Host(hangup_after=0.05)
    started = time.monotonic()
    interp = await run(dialplan, host, "c")
    assert time.monotonic() - started < 1  # blocking apps return at once in handlers
    assert interp.warnings == []
    assert "NOT" not in host.variables
    # the h extension runs in the context the channel is in (sub), not where it started
    assert host.variables["H"] == "in sub"
    # most recent first; the short form was completed with the current context/exten
    assert host.variables["RAN"] == "short:short/second/first/"
    assert [body["Arg"] for _, body in host.events] == ["second", "first"]
    # Wait() on the hung-up channel returns -1 at once, which ends that handler.
    assert "WAITED" not in host.variables


# --------------------------------------------------------------------------- WaitForCondition


def shipped_text() -> str:
    return SHIPPED.read_text()


def waitforcondition_data() -> str:
    (line,) = [ln for ln in shipped_text().splitlines() if "WaitForCondition(" in ln]
    return line.split("WaitForCondition(", 1)[1].rsplit(")", 1)[0]


async def test_waitforcondition_parsing_of_the_shipped_expression() -> None:
    interp = make_interp(globals_={"ICM_WAIT": "0.2"})
    interp.channel.variables["ICM_TOKEN"] = "170000000017123456"
    # icm-start sets ICM_WAIT_S from the global (filtered), 1.5 s without it.
    start = next(ln for ln in shipped_text().splitlines() if ",Set(ICM_WAIT_S=" in ln)
    wait_s = start.split("Set(", 1)[1].rsplit(")", 1)[0]
    interp.set_variable("ICM_WAIT_S", interp.substitute(wait_s.split("=", 1)[1]))
    data = interp.substitute(waitforcondition_data())
    assert data == '#,#["#{CUT(ICM_REPLY,|,1)}" = "170000000017123456"],0.2,0.02'
    spec = parse_wait_for_condition(data)
    assert spec.replacement == "#"
    # app_waitforcond.c never cuts the expression at its ']': the condition it evaluates
    # runs to the end of the data, and pbx_checkcondition reads the leading integer.
    assert spec.condition == '$["${CUT(ICM_REPLY,|,1)}" = "170000000017123456"],0.2,0.02'
    assert (spec.timeout_ms, spec.poll_ms) == (200, 20)
    interp.channel.variables["ICM_REPLY"] = "170000000017123456|DIAL"
    assert interp.substitute(spec.condition) == "1,0.2,0.02"
    interp.channel.variables["ICM_REPLY"] = "999|DIAL"
    assert interp.substitute(spec.condition) == "0,0.2,0.02"
    assert interp.warnings == []
    # without the global, ICM_WAIT_S is empty and the next line falls back to 1.5 s
    del interp.channel.globals["ICM_WAIT"]
    assert interp.substitute(wait_s.split("=", 1)[1]) == ""
    assert any("?Set(ICM_WAIT_S=1.5))" in ln for ln in shipped_text().splitlines())


@pytest.mark.parametrize(
    ("data", "timeout_ms", "poll_ms"),
    [
        ("#,#[1]", 0, 50),
        ("#,#[1],", 0, 50),
        ("#,#[#[1]],3", 3000, 50),
        ("#,#[1],0.0005,0.5", 0, 500),  # under 1 ms of timeout means none (waits forever)
    ],
)
def test_waitforcondition_options(data: str, timeout_ms: int, poll_ms: int) -> None:
    spec = parse_wait_for_condition(data)
    assert (spec.timeout_ms, spec.poll_ms) == (timeout_ms, poll_ms)


@pytest.mark.parametrize(
    ("data", "status", "continues"),
    [
        ("#,#1", "FAILURE", True),  # no [...]
        ("$,$[1]", "FAILURE", True),
        ("#.#[1]", "FAILURE", True),
        ("#,x[1]", "FAILURE", True),
        ("#,#[1", "FAILURE", True),
        ("#,#[0],abc", None, False),  # invalid timeout: the app returns -1
        ("#,#[0],1,0", None, False),
    ],
)
async def test_waitforcondition_errors(data: str, status: str | None, continues: bool) -> None:
    host = Host()
    text = f"[c]\nexten => s,1,WaitForCondition({data})\n same => n,Set(NEXT=1)\n"
    interp = await run(plan(text), host, "c")
    assert len(interp.warnings) == 1
    assert host.variables.get("WAITFORCONDITIONSTATUS") == status
    assert ("NEXT" in host.variables) is continues


async def test_waitforcondition_rechecks_and_times_out() -> None:
    text = "[c]\nexten => s,1,WaitForCondition(#,#[#{V} = 1],0.1,0.01)\n"
    host = Host()
    host._later(0.03, lambda: host.variables.__setitem__("V", "1"))
    await run(plan(text), host, "c")
    assert host.variables["WAITFORCONDITIONSTATUS"] == "TRUE"
    host = Host()
    started = time.monotonic()
    await run(plan(text), host, "c")
    assert time.monotonic() - started >= 0.09
    assert host.variables["WAITFORCONDITIONSTATUS"] == "TIMEOUT"


# --------------------------------------------------------------------------- the shipped file

SHIPPED_PLAN = Dialplan.parse(SHIPPED.read_text(), SCENARIO, names=["extensions_icm.conf", "t"])
FAST = {"ICM_WAIT": "0.2"}


async def call(host: Host, context: str = "from-trunk") -> Interpreter:
    interp = await run(SHIPPED_PLAN, host, context, "74951230000")
    assert interp.warnings == []
    route = host.event("ICMRoute")
    assert re.fullmatch(r"\d{18}", route["ICMToken"])  # 12 uniqueid digits + RAND 6 digits
    assert set(route) == {"ICMToken", "ICMNumber"}
    return interp


def result(host: Host) -> tuple[str, str]:
    body = host.event("ICMResult")
    assert body["ICMToken"] == host.event("ICMRoute")["ICMToken"]
    return body["ICMStatus"], body["ICMDialStatus"]


def queued(host: Host) -> bool:
    return ("Queue", ["sales"]) in host.apps


async def test_shipped_answered_ends_the_call() -> None:
    host = Host(globals_=FAST, reply="DIAL|SIP/101|101|icmdb|20", dial_status="ANSWER")
    interp = await call(host)
    assert host.dials == [("SIP/101", 20.0, "g")]
    assert result(host) == ("ANSWERED", "ANSWER")
    assert host.variables["ICM_STATUS"] == "ANSWERED"
    assert (host.variables["ICM_MANAGER"], host.variables["ICM_SOURCE"]) == ("101", "icmdb")
    assert not queued(host)
    assert interp.trace[-1].endswith("Hangup()")
    assert interp.hangup_handlers == []


@pytest.mark.parametrize(
    ("dial_status", "icm_status"),
    [
        ("NOANSWER", "NOANSWER"),
        ("BUSY", "BUSY"),
        ("CHANUNAVAIL", "OFFLINE"),
        ("CONGESTION", "OFFLINE"),
    ],
)
async def test_shipped_manager_not_reached(dial_status: str, icm_status: str) -> None:
    host = Host(globals_=FAST, reply="DIAL|SIP/101|101|icmdb|15", dial_status=dial_status)
    await call(host)
    assert host.dials == [("SIP/101", 15.0, "g")]
    assert result(host) == (icm_status, dial_status)
    assert host.variables["ICM_STATUS"] == icm_status
    assert host.variables["ICM_DIALSTATUS"] == dial_status
    assert host.variables["GOSUB_RETVAL"] == icm_status
    assert queued(host)


async def test_shipped_notfound_without_default_number() -> None:
    host = Host(globals_=FAST, reply="NOTFOUND||||")
    await call(host)
    assert host.dials == []
    assert result(host) == ("NOTFOUND", "")
    assert host.variables["ICM_STATUS"] == "NOTFOUND"
    assert queued(host)


async def test_shipped_notfound_default_number_not_answered() -> None:
    host = Host(globals_=FAST, reply="NOTFOUND|SIP/200|200|default|", dial_status="NOANSWER")
    await call(host)
    assert host.dials == [("SIP/200", 20.0, "g")]  # empty timeout field: 20 s
    assert result(host) == ("NOTFOUND", "NOANSWER")
    assert host.variables["ICM_STATUS"] == "NOTFOUND"
    assert host.variables["ICM_DIALSTATUS"] == "NOANSWER"
    assert queued(host)


async def test_shipped_default_number_answered() -> None:
    host = Host(globals_=FAST, reply="NOTCONNECTED|SIP/200|200|amocrm|30", dial_status="ANSWER")
    await call(host)
    assert result(host) == ("ANSWERED", "ANSWER")
    assert not queued(host)


async def test_shipped_daemon_silent_times_out() -> None:
    host = Host(globals_=FAST)
    started = time.monotonic()
    await call(host)
    assert 0.2 <= time.monotonic() - started < 1.5  # ICM_WAIT, not the 1.5 s default
    assert host.variables["WAITFORCONDITIONSTATUS"] == "TIMEOUT"
    assert result(host) == ("TIMEOUT", "")
    assert host.dials == []
    assert queued(host)


async def test_shipped_wrong_token_times_out() -> None:
    host = Host(globals_=FAST, reply="DIAL|SIP/101|101|icmdb|20", reply_token="123")
    await call(host)
    assert result(host) == ("TIMEOUT", "")
    assert host.dials == []
    assert queued(host)


async def test_shipped_late_reply_is_ignored() -> None:
    host = Host(globals_=FAST, reply="DIAL|SIP/101|101|icmdb|20", reply_after=0.4)
    await call(host)
    assert result(host) == ("TIMEOUT", "")
    assert host.dials == []
    assert queued(host)


async def test_shipped_empty_status_is_error() -> None:
    host = Host(globals_=FAST, reply="||||icmdb|")
    await call(host)
    assert result(host) == ("ERROR", "")
    assert host.dials == []
    # An answer without a status ICM sends cannot be read: nothing of it is dialled.
    host = Host(globals_=FAST, reply="|SIP/101|101|icmdb|20", dial_status="BUSY")
    await call(host)
    assert host.dials == []
    assert result(host) == ("ERROR", "")
    assert queued(host)


async def test_shipped_default_wait_is_the_default_budget() -> None:
    host = Host(reply="NOTFOUND||||")
    interp = await call(host)
    assert any(line.endswith('"],1.5,0.02)') for line in interp.trace)


async def test_shipped_caller_hangs_up_while_waiting() -> None:
    host = Host(globals_=FAST, hangup_after=0.05)
    interp = await call(host)
    assert host.variables["WAITFORCONDITIONSTATUS"] == "HANGUP"
    assert result(host) == ("ABANDONED", "")
    assert not queued(host)
    assert any(line.startswith("icm-hangup,s,1: ") for line in interp.trace)


async def test_shipped_caller_hangs_up_while_ringing() -> None:
    host = Host(
        globals_=FAST, reply="DIAL|SIP/101|101|icmdb|20", dial_status="CANCEL", hangup_in_dial=True
    )
    await call(host)
    assert result(host) == ("ABANDONED", "CANCEL")
    assert "ICM_DIALSTATUS" in host.variables and host.variables["ICM_DIALSTATUS"] == ""
    assert not queued(host)


async def test_shipped_caller_hangs_up_while_talking() -> None:
    host = Host(
        globals_=FAST, reply="DIAL|SIP/101|101|icmdb|20", dial_status="ANSWER", hangup_in_dial=True
    )
    await call(host)
    assert result(host) == ("ANSWERED", "ANSWER")
    assert not queued(host)


async def test_shipped_continue_after_answer() -> None:
    globals_ = {**FAST, "ICM_CONTINUE_AFTER_ANSWER": "1", "ICM_DIAL_OPTIONS": "tT"}
    host = Host(globals_=globals_, reply="DIAL|SIP/101|101|icmdb|20", dial_status="ANSWER")
    await call(host)
    assert host.dials == [("SIP/101", 20.0, "gtT")]
    assert result(host) == ("ANSWERED", "ANSWER")
    assert host.variables["GOSUB_RETVAL"] == "ANSWERED"
    assert queued(host)


async def test_shipped_number_argument() -> None:
    host = Host(globals_=FAST, reply="NOTFOUND||||")
    await call(host, "from-trunk-number")
    assert host.event("ICMRoute")["ICMNumber"] == "+79161234567"


async def test_shipped_zero_dial_timeout_rings_forever_with_a_warning() -> None:
    host = Host(globals_=FAST, reply="DIAL|SIP/101|101|icmdb|0")
    interp = await run(SHIPPED_PLAN, host, "from-trunk", "74951230000")
    assert host.dials == [("SIP/101", None, "g")]
    assert len(interp.warnings) == 1
    assert "Invalid answer timeout" in interp.warnings[0]


async def test_shipped_stale_dialstatus_on_abandon() -> None:
    # icm-start clears DIALSTATUS: an earlier Dial of the scenario does not leak into
    # the hangup handler's report.
    host = Host(globals_=FAST, dial_status="ANSWER", hangup_after=0.1)
    await call(host, "from-trunk-after-dial")
    assert result(host) == ("ABANDONED", "")


@pytest.mark.parametrize(
    ("value", "offset"),
    [("1.500", 1.5), ("5", 5.0), ("0.000", 0.0), ("0", 0.0), ("-1", 0.0), ("abc", 0.0), ("", 0.0)],
)
def test_timeout_absolute_reads_its_value_as_func_timeout_does(value: str, offset: float) -> None:
    assert parse_offset(value) == offset


async def test_timeout_absolute_jumps_to_t_and_the_call_goes_on() -> None:
    host = Host()
    interp = await run(
        plan(
            "[c]\nexten => s,1,Set(BEFORE=${TIMEOUT(absolute)})\n"
            " same => n,Set(TIMEOUT(absolute)=0.5)\n"
            " same => n,Set(LEFT=${TIMEOUT(absolute)})\n"
            " same => n,Wait(30)\n"
            " same => n,Set(NEVER=reached)\n"
            "exten => T,1,Set(AFTER=${TIMEOUT(absolute)})\n"
            " same => n,Set(DONE=yes)\n"
        ),
        host,
        "c",
    )
    assert host.variables["BEFORE"] == "0"
    assert 0 < float(host.variables["LEFT"]) <= 0.5
    assert "NEVER" not in host.variables
    assert host.variables["AFTER"] == "0" and host.variables["DONE"] == "yes"
    assert not host.hangup_requested.is_set()
    assert interp.warnings == []


async def test_timeout_absolute_without_t_ends_the_call_and_zero_cancels_it() -> None:
    host = Host()
    await run(
        plan(
            "[c]\nexten => s,1,Set(TIMEOUT(absolute)=0.05)\n"
            " same => n,Set(TIMEOUT(absolute)=0)\n"
            " same => n,Wait(0.1)\n"
            " same => n,Set(TIMEOUT(absolute)=0.05)\n"
            " same => n,Set(SURVIVED=${TIMEOUT(absolute)})\n"
            " same => n,Wait(30)\n"
            " same => n,Set(NEVER=reached)\n"
        ),
        host,
        "c",
    )
    assert float(host.variables["SURVIVED"]) > 0  # the cancelled timeout never fired
    assert "NEVER" not in host.variables and host.hangup_requested.is_set()
