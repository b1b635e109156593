"""The interpreter: runs one channel through a :class:`Dialplan` as Asterisk's PBX loop does.

``main/pbx.c`` (the loop, autofallthrough, the ``h`` extension), ``main/pbx_variables.c``
(substitution, builtin variables, lookup order, ``Set``), the applications NoOp, Verbose,
Log, Set, UserEvent, WaitForCondition, Goto, GotoIf, GosubIf, ExecIf, Gosub, Return, Dial,
Wait, Answer, Ringing, Progress, Hangup (any other is handed to the :class:`ChannelHost`),
the functions CUT, FILTER, IF, LEN, RAND, CALLERID, CHANNEL, LOCAL, GLOBAL, ISNULL, EXISTS,
URIENCODE, CURL, CURLOPT, and the hangup handlers (``main/pbx_hangup_handler.c``,
``apps/app_stack.c`` ``gosub_run``)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from simpbx.dialplan.app_data import (
    ExecIfBranches,
    deprecated_execif,
    execif_branches,
    is_deprecated_execif,
    parse_options,
    parse_timelen_ms,
    split_label,
    split_priority_offset,
    split_sub_args,
)
from simpbx.dialplan.args import check_condition, separate_args
from simpbx.dialplan.clib import (
    ast_strip,
    c_int,
    from_bytes,
    scan_float,
    scan_int_whole,
    strsep,
    to_bytes,
)
from simpbx.dialplan.contexts import APP_NAME_RE, Priority
from simpbx.dialplan.curl import Curl
from simpbx.dialplan.errors import DialplanError, Hangup
from simpbx.dialplan.expression import evaluate_expression
from simpbx.dialplan.functions import DialplanFunctions
from simpbx.dialplan.host import ChannelHost, clear_soft_hangup
from simpbx.dialplan.plan import Dialplan
from simpbx.dialplan.stack import Frame, GosubStack
from simpbx.dialplan.substitution import parse_variable_name, scan_braced, substring
from simpbx.dialplan.timeouts import AbsoluteTimeout
from simpbx.dialplan.waitforcondition import WaitForConditionError, parse_wait_for_condition

_REFUSED_APPS = frozenset(
    {
        "macro",
        "macroexclusive",
        "macroexit",
        "macroif",
        "exec",
        "tryexec",
        "execiftime",
        "gotoiftime",
        "while",
        "endwhile",
        "exitwhile",
        "continuewhile",
        "stackpop",
        "waitexten",
        "eagi",
        "deadagi",
        "stasis",
        "raiseexception",
        "mset",
        "importvar",
        "channelredirect",
    }
)
_REFUSED_BUILTINS = frozenset(
    {
        "HINT",
        "HINTNAME",
        "HANGUPCAUSE",
        "CALLINGPRES",
        "CALLINGANI2",
        "CALLINGTON",
        "CALLINGTNS",
        "SYSTEMNAME",
        "ENTITYID",
        "ASTCACHEDIR",
        "ASTETCDIR",
        "ASTMODDIR",
        "ASTVARLIBDIR",
        "ASTDBDIR",
        "ASTKEYDIR",
        "ASTDATADIR",
        "ASTAGIDIR",
        "ASTSPOOLDIR",
        "ASTRUNDIR",
        "ASTLOGDIR",
        "ASTSBINDIR",
    }
)
_DIAL_STATUSES = frozenset(
    {
        "ANSWER",
        "BUSY",
        "NOANSWER",
        "CANCEL",
        "CONGESTION",
        "CHANUNAVAIL",
        "DONTCALL",
        "TORTURE",
        "INVALIDARGS",
    }
)
_REFUSED_DIAL_OPTIONS = frozenset("GBUM")

_AppHandler = Callable[[str], Awaitable[bool]]


class Interpreter:
    """Runs one channel through a :class:`Dialplan`.

    ``trace`` gets one line per executed priority, ``warnings`` every message Asterisk would
    log at WARNING or ERROR level.  Variables set by the dialplan live in
    ``channel.variables`` (Gosub ``LOCAL``/``ARGn`` variables in the interpreter's frames);
    ``channel.globals`` is read and written as Asterisk's global variables (seed it with
    ``Dialplan.globals``)."""

    def __init__(
        self,
        dialplan: Dialplan,
        channel: ChannelHost,
        *,
        rng: random.Random | None = None,
        max_steps: int = 10_000,
    ) -> None:
        self.dialplan = dialplan
        self.channel = channel
        self.max_steps = max_steps
        self.trace: list[str] = []
        self.warnings: list[str] = []
        self._stack = GosubStack()
        self._curl = Curl()
        self._timeout = AbsoluteTimeout(channel)
        self._functions = DialplanFunctions(
            channel,
            self._stack,
            self._curl,
            self._timeout,
            rng if rng is not None else random.Random(),
            warn=self._warn,
            substitute=self.substitute,
            location=lambda: self.location,
        )
        self._context = ""
        self._exten = ""
        self._priority = 0
        self._dead = False
        self._steps = 0
        self._apps: dict[str, _AppHandler] = {
            "noop": self._app_nothing,
            "verbose": self._app_nothing,
            "log": self._app_nothing,
            "ringing": self._app_nothing,
            "progress": self._app_nothing,
            "answer": self._app_answer,
            "set": self._app_set,
            "userevent": self._app_userevent,
            "waitforcondition": self._app_waitforcondition,
            "goto": self._app_goto,
            "gotoif": self._app_gotoif,
            "gosub": self._app_gosub,
            "gosubif": self._app_gosubif,
            "return": self._app_return,
            "execif": self._app_execif,
            "dial": self._app_dial,
            "wait": self._app_wait,
            "hangup": self._app_hangup,
        }

    # ---------------------------------------------------------------- public API

    @property
    def rng(self) -> random.Random:
        """What RAND() draws from."""
        return self._functions.rng

    @rng.setter
    def rng(self, rng: random.Random) -> None:
        self._functions.rng = rng

    @property
    def location(self) -> tuple[str, str, int]:
        return self._context, self._exten, self._priority

    @property
    def hangup_handlers(self) -> list[str]:
        """Pushed handlers, most recent last (as ``context,exten,prio(args)``)."""
        return list(self._functions.handlers)

    async def run(self, context: str, exten: str, priority: int = 1) -> None:
        """Execute from ``context,exten,priority`` until the call ends, then run the ``h``
        extension of the context the channel is in and the hangup handlers."""
        if self.dialplan.find(context, exten, priority) is None:
            raise DialplanError(f"nothing at {context},{exten},{priority}")
        self._context, self._exten, self._priority = context, exten, priority
        try:
            await self._pbx_loop()
        finally:
            self._timeout.cancel()
        self._dead = True
        if self.dialplan.find(self._context, "h", 1) is not None:
            await self._run_h_exten()
        while self._functions.handlers:
            await self._run_sub(self._functions.handlers.pop())

    def substitute(self, text: str) -> str:
        """``pbx_substitute_variables_helper`` on the channel's current state."""
        out: list[str] = []
        pos = 0
        n = len(text)
        while pos < n:
            dollar = text.find("$", pos)
            if dollar < 0:
                out.append(text[pos:])
                break
            nxt = text[dollar + 1 : dollar + 2]
            if nxt == "{":
                out.append(text[pos:dollar])
                pos = self._substitute_variable(text, dollar, out)
            elif nxt == "[":
                out.append(text[pos:dollar])
                pos = self._substitute_expression(text, dollar, out)
            else:
                out.append(text[pos : dollar + 1])
                pos = dollar + 1
        return "".join(out)

    def get_variable(self, name: str) -> str | None:
        """A variable as ``${name}`` reads it (None when unset)."""
        if name in ("EXTEN", "CONTEXT", "PRIORITY", "CHANNEL", "UNIQUEID"):
            return {
                "EXTEN": self._exten,
                "CONTEXT": self._context,
                "PRIORITY": str(self._priority),
                "CHANNEL": self.channel.name,
                "UNIQUEID": self.channel.uniqueid,
            }[name]
        if name == "EPOCH":
            return str(c_int(int(time.time())))
        if name in _REFUSED_BUILTINS:
            raise DialplanError(f"builtin variable {name} is not simulated")
        local = self._stack.lookup(name)
        if local is not None:
            return local
        if name in self.channel.variables:
            return self.channel.variables[name]
        return self.channel.globals.get(name)

    def set_variable(self, name: str, value: str) -> None:
        """``pbx_builtin_setvar_helper``: functions when the name ends with ')'."""
        if name.endswith(")"):
            self._functions.write(name, value)
            return
        if name.startswith("__"):
            name = name[2:]
        elif name.startswith("_"):
            name = name[1:]
        if not self._stack.assign(name, value):
            self.channel.variables[name] = value

    # ---------------------------------------------------------------- substitution

    def _warn(self, message: str) -> None:
        where = f"{self._context},{self._exten},{self._priority}"
        self.warnings.append(f"{where}: {message}")

    def _substitute_variable(self, text: str, dollar: int, out: list[str]) -> int:
        braced = scan_braced(text, dollar + 2, "{")
        if not braced.closed:
            self._warn("Error in extension logic (missing '}')")
        body = self.substitute(braced.body) if braced.needsub else braced.body
        name, offset, length, isfunc = parse_variable_name(body)
        value = self._functions.read(name) if isfunc else self.get_variable(name)
        if value is not None:
            out.append(substring(value, offset, length))
        return braced.end

    def _substitute_expression(self, text: str, dollar: int, out: list[str]) -> int:
        braced = scan_braced(text, dollar + 2, "[")
        if not braced.closed:
            self._warn("Error in extension logic (missing ']')")
        body = self.substitute(braced.body) if braced.needsub else braced.body
        result, warnings = evaluate_expression(body)
        for warning in warnings:
            self._warn(warning)
        out.append(result)
        return braced.end

    # ---------------------------------------------------------------- execution loops

    def _hung_up(self) -> bool:
        return self._dead or self.channel.hangup_requested.is_set()

    async def _pbx_loop(self) -> None:
        """``__ast_pbx_run``: run priorities; stop on -1, hangup, or the end (autofallthrough)."""
        while True:
            prio = self.dialplan.find(self._context, self._exten, self._priority)
            if prio is None:
                if self.dialplan.find(self._context, self._exten, 1) is None:
                    raise DialplanError(
                        f"channel sent to invalid extension {self._context},{self._exten}"
                    )
                return
            if (not await self._execute(prio) or self._hung_up()) and not self._timed_out():
                return
            self._priority += 1

    def _timed_out(self) -> bool:
        """The "timeout" soft hangup with a ``T`` extension in the current context: go there
        (at the next priority step), the absolute timeout and that cause cleared."""
        if "timeout" not in self.channel.soft_hangups:
            return False
        if self.dialplan.find(self._context, "T", 1) is None:
            return False
        self._exten, self._priority = "T", 0
        self._timeout.cancel()
        clear_soft_hangup(self.channel, "timeout")
        return True

    async def _run_h_exten(self) -> None:
        """``ast_pbx_h_exten_run``."""
        self._exten, self._priority = "h", 1
        while True:
            prio = self.dialplan.find(self._context, self._exten, self._priority)
            if prio is None or not await self._execute(prio):
                return
            self._priority += 1

    async def _run_sub(self, sub_args: str) -> None:
        """``gosub_run`` with ignore_hangup (hangup handlers)."""
        saved = (self._context, self._exten, self._priority)
        if await self._gosub(sub_args, special=True):
            while True:
                self._priority += 1
                prio = self.dialplan.find(self._context, self._exten, self._priority)
                if prio is None or not await self._execute(prio):
                    break
            if (self._context, self._exten, self._priority) != saved:
                # Abnormal exit (logged at NOTICE level): pop up to the special frame.
                self._stack.unwind_special()
                self.set_variable("GOSUB_RETVAL", "")
        self._context, self._exten, self._priority = saved

    async def _execute(self, prio: Priority) -> bool:
        self._steps += 1
        if self._steps > self.max_steps:
            raise DialplanError(f"more than {self.max_steps} priorities executed (a loop?)")
        data = self.substitute(await self._curl.prefetch(prio.data, self.substitute, self.channel))
        self.trace.append(f"{self._context},{self._exten},{self._priority}: {prio.app}({data})")
        return await self._exec_app(prio.app, data)

    async def _exec_app(self, name: str, data: str) -> bool:
        """``pbx_exec``: True when the application returned 0, False for -1."""
        if not APP_NAME_RE.fullmatch(name):
            raise DialplanError(f"invalid application name {name!r}")
        key = name.lower()
        handler = self._apps.get(key)
        if handler is not None:
            return await handler(data)
        if key in _REFUSED_APPS:
            raise DialplanError(f"application {name} is not supported by the simulator")
        try:
            await self.channel.app(name, separate_args(data))
        except Hangup:
            return False
        return True

    # ---------------------------------------------------------------- applications

    async def _app_nothing(self, data: str) -> bool:
        return True

    async def _app_answer(self, data: str) -> bool:
        return not self._hung_up()

    async def _app_hangup(self, data: str) -> bool:
        return False

    async def _app_set(self, data: str) -> bool:
        if not data:
            self._warn("Set requires one variable name/value pair.")
            return True
        name, equal, value = data.partition("=")
        if not equal:
            self._warn("Set requires an '=' to be a valid assignment.")
            return True
        if " " in name:
            self._warn(f"Please avoid unnecessary spaces on variables ('{name}' set to '{value}')")
        if not name:
            self._warn("Set with an empty variable name")
            return True
        self.set_variable(name, value)
        return True

    async def _app_userevent(self, data: str) -> bool:
        if not data:
            self._warn("UserEvent requires an argument (eventname,optional event body)")
            return False
        args = separate_args(data, ",", True, 101)
        event = args[0]
        body: dict[str, str] = {}
        for extra in args[1:]:
            key, colon, value = extra.partition(":")
            if not colon:
                continue
            if key == "eventname":
                event = ast_strip(value)
                continue
            body[key] = ast_strip(value)
        try:
            await self.channel.user_event(event, list(body.items()))
        except Hangup:
            return False
        return True

    async def _safe_sleep(self, seconds: float) -> bool:
        """``ast_safe_sleep``: False when the channel is (or gets) hung up."""
        if self._hung_up():
            return False
        try:
            async with asyncio.timeout(seconds):
                await self.channel.hangup_requested.wait()
        except TimeoutError:
            return not self._hung_up()
        return False

    async def _app_waitforcondition(self, data: str) -> bool:
        try:
            spec = parse_wait_for_condition(data)
        except WaitForConditionError as exc:
            self._warn(str(exc))
            if exc.hangup:
                return False
            self.set_variable("WAITFORCONDITIONSTATUS", "FAILURE")
            return True
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            condition = from_bytes(to_bytes(self.substitute(spec.condition))[:511])
            if check_condition(condition):
                self.set_variable("WAITFORCONDITIONSTATUS", "TRUE")
                return True
            elapsed_ms = int((loop.time() - start) * 1000)
            if spec.timeout_ms > 0 and elapsed_ms >= spec.timeout_ms:
                self.set_variable("WAITFORCONDITIONSTATUS", "TIMEOUT")
                return True
            if not await self._safe_sleep(spec.poll_ms / 1000):
                self.set_variable("WAITFORCONDITIONSTATUS", "HANGUP")
                return False

    async def _app_wait(self, data: str) -> bool:
        ms = parse_timelen_ms(data)
        if ms is not None and ms > 0:
            return await self._safe_sleep(ms / 1000)
        return True

    def _resolve_goto(self, target: str) -> tuple[str, str, int]:
        """``ast_parseable_goto`` target -> (context, exten, priority); DialplanError when
        the label does not exist (Asterisk logs a warning and hangs up)."""
        context, exten, pri = split_label(target)
        mode, pri = split_priority_offset(pri)
        number = scan_int_whole(pri)
        if number is None:
            found = self.dialplan.find_label(
                context if context is not None else self._context,
                exten if exten is not None else self._exten,
                pri,
            )
            if found is None or found < 1:
                raise DialplanError(
                    f"{self._context},{self._exten},{self._priority}: priority {pri!r} must be "
                    f"a number > 0, or valid label (target {target!r})"
                )
            number, mode = found, 0
        if mode:
            number = self._priority + number * mode
        return context or self._context, exten or self._exten, number

    def _goto(self, target: str) -> bool:
        if not target:
            self._warn("Goto requires an argument ([[context,]extension,]priority)")
            return False
        context, exten, number = self._resolve_goto(target)
        if self.dialplan.find(context, exten, number) is None:
            raise DialplanError(
                f"{self._context},{self._exten},{self._priority}: Goto({target}) leads to "
                f"nonexistent {context},{exten},{number}"
            )
        self._context, self._exten, self._priority = context, exten, number - 1
        return True

    async def _app_goto(self, data: str) -> bool:
        return self._goto(data)

    async def _app_gotoif(self, data: str) -> bool:
        if not data:
            self._warn("Ignoring, since there is no variable to check")
            return True
        condition, rest = strsep(data, "?")
        branch1, branch2 = strsep(rest, ":")
        branch = branch1 if check_condition(condition) else branch2
        if not branch:
            return True
        return self._goto(branch)

    async def _gosub(self, data: str, *, special: bool = False) -> bool:
        if not data:
            self._warn("Gosub requires an argument")
            return False
        sub = split_sub_args(data)
        if not sub.closed:
            self._warn(f"Ouch.  No closing paren: '{data}'?")
        args = separate_args(sub.params, ",", False, 100) if sub.has_paren else []
        origin = (self._context, self._exten, self._priority)
        context, exten, number = self._resolve_goto(sub.label)
        if self.dialplan.find(context, exten, number) is None:
            raise DialplanError(
                f"{origin[0]},{origin[1]},{origin[2]}: Gosub({data}) attempted to reach "
                f"nonexistent destination {context},{exten},{number}"
            )
        max_argc = max(len(args), self._stack.arguments())
        frame = Frame(origin[0], origin[1], origin[2] + 1, max_argc, special)
        for index in range(max_argc):
            frame.locals[f"ARG{index + 1}"] = args[index] if index < len(args) else ""
        frame.locals["ARGC"] = str(len(args))
        self._stack.push(frame)
        self._context, self._exten, self._priority = context, exten, number - 1
        return True

    async def _app_gosub(self, data: str) -> bool:
        return await self._gosub(data)

    async def _app_gosubif(self, data: str) -> bool:
        usage = "GosubIf requires an argument: GosubIf(cond?label1(args):label2(args)"
        if not data:
            self._warn(usage)
            return True
        cond = separate_args(data, "?", False, 2)
        if len(cond) != 2:
            self._warn(usage)
            return True
        labels = separate_args(cond[1], ":", False, 2)
        iftrue = labels[0] if labels else ""
        iffalse = labels[1] if len(labels) > 1 else ""
        if check_condition(cond[0]):
            return await self._gosub(iftrue) if iftrue else True
        return await self._gosub(iffalse) if iffalse else True

    async def _app_return(self, data: str) -> bool:
        frame = self._stack.pop()
        if frame is None:
            if self._stack.allocated:
                self._warn("Return without Gosub: stack is empty")
            else:
                self._warn("Return without Gosub: stack is unallocated")
            return False
        self._context, self._exten, self._priority = frame.context, frame.exten, frame.priority - 1
        self.set_variable("GOSUB_RETVAL", data)
        return not frame.is_special

    async def _app_execif(self, data: str) -> bool:
        branches: ExecIfBranches | None
        if is_deprecated_execif(data):
            branches = deprecated_execif(data)
            self._warn(
                f"Deprecated syntax found.  Please upgrade to using ExecIf(<expr>?"
                f"{branches.true_app}({branches.true_data}))"
            )
        else:
            branches = execif_branches(data)
            if branches is None:
                self._warn("Usage: ExecIf(<expr>?<appiftrue>(<args>)[:<appiffalse>(<args)])")
                return False
        if check_condition(branches.expr):
            if not branches.true_app:
                self._warn(f"Could not find application! ({branches.true_app})")
                return False
            return await self._exec_app(branches.true_app, branches.true_data or "")
        if branches.false_app:
            return await self._exec_app(branches.false_app, branches.false_data or "")
        return True

    async def _app_dial(self, data: str) -> bool:
        args = separate_args(data, ",", True, 4)
        peers = args[0] if args else ""
        if not peers:
            self._warn("Dial requires an argument (technology/resource)")
            return False
        if self._hung_up():
            self.set_variable("DIALSTATUS", "CANCEL")  # "Caller hung up before dial."
            return False
        timeout = self._dial_timeout(args[1] if len(args) > 1 else "")
        options = args[2] if len(args) > 2 else ""
        letters = parse_options(options)
        refused = letters & _REFUSED_DIAL_OPTIONS
        if refused:
            raise DialplanError(f"Dial options {''.join(sorted(refused))} are not supported")
        try:
            status = await self.channel.dial(peers, timeout, options)
        except Hangup:
            return False
        if status not in _DIAL_STATUSES:
            raise DialplanError(f"the host returned an unknown DIALSTATUS {status!r}")
        self.set_variable("DIALSTATUS", status)
        if self._hung_up() or status == "CANCEL":
            return False
        return not (status == "ANSWER" and "g" not in letters)

    def _dial_timeout(self, timeout_text: str) -> float | None:
        """Dial's answer timeout in seconds (None: ring until answered): ``%30lf`` read
        as milliseconds, so "2.5" is 2.5 s (app_dial.c, Asterisk 20)."""
        if not timeout_text:
            return None
        if "^" in timeout_text:
            raise DialplanError("Dial progress timeouts (answer^progress) are not supported")
        seconds = scan_float(timeout_text)
        if seconds is not None and seconds > 0:
            return int(seconds * 1000) / 1000
        self._warn(
            f"Invalid answer timeout specified: '{timeout_text}'. Setting timeout to infinite"
        )
        return None
