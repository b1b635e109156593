"""A stand-in for Asterisk's AMI port that speaks the protocol byte for byte.

Banner, Login (with Asterisk's one-second pause before refusing a wrong secret), ActionID
echo, EventList framing, read/write classes and ``eventfilter`` lines of a manager.conf
user, and the faults a daemon must survive: the link dropped, a peer that stops answering
(half-open), raw garbage. It knows nothing of calls: the PBX behind it (see
:mod:`simpbx.pbx`) answers Setvar/Getvar and the state lists through :class:`Backend`.
This module parses client actions itself, independently of ICM's own frame reader.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from simpbx.event_filters import EventFilters

# Write classes an action needs (any one of them); absent: no permission needed.
ACTION_CLASSES: dict[str, frozenset[str]] = {
    "setvar": frozenset({"call"}),
    "getvar": frozenset({"call", "reporting"}),
    "devicestatelist": frozenset({"call", "reporting"}),
    "extensionstatelist": frozenset({"call", "reporting"}),
    "coreshowchannels": frozenset({"system", "reporting"}),
    "redirect": frozenset({"call"}),
    "originate": frozenset({"originate"}),
    "userevent": frozenset({"user"}),
}


@dataclass
class AmiUser:
    """A manager.conf user: secret, read/write classes and event filters."""

    username: str
    secret: str
    read: frozenset[str] = frozenset({"all"})
    write: frozenset[str] = frozenset({"all"})
    eventfilters: tuple[tuple[str, str], ...] = ()
    """``eventfilter`` lines as (key, value): ``("eventfilter", "Event: Hangup")``."""

    @classmethod
    def from_manager_conf(cls, text: str, section: str, *, secret: str) -> AmiUser:
        """The user ``section`` of a manager.conf text, with ``secret`` replacing its own
        (the shipped snippet holds a placeholder)."""
        parser = configparser.ConfigParser(
            strict=False,
            interpolation=None,
            comment_prefixes=(";",),
            inline_comment_prefixes=(";",),
        )
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        filters: list[tuple[str, str]] = []
        # configparser keeps one value per key: collect repeated eventfilter lines by hand.
        in_section = False
        for line in text.splitlines():
            stripped = line.split(";", 1)[0].strip()
            if stripped.startswith("["):
                in_section = stripped == f"[{section}]"
            elif in_section and stripped.startswith("eventfilter") and "=" in stripped:
                key, _, value = stripped.partition("=")
                filters.append((key.strip(), value.strip()))
        parser.read_string(text)
        conf = parser[section]

        def classes(key: str) -> frozenset[str]:
            return frozenset(c.strip() for c in conf.get(key, "").split(",") if c.strip())

        return cls(section, secret, classes("read"), classes("write"), tuple(filters))

    def may_write(self, action: str) -> bool:
        needed = ACTION_CLASSES.get(action)
        return needed is None or "all" in self.write or bool(needed & self.write)

    def may_read(self, privilege: str) -> bool:
        classes = {c for c in privilege.split(",") if c and c != "all"}
        return "all" in self.read or classes <= self.read

    @cached_property
    def filters(self) -> EventFilters:
        return EventFilters.parse(list(self.eventfilters))

    def passes_filters(self, event: str, text: str) -> bool:
        return self.filters.should_send(event, text)


class Backend(Protocol):
    """What the AMI port asks of the PBX behind it."""

    def setvar(self, channel: str | None, name: str, value: str) -> bool: ...

    def getvar(self, channel: str | None, name: str) -> str | None: ...

    def device_states(self) -> list[tuple[str, str]]: ...

    def extension_states(self) -> list[tuple[str, str, str, int]]: ...


class _NoPbx:
    """The backend of an AMI port with no PBX behind it: no channels, no states."""

    def setvar(self, channel: str | None, name: str, value: str) -> bool:
        return channel is None

    def getvar(self, channel: str | None, name: str) -> str | None:
        return None

    def device_states(self) -> list[tuple[str, str]]:
        return []

    def extension_states(self) -> list[tuple[str, str, str, int]]:
        return []


def frame(pairs: Iterable[tuple[str, str]]) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n").encode()


@dataclass
class Session:
    """One client connection."""

    writer: asyncio.StreamWriter
    user: AmiUser | None = None
    events: bool = True
    frozen: bool = False
    received: list[dict[str, str]] = field(default_factory=list)

    def send(self, data: bytes) -> None:
        if not self.frozen and not self.writer.is_closing():
            self.writer.write(data)


class AmiServer:
    """The AMI port. ``actions`` records every action received, as (username, headers)."""

    def __init__(
        self,
        users: Iterable[AmiUser],
        backend: Backend | None = None,
        *,
        version: str = "9.0.0",
        auth_delay: float = 1.0,
    ) -> None:
        self.users = {u.username: u for u in users}
        self.backend: Backend = backend or _NoPbx()
        self.version = version
        self.auth_delay = auth_delay
        self.sessions: list[Session] = []
        self.actions: list[tuple[str, dict[str, str]]] = []
        self.logins = 0
        self.refuse_logins = False  # every login fails, as with a changed secret
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Called with (username, headers) for every action as it arrives (benchmarks, tests).
        self.on_action: Callable[[str, dict[str, str]], None] | None = None
        self._login_waiters: list[asyncio.Future[None]] = []
        # The actions a logged-in user may send (login and logoff are handled apart).
        self._answers: dict[str, _Answer] = {
            "ping": self._ping,
            "setvar": self._setvar,
            "getvar": self._getvar,
            "devicestatelist": self._device_state_list,
            "extensionstatelist": self._extension_state_list,
            "originate": self._originate,
        }

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    # -- faults ---------------------------------------------------------------------
    def drop(self) -> None:
        """Close every session at once, as an Asterisk restart or a cut cable does."""
        for session in self.sessions:
            session.writer.transport.abort()
        self.sessions.clear()

    def freeze(self, frozen: bool = True) -> None:
        """Half-open: sessions stay connected but nothing is answered or sent."""
        for session in self.sessions:
            session.frozen = frozen

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are to every logged-in session."""
        for session in self.sessions:
            if session.user is not None:
                session.send(data)

    async def send_split(self, data: bytes, at: int, pause: float = 0.02) -> None:
        """Write ``data`` in two TCP segments cut at byte ``at``, so they arrive as two
        reads."""
        for session in self.sessions:
            if session.user is not None:
                session.send(data[:at])
                await session.writer.drain()
        await asyncio.sleep(pause)
        self.send_raw(data[at:])

    async def wait_login(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``count`` logins in all have succeeded."""
        async with asyncio.timeout(timeout):
            while self.logins < count:
                waiter = asyncio.get_running_loop().create_future()
                self._login_waiters.append(waiter)
                await waiter

    # -- events ---------------------------------------------------------------------
    def emit(self, event: str, headers: Iterable[tuple[str, str]], privilege: str) -> None:
        """Send an event to every session whose user may read it and whose filters let
        it through."""
        data = frame([("Event", event), ("Privilege", f"{privilege},all"), *headers])
        text = data.decode()
        for session in self.sessions:
            user = session.user
            if user is None or not session.events or not user.may_read(privilege):
                continue
            if user.passes_filters(event, text):
                session.send(data)

    # -- sessions -------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = Session(writer)
        self.sessions.append(session)
        writer.write(f"Asterisk Call Manager/{self.version}\r\n".encode())
        buffer = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if session.frozen:
                    continue
                buffer += data
                *frames, buffer = buffer.split(b"\r\n\r\n")
                for raw in frames:
                    headers = _parse_action(raw)
                    if headers is not None and not await self._handle(session, headers):
                        return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            if session in self.sessions:
                self.sessions.remove(session)
            writer.transport.abort()

    async def _handle(self, session: Session, headers: dict[str, str]) -> bool:
        """Answer one action; False closes the session."""
        action = headers.get("action", "").lower()
        action_id = headers.get("actionid")
        head = [("ActionID", action_id)] if action_id is not None else []
        username = session.user.username if session.user else ""
        session.received.append(headers)
        self.actions.append((username, headers))
        if self.on_action is not None:
            self.on_action(username, headers)

        def reply(status: str, *pairs: tuple[str, str]) -> None:
            session.send(frame([("Response", status), *head, *pairs]))

        if action == "login":
            return await self._login(session, headers, reply)
        if action == "logoff":
            reply("Goodbye", ("Message", "Thanks for all the fish."))
            await session.writer.drain()
            return False
        if session.user is None:
            reply("Error", ("Message", "Authentication Required"))
            return True
        if not session.user.may_write(action):
            reply("Error", ("Message", "Permission denied"))
            return True
        answer = self._answers.get(action)
        if answer is None:
            reply("Error", ("Message", "Invalid/unknown command"))
        else:
            answer(session, headers, head, reply)
        return True

    # -- actions --------------------------------------------------------------------
    def _ping(self, session: Session, headers: dict[str, str], head: _Head, reply: _Reply) -> None:
        reply("Success", ("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}"))

    def _setvar(
        self, session: Session, headers: dict[str, str], head: _Head, reply: _Reply
    ) -> None:
        channel = headers.get("channel") or None
        if not headers.get("variable"):
            reply("Error", ("Message", "No variable specified"))
        elif self.backend.setvar(channel, headers["variable"], headers.get("value", "")):
            reply("Success", ("Message", "Variable Set"))
        else:
            reply("Error", ("Message", "No such channel"))

    def _getvar(
        self, session: Session, headers: dict[str, str], head: _Head, reply: _Reply
    ) -> None:
        value = self.backend.getvar(headers.get("channel") or None, headers.get("variable", ""))
        if value is None and headers.get("channel"):
            reply("Error", ("Message", "No such channel"))
        else:
            reply("Success", ("Variable", headers.get("variable", "")), ("Value", value or ""))

    def _device_state_list(
        self, session: Session, headers: dict[str, str], head: _Head, reply: _Reply
    ) -> None:
        self._list(
            session,
            head,
            "Device State Changes will follow",
            "DeviceStateChange",
            [[("Device", d), ("State", s)] for d, s in self.backend.device_states()],
            "DeviceStateListComplete",
        )

    def _extension_state_list(
        self, session: Session, headers: dict[str, str], head: _Head, reply: _Reply
    ) -> None:
        self._list(
            session,
            head,
            "Extension Statuses will follow",
            "ExtensionStatus",
            [
                [
                    ("Exten", exten),
                    ("Context", context),
                    ("Hint", hint),
                    ("Status", str(status)),
                    ("StatusText", status_text(status)),
                ]
                for exten, context, hint, status in self.backend.extension_states()
            ],
            "ExtensionStateListComplete",
        )

    def _originate(
        self, session: Session, headers: dict[str, str], head: _Head, reply: _Reply
    ) -> None:
        reply("Success", ("Message", "Originate successfully queued"))
        if headers.get("async", "").lower() in ("true", "yes", "1"):
            session.send(
                frame(
                    [
                        ("Event", "OriginateResponse"),
                        ("Privilege", "call,all"),
                        *head,
                        ("Response", "Failure"),
                        ("Channel", headers.get("channel", "")),
                        ("Reason", "0"),
                    ]
                )
            )

    async def _login(self, session: Session, headers: dict[str, str], reply: _Reply) -> bool:
        user = self.users.get(headers.get("username", ""))
        if user is None or headers.get("secret") != user.secret or self.refuse_logins:
            await asyncio.sleep(self.auth_delay)
            reply("Error", ("Message", "Authentication failed"))
            await session.writer.drain()
            return False
        session.user = user
        session.events = headers.get("events", "on").lower() != "off"
        reply("Success", ("Message", "Authentication accepted"))
        if user.may_read("system"):
            session.send(
                frame(
                    [
                        ("Event", "FullyBooted"),
                        ("Privilege", "system,all"),
                        ("Uptime", "100"),
                        ("LastReload", "100"),
                        ("Status", "Fully Booted"),
                    ]
                )
            )
        self.logins += 1
        for waiter in self._login_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._login_waiters.clear()
        return True

    def _list(
        self,
        session: Session,
        head: list[tuple[str, str]],
        message: str,
        item_event: str,
        items: list[list[tuple[str, str]]],
        complete_event: str,
    ) -> None:
        session.send(
            frame([("Response", "Success"), *head, ("EventList", "start"), ("Message", message)])
        )
        for item in items:
            session.send(frame([("Event", item_event), *head, *item]))
        session.send(
            frame(
                [
                    ("Event", complete_event),
                    *head,
                    ("EventList", "Complete"),
                    ("ListItems", str(len(items))),
                ]
            )
        )


class _Reply(Protocol):
    """How an action answers: ``reply(status, *headers)`` sends one Response frame."""

    def __call__(self, status: str, *pairs: tuple[str, str]) -> None: ...


_Head = list[tuple[str, str]]  # the ActionID header to echo, if the action had one
_Answer = Callable[[Session, dict[str, str], _Head, _Reply], None]


def _parse_action(raw: bytes) -> dict[str, str] | None:
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            headers.setdefault(key.strip().lower(), value.lstrip(" "))
    return headers or None


def status_text(status: int) -> str:
    """ExtensionStatus' StatusText for a status (main/pbx.c ast_extension_state2str)."""
    return {
        -2: "Removed",
        -1: "Deleted",
        0: "Idle",
        1: "InUse",
        2: "Busy",
        4: "Unavailable",
        8: "Ringing",
        9: "InUse&Ringing",
        16: "Hold",
        17: "InUse&Hold",
    }.get(status, "Unknown")
