"""A simulated Asterisk for tests and ``icm demo``: an AMI port, channels, devices, hints
and phones, with calls run through a real dialplan text (by default the shipped
``extensions_icm.conf`` and ``extensions_example.conf``, unchanged).

It emits the events Asterisk emits for the same call (Newchannel, UserEvent with the
channel snapshot, DialBegin/DialEnd, BridgeEnter/BridgeLeave, Hangup, DeviceStateChange),
and answers Setvar on a channel only while the channel exists.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from simpbx.ami_server import AmiServer, AmiUser, frame, status_text
from simpbx.dialplan import Dialplan, DialplanError, Hangup, Interpreter
from simpbx.dialplan.clib import ast_true
from simpbx.dialplan.host import soft_hangup

BUSY_STATES = frozenset({"INUSE", "BUSY", "ONHOLD", "RINGING", "RINGINUSE"})
IN_USE_STATES = frozenset({"INUSE", "ONHOLD", "RINGINUSE"})
# ast_devstate -> ExtensionStatus bits (main/pbx.c ast_devstate_to_extenstate).
HINT_STATUS = {
    "NOT_INUSE": 0,
    "UNKNOWN": 0,
    "INUSE": 1,
    "BUSY": 2,
    "UNAVAILABLE": 4,
    "INVALID": 4,
    "RINGING": 8,
    "RINGINUSE": 9,
    "ONHOLD": 16,
}
OFFLINE_STATES = frozenset({"UNAVAILABLE", "INVALID"})
TEST_SECRET = "test-secret-5f1c"


def asterisk_file(name: str) -> str:
    """A shipped file of ``config/asterisk``: from the checkout when this module runs from
    its ``simpbx/simpbx/``, else from the installed ``icm`` package (``icm/data``)."""
    here = Path(__file__).resolve().parents[2] / "config" / "asterisk" / name
    if here.exists():
        return here.read_text(encoding="utf-8")
    return resources.files("icm").joinpath("data", name).read_text(encoding="utf-8")


@dataclass
class Phone:
    """How a dialled phone behaves: answers after ``answer_after`` seconds (None: never)
    and talks ``talk`` seconds before hanging up."""

    answer_after: float | None = 0.02
    talk: float = 0.05


@dataclass
class Call:
    """What happened to one simulated inbound call."""

    channel: str
    uniqueid: str
    caller: str
    variables: dict[str, str] = field(default_factory=dict)
    user_events: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    reached: list[tuple[str, list[str]]] = field(default_factory=list)
    dials: list[tuple[str, str]] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    @property
    def status(self) -> str:
        return self.variables.get("ICM_STATUS", "")

    def result(self) -> dict[str, str]:
        """The last ICMResult UserEvent the dialplan raised."""
        results = [body for name, body in self.user_events if name == "ICMResult"]
        return results[-1] if results else {}


class SimChannel:
    """A channel as the dialplan interpreter sees it (its ChannelHost)."""

    def __init__(
        self,
        pbx: FakeAsterisk,
        name: str,
        caller_num: str,
        caller_name: str = "",
        *,
        context: str = "",
        exten: str = "",
        linkedid: str = "",
    ) -> None:
        self.pbx = pbx
        self.name = name
        self.uniqueid = pbx.next_uniqueid()
        self.linkedid = linkedid or self.uniqueid
        self.caller_num = caller_num
        self.caller_name = caller_name
        self.connected_num = ""
        self.context = context
        self.exten = exten
        self.state = "Ring"
        self.variables: dict[str, str] = {}
        self.globals = pbx.globals
        self.hangup_requested = asyncio.Event()
        self.soft_hangups: set[str] = set()
        self.call: Call | None = None

    def snapshot(self, prefix: str = "") -> list[tuple[str, str]]:
        state = {"Ring": "4", "Ringing": "5", "Up": "6"}.get(self.state, "4")
        return [
            (f"{prefix}Channel", self.name),
            (f"{prefix}ChannelState", state),
            (f"{prefix}ChannelStateDesc", self.state),
            (f"{prefix}CallerIDNum", self.caller_num or "<unknown>"),
            (f"{prefix}CallerIDName", self.caller_name or "<unknown>"),
            (f"{prefix}ConnectedLineNum", self.connected_num or "<unknown>"),
            (f"{prefix}ConnectedLineName", "<unknown>"),
            (f"{prefix}Language", "en"),
            (f"{prefix}AccountCode", ""),
            (f"{prefix}Context", self.context),
            (f"{prefix}Exten", self.exten),
            (f"{prefix}Priority", "1"),
            (f"{prefix}Uniqueid", self.uniqueid),
            (f"{prefix}Linkedid", self.linkedid),
        ]

    async def user_event(self, name: str, body: list[tuple[str, str]]) -> None:
        if self.call is not None:
            self.call.user_events.append((name, dict(body)))
        self.pbx.emit("UserEvent", [*self.snapshot(), ("UserEvent", name), *body], "user")

    async def dial(self, dialstring: str, timeout_s: float | None, options: str) -> str:
        status = await self.pbx.dial(self, dialstring, timeout_s)
        if self.call is not None:
            self.call.dials.append((dialstring, status))
        return status

    async def app(self, name: str, args: list[str]) -> None:
        if name.lower() == "agi":
            await self._agi(args)
            return
        if name.lower() not in ("queue", "playback", "voicemail", "verbose", "background"):
            raise DialplanError(f"the simulated PBX has no application {name}")
        if self.call is not None:
            self.call.reached.append((name, args))

    async def curl(self, url: str, options: dict[str, str]) -> str:
        """func_curl: the body whatever the status; "" when the request fails."""
        timeout = aiohttp.ClientTimeout(
            total=float(options.get("httptimeout") or 180),
            connect=float(options.get("conntimeout") or 180),
        )
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url) as response,
            ):
                return await response.text()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return ""

    async def _agi(self, args: list[str]) -> None:
        """res_agi as a FastAGI client: the environment, then commands until the server
        closes. Refused connection: AGISTATUS=FAILURE at once."""
        url = urlsplit(args[0] if args else "")
        try:
            reader, writer = await asyncio.open_connection(url.hostname, url.port or 4573)
        except OSError:
            self.variables["AGISTATUS"] = "FAILURE"
            return
        env = [
            ("agi_network", "yes"),
            ("agi_network_script", url.path.lstrip("/")),
            ("agi_request", args[0]),
            ("agi_channel", self.name),
            ("agi_language", "en"),
            ("agi_type", self.pbx.tech),
            ("agi_uniqueid", self.uniqueid),
            ("agi_version", "20.19.0"),
            ("agi_callerid", self.caller_num or "unknown"),
            ("agi_calleridname", self.caller_name or "unknown"),
            ("agi_context", "icm-agi"),
            ("agi_extension", "6100"),
            ("agi_priority", "3"),
            ("agi_enhanced", "0.0"),
            ("agi_accountcode", ""),
            *((f"agi_arg_{i}", arg) for i, arg in enumerate(args[1:], 1)),
        ]
        writer.write(("".join(f"{k}: {v}\n" for k, v in env) + "\n").encode())
        status = "SUCCESS"
        exit_on_hangup = ast_true(self.variables.get("AGIEXITONHANGUP", ""))
        hangup = asyncio.ensure_future(self.hangup_requested.wait())
        line_read: asyncio.Future[bytes] | None = None
        try:
            while True:
                line_read = asyncio.ensure_future(reader.readline())
                await asyncio.wait([line_read, hangup], return_when=asyncio.FIRST_COMPLETED)
                if hangup.done() and status != "HANGUP":
                    status = "HANGUP"  # res_agi tells the script, then refuses its commands
                    writer.write(b"HANGUP\n")
                    if exit_on_hangup:  # ...or, with AGIEXITONHANGUP, leaves at once
                        break
                line = await line_read
                if not line:
                    break
                if status == "HANGUP":
                    answer = "511 Command Not Permitted on a dead channel or intercept routine\n"
                else:
                    answer = self._agi_command(line.decode().strip())
                writer.write(answer.encode())
                await writer.drain()
        except OSError:
            status = "FAILURE"
        finally:
            hangup.cancel()
            if line_read is not None:
                line_read.cancel()
            writer.close()
        self.variables["AGISTATUS"] = status
        if status == "HANGUP":
            raise Hangup  # agi_exec_full returns -1 on AGI_RESULT_HANGUP

    def _agi_command(self, command: str) -> str:
        verb = command.split(" ", 2)
        if verb[:2] == ["SET", "VARIABLE"] and len(verb) == 3:
            name, _, value = verb[2].partition(" ")
            self.variables[name.strip('"')] = value.strip().strip('"')
            return "200 result=1\n"
        if verb[:2] == ["GET", "VARIABLE"] and len(verb) == 3:
            value = self.variables.get(verb[2].strip('"'))
            return "200 result=0\n" if value is None else f"200 result=1 ({value})\n"
        if verb[:1] == ["VERBOSE"]:
            return "200 result=1\n"
        return "510 Invalid or unknown command\n"


class FakeAsterisk:
    """The simulated PBX. Start it, point ICM's ``ami.port`` at :attr:`port`, place calls.

    :param dialplan: dialplan texts to run (default: the shipped files, unchanged).
    :param users: AMI users (default: the shipped ``manager_icm.conf`` user ``icm`` with
        secret :data:`TEST_SECRET`).
    :param tech: the channel technology of phones and trunk: "SIP" (chan_sip: ``SIP/101``,
        dialled ``SIP/101`` and ``SIP/trunk/NUMBER``) or "PJSIP" (``PJSIP/101``, dialled
        ``PJSIP/101`` and ``PJSIP/NUMBER@trunk``).

    A phone that is in use or ringing rings again when dialled (call waiting, as chan_sip
    with ``callcounter`` and PJSIP do); only a device in state BUSY answers BUSY.
    """

    def __init__(
        self,
        *,
        dialplan: Iterable[str] | None = None,
        users: Iterable[AmiUser] | None = None,
        auth_delay: float = 1.0,
        tech: str = "SIP",
    ) -> None:
        if tech not in ("SIP", "PJSIP"):
            raise ValueError(f"tech must be SIP or PJSIP, not {tech!r}")
        self.tech = tech
        texts = (
            list(dialplan)
            if dialplan is not None
            else [
                asterisk_file("extensions_icm.conf"),
                asterisk_file("extensions_example.conf"),
            ]
        )
        self.dialplan = Dialplan.parse(*texts)
        if users is None:
            users = [
                AmiUser.from_manager_conf(
                    asterisk_file("manager_icm.conf"), "icm", secret=TEST_SECRET
                )
            ]
        self.ami = AmiServer(users, self, auth_delay=auth_delay)
        self.globals: dict[str, str] = dict(self.dialplan.globals)
        self.devices: dict[str, str] = {}  # as Asterisk reports them
        self._base: dict[str, str] = {}  # as set_device() left them, before calls
        self._ringing: collections.Counter[str] = collections.Counter()
        self._talking: collections.Counter[str] = collections.Counter()
        self.hints: dict[str, tuple[str, str, int]] = {}
        self.phones: dict[str, Phone] = {}
        self.channels: dict[str, SimChannel] = {}
        self.calls: list[Call] = []
        self._seq = itertools.count(1)
        self._epoch = int(time.time())
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        return self.ami.port

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        await self.ami.start(host, port)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ami.stop()

    def next_uniqueid(self) -> str:
        return f"{self._epoch}.{next(self._seq)}"

    def emit(self, event: str, headers: Iterable[tuple[str, str]], privilege: str = "call") -> None:
        self.ami.emit(event, headers, privilege)

    # -- AMI backend --------------------------------------------------------------------
    def setvar(self, channel: str | None, name: str, value: str) -> bool:
        if channel is None:
            self.globals[name] = value
            return True
        target = self.channels.get(channel)
        if target is None:
            return False
        target.variables[name] = value
        return True

    def getvar(self, channel: str | None, name: str) -> str | None:
        if channel is None:
            return self.globals.get(name, "")
        target = self.channels.get(channel)
        return None if target is None else target.variables.get(name, "")

    def device_states(self) -> list[tuple[str, str]]:
        return list(self.devices.items())

    def extension_states(self) -> list[tuple[str, str, str, int]]:
        return [(exten, ctx, hint, status) for exten, (ctx, hint, status) in self.hints.items()]

    # -- state ----------------------------------------------------------------------------
    def set_device(self, device: str, state: str) -> None:
        """Set a device state (NOT_INUSE, INUSE, UNAVAILABLE, ...), as a phone registering,
        or a call the simulator does not model, would; calls ringing or talking on the
        device add to it."""
        self._base[device] = state
        self._update_device(device)

    def device(self, ext: str) -> str:
        """The device of extension ``ext``: ``SIP/101`` or ``PJSIP/101``."""
        return f"{self.tech}/{ext}"

    def _update_device(self, device: str) -> None:
        """The device's state from its base and its channels; DeviceStateChange, and
        ExtensionStatus for each hint naming it, only when a state really changes."""
        base = self._base.get(device, "INVALID")
        ringing, talking = self._ringing[device], self._talking[device]
        in_use = talking > 0 or base in IN_USE_STATES
        if ringing and in_use:
            state = "RINGINUSE"
        elif ringing:
            state = "RINGING"
        elif talking:
            state = "INUSE"
        else:
            state = base
        if self.devices.get(device) == state:
            return
        self.devices[device] = state
        self.emit("DeviceStateChange", [("Device", device), ("State", state)])
        for exten, (context, hint, _) in list(self.hints.items()):
            if device in hint.split("&"):
                self._announce_hint(exten, context, hint, self._hint_status(hint))

    def _hint_status(self, hint: str) -> int:
        """``ast_devstate_aggregate`` of the hint's devices, as ExtensionStatus bits."""
        states = [self.devices.get(d, "INVALID") for d in hint.split("&")]
        if all(HINT_STATUS.get(s, 4) == 4 for s in states):
            return 4
        if "BUSY" in states:
            return 2
        ringing = any(s in ("RINGING", "RINGINUSE") for s in states)
        in_use = any(s in ("INUSE", "RINGINUSE") for s in states)
        if ringing:
            return 9 if in_use else 8
        if in_use:
            return 1
        return 16 if "ONHOLD" in states else 0

    def set_hint(
        self, exten: str, status: int, *, context: str = "ext-local", hint: str | None = None
    ) -> None:
        """Set the state of the hint ``exten`` (ExtensionStatus bitmask) and announce it;
        ``hint`` names its devices (default: the extension's own device)."""
        self._announce_hint(exten, context, hint or self.device(exten), status)

    def _announce_hint(self, exten: str, context: str, hint: str, status: int) -> None:
        previous = self.hints.get(exten)
        self.hints[exten] = (context, hint, status)
        if previous is not None and previous[2] == status and previous[1] == hint:
            return
        self.emit(
            "ExtensionStatus",
            [
                ("Exten", exten),
                ("Context", context),
                ("Hint", hint),
                ("Status", str(status)),
                ("StatusText", status_text(status)),
            ],
        )

    def register(self, *extensions: str, phone: Phone | None = None) -> None:
        """Registered phones at these extensions, idle, answering as ``phone`` says."""
        for ext in extensions:
            self.phones[self.device(ext)] = phone or Phone()
            self.set_device(self.device(ext), "NOT_INUSE")

    # -- calls ----------------------------------------------------------------------------
    async def call(
        self,
        caller: str,
        *,
        did: str = "74951230000",
        context: str = "from-trunk",
        caller_name: str = "",
        hangup_after: float | None = None,
    ) -> Call:
        """Place an inbound call from the trunk and run it through the dialplan to its end.

        :param hangup_after: the caller hangs up after this many seconds.
        """
        channel = self._channel(
            self.device("trunk"), caller, caller_name, context=context, exten=did
        )
        call = Call(channel.name, channel.uniqueid, caller, started=time.monotonic())
        channel.call = call
        self.emit("Newchannel", channel.snapshot())
        self.calls.append(call)
        interpreter = Interpreter(self.dialplan, channel)
        timer = None
        if hangup_after is not None:
            timer = asyncio.get_running_loop().call_later(hangup_after, soft_hangup, channel, "dev")
        try:
            await interpreter.run(context, did, 1)
        finally:
            if timer is not None:
                timer.cancel()
            call.variables = dict(channel.variables)
            call.trace = interpreter.trace
            call.warnings = interpreter.warnings
            call.ended = time.monotonic()
            self._hangup(channel, 16)
        return call

    def start_call(self, caller: str, **kwargs: Any) -> asyncio.Task[Call]:
        """:meth:`call` as a task, for calls that overlap."""
        task = asyncio.create_task(self.call(caller, **kwargs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def route_request(self, number: str, token: str) -> bytes:
        """The ICMRoute UserEvent a channel waiting in the shipped dialplan raises, as
        wire bytes (for benchmarks that drive the daemon without running the dialplan).
        The channel exists, so the answer's Setvar succeeds."""
        return route_request_frame(self._channel(self.device("trunk"), number).snapshot(), token)

    async def dial(self, caller: SimChannel, dialstring: str, timeout: float | None) -> str:
        """Dial() as Asterisk does it for SIP phones and a trunk."""
        legs: list[tuple[SimChannel, Phone, str]] = []
        failures: list[str] = []
        for target in dialstring.split("&"):
            leg = self._originate_leg(caller, target)
            if isinstance(leg, str):
                failures.append(leg)
            else:
                legs.append(leg)
        if not legs:
            return "BUSY" if "BUSY" in failures else "CHANUNAVAIL"
        answered = await self._ring(caller, legs, timeout)
        if answered is None:
            status = "CANCEL" if caller.hangup_requested.is_set() else "NOANSWER"
            for callee, _, device in legs:
                self._dial_end(caller, callee, status)
                self._hangup(callee, 19 if status == "NOANSWER" else 16)
                self._ring_ended(device)
            return status
        callee, phone, device = answered
        for other, _, other_device in legs:
            if other is not callee:
                self._dial_end(caller, other, "CANCEL")
                self._hangup(other, 26)
                self._ring_ended(other_device)
        await self._talk(caller, callee, device, phone.talk)
        return "ANSWER"

    async def outbound(
        self, extension: str, number: str, *, answer: bool = True, talk: float = 0.05
    ) -> None:
        """A manager dials an external number from his phone (no ICM involved)."""
        manager = self._channel(
            self.device(extension), extension, context="from-internal", exten=number
        )
        self.emit("Newchannel", manager.snapshot())
        callee = self._channel(self.device("trunk"), number, linkedid=manager.linkedid)
        callee.exten = number
        self._dial_begin(manager, callee, f"trunk/{number}")
        if answer:
            self._dial_end(manager, callee, "ANSWER")
            await self._talk(manager, callee, self.device(extension), talk, device_first=True)
        else:
            await asyncio.sleep(talk)
            self._dial_end(manager, callee, "NOANSWER")
            self._hangup(callee, 19)
        self._hangup(manager, 16)

    async def transfer_call(
        self,
        caller: str,
        first: str,
        second: str,
        *,
        talk: float = 0.05,
        second_talk: float | None = None,
    ) -> None:
        """A caller talks with ``first`` for ``talk`` seconds, who transfers him to
        ``second`` (who talks ``second_talk`` seconds, default ``talk``); no ICM."""
        channel = self._channel(
            self.device("trunk"), caller, context="from-trunk", exten="74951230000"
        )
        self.emit("Newchannel", channel.snapshot())
        bridge = uuid.uuid4().hex
        one = self._channel(self.device(first), first, linkedid=channel.linkedid)
        self._dial_begin(channel, one, first)
        self._dial_end(channel, one, "ANSWER")
        channel.state = one.state = "Up"
        self._bridge_enter(bridge, channel, 1)
        self._bridge_enter(bridge, one, 2)
        await asyncio.sleep(talk)
        self._bridge_leave(bridge, one, 1)
        self._hangup(one, 16)
        two = self._channel(self.device(second), second, linkedid=channel.linkedid)
        two.state = "Up"
        self._bridge_enter(bridge, two, 2)
        await asyncio.sleep(talk if second_talk is None else second_talk)
        self._bridge_leave(bridge, two, 1)
        self._bridge_leave(bridge, channel, 0)
        self._hangup(two, 16)
        self._hangup(channel, 16)

    # -- internals --------------------------------------------------------------------------
    def _channel(
        self,
        device: str,
        caller_num: str,
        caller_name: str = "",
        *,
        context: str = "",
        exten: str = "",
        linkedid: str = "",
    ) -> SimChannel:
        name = f"{device}-{next(self._seq):08x}"
        channel = SimChannel(
            self, name, caller_num, caller_name, context=context, exten=exten, linkedid=linkedid
        )
        self.channels[name] = channel
        return channel

    def _originate_leg(
        self, caller: SimChannel, target: str
    ) -> tuple[SimChannel, Phone, str] | str:
        tech, _, resource = target.partition("/")
        if tech != self.tech or not resource:
            return "CHANUNAVAIL"
        if tech == "PJSIP":  # PJSIP/101, PJSIP/NUMBER@trunk
            number, at, peer = resource.partition("@")
            if not at:
                peer, number = resource, ""
        else:  # SIP/101, SIP/trunk/NUMBER
            peer, _, number = resource.partition("/")
        device = f"{tech}/{peer}"
        if number:  # an external phone, through the trunk
            phone = self.phones.get(number, Phone(answer_after=None))
        else:
            phone = self.phones.get(device)
            state = self.devices.get(device, "INVALID")
            if phone is None or state in OFFLINE_STATES:
                return "CHANUNAVAIL"
            if state == "BUSY":
                return "BUSY"
        callee = self._channel(device, number or peer, linkedid=caller.linkedid)
        callee.exten = number or peer
        callee.connected_num = caller.caller_num
        self._dial_begin(caller, callee, resource)
        if number:
            return callee, phone, ""
        self._ringing[device] += 1
        self._update_device(device)
        return callee, phone, device

    async def _ring(
        self, caller: SimChannel, legs: list[tuple[SimChannel, Phone, str]], timeout: float | None
    ) -> tuple[SimChannel, Phone, str] | None:
        waits = {
            asyncio.ensure_future(asyncio.sleep(phone.answer_after)): leg
            for leg in legs
            if (phone := leg[1]).answer_after is not None
        }
        hangup = asyncio.ensure_future(caller.hangup_requested.wait())
        try:
            done, _ = await asyncio.wait(
                [*waits, hangup], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for future in [*waits, hangup]:
                future.cancel()
        if hangup in done:
            return None
        answered = [waits[f] for f in done if f in waits]
        return answered[0] if answered else None

    async def _talk(
        self,
        caller: SimChannel,
        callee: SimChannel,
        device: str,
        talk: float,
        *,
        device_first: bool = False,
    ) -> None:
        if not device_first:
            self._dial_end(caller, callee, "ANSWER")
        caller.state = callee.state = "Up"
        caller.connected_num, callee.connected_num = callee.caller_num, caller.caller_num
        if device:
            if not device_first:
                self._ringing[device] -= 1
            self._talking[device] += 1
            self._update_device(device)
        bridge = uuid.uuid4().hex
        self._bridge_enter(bridge, caller, 1)
        self._bridge_enter(bridge, callee, 2)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(talk):
                await caller.hangup_requested.wait()
        self._bridge_leave(bridge, callee, 1)
        self._bridge_leave(bridge, caller, 0)
        self._hangup(callee, 16)
        if device:
            self._talking[device] -= 1
            self._update_device(device)

    def _ring_ended(self, device: str) -> None:
        """A leg that rang on ``device`` and was not answered is gone."""
        if device:
            self._ringing[device] -= 1
            self._update_device(device)

    def _dial_begin(self, caller: SimChannel, callee: SimChannel, dialstring: str) -> None:
        self.emit("Newchannel", callee.snapshot())
        self.emit(
            "DialBegin",
            [*caller.snapshot(), *callee.snapshot("Dest"), ("DialString", dialstring)],
        )

    def _dial_end(self, caller: SimChannel, callee: SimChannel, status: str) -> None:
        self.emit("DialEnd", [*caller.snapshot(), *callee.snapshot("Dest"), ("DialStatus", status)])

    def _bridge_enter(self, bridge: str, channel: SimChannel, count: int) -> None:
        self.emit("BridgeEnter", [*_bridge(bridge, count), *channel.snapshot()])

    def _bridge_leave(self, bridge: str, channel: SimChannel, count: int) -> None:
        self.emit("BridgeLeave", [*_bridge(bridge, count), *channel.snapshot()])

    def _hangup(self, channel: SimChannel, cause: int) -> None:
        if self.channels.pop(channel.name, None) is None:
            return
        text = {16: "Normal Clearing", 19: "No answer", 26: "Answered elsewhere"}.get(cause, "")
        self.emit("Hangup", [*channel.snapshot(), ("Cause", str(cause)), ("Cause-txt", text)])


def _bridge(bridge: str, count: int) -> list[tuple[str, str]]:
    return [
        ("BridgeUniqueid", bridge),
        ("BridgeType", "basic"),
        ("BridgeTechnology", "simple_bridge"),
        ("BridgeCreator", "<unknown>"),
        ("BridgeName", "<unknown>"),
        ("BridgeNumChannels", str(count)),
        ("BridgeVideoSourceMode", "none"),
    ]


def route_request_frame(snapshot: list[tuple[str, str]], token: str) -> bytes:
    """The shipped dialplan's routing request (``UserEvent(ICMRoute, ...)``) from the
    channel whose snapshot is given, as wire bytes."""
    return frame(
        [
            ("Event", "UserEvent"),
            ("Privilege", "user,all"),
            *snapshot,
            ("UserEvent", "ICMRoute"),
            ("ICMToken", token),
            ("ICMNumber", ""),
        ]
    )
