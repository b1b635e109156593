"""The dialplan functions: ``${FUNC(args)}`` read and ``Set(FUNC(args)=value)`` written.

CUT, FILTER, IF, LEN, RAND, CALLERID, CHANNEL (name, uniqueid, hangup handlers), LOCAL,
GLOBAL, ISNULL, EXISTS, URIENCODE, CURL, CURLOPT and TIMEOUT(absolute); any other function
is refused."""

from __future__ import annotations

import random
import urllib.parse
from collections.abc import Callable

from simpbx.dialplan import string_functions
from simpbx.dialplan.app_data import split_label, split_sub_args
from simpbx.dialplan.args import separate_args
from simpbx.dialplan.clib import to_bytes
from simpbx.dialplan.curl import Curl
from simpbx.dialplan.errors import DialplanError
from simpbx.dialplan.host import ChannelHost
from simpbx.dialplan.stack import GosubStack
from simpbx.dialplan.timeouts import AbsoluteTimeout


def split_call(expr: str) -> tuple[str, str]:
    """``NAME(args)``: (name, args without the closing parenthesis)."""
    name, _, args = expr.partition("(")
    close = args.rfind(")")
    if close >= 0:
        args = args[:close]
    return name, args


class DialplanFunctions:
    """Every dialplan function the simulator knows, reading and writing one channel."""

    def __init__(
        self,
        channel: ChannelHost,
        stack: GosubStack,
        curl: Curl,
        timeout: AbsoluteTimeout,
        rng: random.Random,
        *,
        warn: Callable[[str], None],
        substitute: Callable[[str], str],
        location: Callable[[], tuple[str, str, int]],
    ) -> None:
        self.channel = channel
        self.stack = stack
        self.curl = curl
        self.timeout = timeout
        self.rng = rng
        self.handlers: list[str] = []  # hangup handlers, most recent last
        self._warn = warn
        self._substitute = substitute
        self._location = location
        self._readers: dict[str, Callable[[str], str | None]] = {
            "CUT": self._read_cut,
            "FILTER": lambda a: string_functions.filter_chars(a, self._warn),
            "IF": lambda a: string_functions.if_function(a, self._warn),
            "LEN": lambda a: str(len(to_bytes(a))),
            "RAND": lambda a: string_functions.rand(a, self.rng),
            "CALLERID": self._read_callerid,
            "CHANNEL": self._read_channel,
            "LOCAL": self._read_local,
            "GLOBAL": lambda a: self.channel.globals.get(a, ""),
            "ISNULL": lambda a: "0" if a else "1",
            "EXISTS": lambda a: "1" if a else "0",
            "URIENCODE": lambda a: urllib.parse.quote(a, safe="-_.~"),
            "CURLOPT": self.curl.option,
            "CURL": self.curl.result,
            "TIMEOUT": self.timeout.read,
        }
        self._writers: dict[str, Callable[[str, str], None]] = {
            "LOCAL": self._write_local,
            "CALLERID": self._write_callerid,
            "CHANNEL": self._write_channel,
            "GLOBAL": self._write_global,
            "CURLOPT": self.curl.set_option,
            "TIMEOUT": self.timeout.write,
        }

    def read(self, expr: str) -> str | None:
        """``ast_func_read``: the value, or None when the function fails (logged)."""
        name, args = split_call(expr)
        if ")" not in expr[len(name) :]:
            self._warn(f"Can't find trailing parenthesis for function '{name}({args}'?")
        reader = self._readers.get(name)
        if reader is None:
            raise DialplanError(f"dialplan function {name}() is not supported (in ${{{expr}}})")
        return reader(args)

    def write(self, expr: str, value: str) -> None:
        """``ast_func_write``."""
        name, args = split_call(expr)
        writer = self._writers.get(name)
        if writer is None:
            raise DialplanError(f"dialplan function {name}() is not supported for writing")
        writer(args, value)

    # ---------------------------------------------------------------- reading

    def _read_cut(self, args: str) -> str | None:
        parts = separate_args(args, ",", True, 3)
        if len(parts) < 3:
            self._warn("Syntax: CUT(<varname>,<char-delim>,<range-spec>) - missing argument!")
            return None
        varname, delimiter, spec = parts
        value = self._substitute("${" + varname + "}")
        delim = string_functions.cut_delimiter(delimiter)
        if not delim.isascii():
            raise DialplanError(f"non-ASCII CUT delimiter {delim!r} is not supported")
        if not value:
            return ""
        return string_functions.cut_fields(value, delim, spec, self._warn)

    def _read_callerid(self, args: str) -> str:
        parts = separate_args(args, ",", True, 2)
        if len(parts) != 1:
            raise DialplanError(f"CALLERID({args}) is not supported")
        member = parts[0].lower()
        if member == "name":
            return self.channel.caller_name
        if member.startswith("num"):
            return self.channel.caller_num
        raise DialplanError(f"CALLERID({args}) is not supported")

    def _read_channel(self, args: str) -> str:
        item = args.lower()
        if item == "name":
            return self.channel.name
        if item == "uniqueid":
            return self.channel.uniqueid
        raise DialplanError(f"CHANNEL({args}) is not supported for reading")

    def _read_local(self, args: str) -> str | None:
        if not self.stack.frames:
            return None
        return self.stack.frames[-1].locals.get(args, "")

    # ---------------------------------------------------------------- writing

    def _write_local(self, args: str, value: str) -> None:
        if not self.stack.allocated:
            self._warn(f"Tried to set LOCAL({args}), but we aren't within a Gosub routine")
        elif self.stack.frames:
            self.stack.frames[-1].locals[args] = value

    def _write_callerid(self, args: str, value: str) -> None:
        member = args.lower()
        if member == "name":
            self.channel.caller_name = value
        elif member.startswith("num"):
            self.channel.caller_num = value
        else:
            raise DialplanError(f"CALLERID({args}) is not supported for writing")

    def _write_channel(self, args: str, value: str) -> None:
        item = args.lower()
        if item == "hangup_handler_push":
            self._push_handler(value)
        elif item == "hangup_handler_pop":
            if self.handlers:
                self.handlers.pop()
            self._push_handler(value)
        elif item == "hangup_handler_wipe":
            self.handlers.clear()
            self._push_handler(value)
        else:
            raise DialplanError(f"CHANNEL({args}) is not supported for writing")

    def _write_global(self, args: str, value: str) -> None:
        self.channel.globals[args] = value

    def _push_handler(self, value: str) -> None:
        if value:
            self.handlers.append(self._expand_sub_args(value))

    def _expand_sub_args(self, args: str) -> str:
        """``expand_gosub_args``: fill in the context and extension from the channel."""
        sub = split_sub_args(args)
        if not sub.closed:
            self._warn(f"Ouch.  No closing paren: '{args}'?")
        context, exten, pri = split_label(sub.label)
        here_context, here_exten, _ = self._location()
        exten = exten or here_exten
        context = context or here_context
        if sub.has_paren and sub.params:
            return f"{context},{exten},{pri}({sub.params})"
        return f"{context},{exten},{pri}"
