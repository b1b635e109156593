"""One AMI connection to Asterisk, kept logged in.

What it guarantees, and why it is not panoramisk's Manager (see README, "Dependencies"):

* an exception in an event handler is logged and counted; the link and the rest of the
  read go on;
* frames are cut on bytes, so multi-byte characters split across reads survive;
* a Ping is sent every ``keepalive_s`` and its reply awaited: a silent (half-open) link is
  dropped after ``keepalive_timeout_s`` and reconnected. Silent means no byte read for
  that long: a daemon busy reading a backlog finds its Ping's reply queued behind the
  events, and a link that is still delivering bytes is alive (the same holds for every
  action's timeout);
* reconnects back off exponentially with jitter (tenacity), and a refused login is logged
  with the user and host (never the secret) on every attempt;
* every action is bounded by a timeout and fails at once when the link is down; nothing is
  ever re-sent on a new connection (a stale Setvar must not reach a new call);
* :meth:`close` cancels everything, including a pending reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity import wait_exponential_jitter as backoff

from icm.ami.frames import BANNER_PREFIX, FrameReader, Message, render
from icm.ami.lag import Lag
from icm.config import AmiSettings
from icm.logs import Throttled
from icm.metrics import Metrics

log = logging.getLogger(__name__)

EventHandler = Callable[[Message], None]
LoginHook = Callable[[], Awaitable[None]]


class AmiError(Exception):
    """Base of AMI failures."""


class AmiNotConnected(AmiError):
    """The link is down (or not logged in) and the action was not sent."""


class AmiTimeout(AmiError):
    """Asterisk did not answer an action in time."""


class AmiActionError(AmiError):
    """Asterisk answered ``Response: Error``; the message is Asterisk's."""


class AmiLoginError(AmiError):
    """Asterisk refused the login (wrong user or secret, or not permitted from here)."""


@dataclass(slots=True)
class _Pending:
    """An action waiting for its answer (or for the events of its list)."""

    future: asyncio.Future[Message | list[Message]]
    items: list[Message] | None  # None: a plain action; a list: collecting an EventList


class _Link(asyncio.Protocol):
    """One TCP connection: bytes to messages, answers to the actions that asked."""

    def __init__(self, client: AmiClient) -> None:
        loop = asyncio.get_running_loop()
        self.client = client
        self.reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.banner: asyncio.Future[str] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.pending: dict[str, _Pending] = {}
        # Reads so far: a link that delivered bytes since the last look is alive, however
        # long the daemon took to get round to them (silence is counted in the loop's
        # chances to read, not in wall time: a saturated loop reads rarely).
        self.reads = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        messages = self.reader.feed(data)
        if self.reader.banner is not None and not self.banner.done():
            self.banner.set_result(self.reader.banner)
        if self.reader.bad:
            self.client._bad_frames(self.reader.bad)
            self.reader.bad = []
        for message in messages:
            if not self._answer(message):
                self.client._dispatch(message)
        self.reads += 1

    def connection_lost(self, exc: Exception | None) -> None:
        error = AmiNotConnected("AMI connection lost")
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self.pending.clear()
        if not self.banner.done():
            self.banner.set_exception(AmiError("connection closed before the AMI banner"))
        if not self.lost.done():
            self.lost.set_result(None)

    def write(self, headers: Mapping[str, str]) -> None:
        if self.transport is None or self.transport.is_closing():
            raise AmiNotConnected("AMI connection is closed")
        self.transport.write(render(headers))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _answer(self, message: Message) -> bool:
        """Route a message to the action waiting for it; False if none is."""
        pending = self.pending.get(message.action_id) if message.action_id else None
        if pending is None or pending.future.done():
            return False
        if not message.is_event:
            if not message.ok:
                pending.future.set_exception(AmiActionError(message.get("message") or "error"))
            elif pending.items is None:
                pending.future.set_result(message)
            elif message.get("eventlist").lower() != "start":
                pending.future.set_result(pending.items)
            return True
        if pending.items is None:
            return False
        if message.get("eventlist").lower() == "complete":
            pending.future.set_result(pending.items)
        else:
            pending.items.append(message)
        return True


class AmiClient:
    """Keeps one AMI session logged in and hands every event to ``on_event``.

    :param on_event: called for every event not answering an action of ours; must be fast.
    :param on_login: awaited (as a task) after every successful login: resynchronise here.
    """

    def __init__(
        self,
        settings: AmiSettings,
        on_event: EventHandler,
        *,
        on_login: LoginHook | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self._on_event = on_event
        self._on_login = on_login
        self._metrics = metrics or Metrics()
        self._link: _Link | None = None
        self._ids = itertools.count(1)
        self._prefix = f"icm-{secrets.token_hex(3)}-"
        self._logged_in = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._bad_log = Throttled(log)
        self._handler_log = Throttled(log)
        self.banner = ""
        # How long events waited before they were read (Asterisk's Timestamp headers).
        self.lag = Lag()

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def logged_in(self) -> bool:
        return self._logged_in.is_set()

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name="ami")
        return self._task

    async def run(self) -> None:
        """Connect, log in and serve until :meth:`close`, reconnecting whenever the link
        drops."""
        while not self._closing:
            try:
                link = await self._connect()
                await self._serve(link)
            except Exception:
                # A bug must not end the link for good (the daemon would stay up, never
                # ready, and silent): say so loudly and start over after a pause.
                self._metrics.handler_errors.inc()
                log.exception("AMI: the connection loop failed; starting over in 1 s")
                if self._link is not None:
                    self._link.abort()
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        """Log off and stop for good: no reconnect is left scheduled."""
        self._closing = True
        link = self._link
        if link is not None and self.logged_in:
            with contextlib.suppress(AmiError):
                await self._send(link, "Logoff", {}, timeout=0.5)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if link is not None:
            link.abort()

    async def wait_logged_in(self, timeout: float) -> bool:
        """True once logged in, False if ``timeout`` passes first."""
        if self.logged_in:
            return True
        try:
            async with asyncio.timeout(max(timeout, 0)):
                await self._logged_in.wait()
        except TimeoutError:
            return False
        return True

    async def action(
        self, name: str, headers: Mapping[str, str] | None = None, *, timeout: float | None = None
    ) -> Message:
        """Send an action and return Asterisk's response.

        :raises AmiNotConnected: not logged in (nothing was sent).
        :raises AmiActionError: Asterisk answered with an error.
        :raises AmiTimeout: no answer within ``timeout`` (default ``action_timeout_s``).
        """
        result = await self._send(self._current(), name, headers or {}, timeout)
        assert isinstance(result, Message)
        return result

    async def list_action(
        self, name: str, headers: Mapping[str, str] | None = None, *, timeout: float | None = None
    ) -> list[Message]:
        """Send a list action (DeviceStateList, ...) and return the events of its list."""
        result = await self._send(self._current(), name, headers or {}, timeout, listing=True)
        assert isinstance(result, list)
        return result

    def action_now(
        self, name: str, headers: Mapping[str, str], *, timeout: float | None = None
    ) -> asyncio.Future[Message]:
        """Write an action at once (before this function returns) and return the future of
        its response: done with the Message, or failed as :meth:`action` raises. For
        answers that must not wait for the event loop's next turn (a backlog being read).

        No task waits for the response: a timer bounds it as :meth:`action` is bounded,
        so thousands of answers awaiting Asterisk's confirmation behind a backlog cost a
        future and a timer each.

        :raises AmiNotConnected: not logged in (nothing was written).
        """
        link = self._current()
        action_id, future = self._write(link, name, headers)
        _Watch(link, action_id, future, timeout or self.settings.action_timeout_s, self.where, name)
        return future  # type: ignore[return-value]  # a plain action: never a list

    def _current(self) -> _Link:
        if self._link is None or not self.logged_in:
            raise AmiNotConnected(f"not logged in to AMI at {self.where}")
        return self._link

    async def _send(
        self,
        link: _Link,
        name: str,
        headers: Mapping[str, str],
        timeout: float | None,
        *,
        listing: bool = False,
        patient: bool = False,
    ) -> Message | list[Message]:
        action_id, future = self._write(link, name, headers, listing=listing)
        return await self._await(link, name, action_id, future, timeout, patient=patient)

    def _write(
        self, link: _Link, name: str, headers: Mapping[str, str], *, listing: bool = False
    ) -> tuple[str, asyncio.Future[Message | list[Message]]]:
        action_id = f"{self._prefix}{next(self._ids)}"
        future: asyncio.Future[Message | list[Message]] = asyncio.get_running_loop().create_future()
        link.pending[action_id] = _Pending(future, [] if listing else None)
        try:
            link.write({"Action": name, "ActionID": action_id, **headers})
        except BaseException:
            link.pending.pop(action_id, None)
            raise
        return action_id, future

    async def _await(
        self,
        link: _Link,
        name: str,
        action_id: str,
        future: asyncio.Future[Message | list[Message]],
        timeout: float | None,
        *,
        patient: bool = False,
    ) -> Message | list[Message]:
        wait = timeout or self.settings.action_timeout_s
        _Watch(link, action_id, future, wait, self.where, name, patient=patient)
        return await future  # cancelled with the caller: the watch then drops its entry

    async def _connect(self) -> _Link:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((AmiError, OSError, TimeoutError)),
            wait=backoff(multiplier=0.5, max=self.settings.reconnect_max_s, jitter=0.5),
            before_sleep=self._before_retry,
        )
        async for attempt in retrying:
            with attempt:
                return await self._connect_once()
        raise AssertionError("unreachable: the retry loop never stops by itself")

    async def _connect_once(self) -> _Link:
        loop = asyncio.get_running_loop()
        settings = self.settings
        opened: _Link | None = None
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                _, opened = await loop.create_connection(
                    lambda: _Link(self), settings.host, settings.port
                )
                banner = await opened.banner
        except TimeoutError:
            if opened is not None:
                opened.banner.cancel()
                opened.abort()
            raise AmiError(
                f"AMI at {self.where} did not greet within the connect timeout"
            ) from None
        link = opened
        if not banner.encode().startswith(BANNER_PREFIX):
            link.abort()
            raise AmiError(f"{self.where} is not an Asterisk AMI port (greeting {banner[:40]!r})")
        try:
            # Asterisk pauses a second before refusing a wrong secret.
            await self._send(
                link,
                "Login",
                {"Username": settings.username, "Secret": settings.secret.get_secret_value()},
                settings.action_timeout_s + 1.5,
            )
        except AmiActionError as exc:
            link.abort()
            self._metrics.ami_login_failures.inc()
            raise AmiLoginError(
                f"AMI at {self.where} refused the login of user {settings.username!r}: {exc} "
                "(check ami.username and the secret)"
            ) from None
        except AmiError:
            link.abort()
            raise
        self.banner = banner
        return link

    def _before_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        level = logging.ERROR if isinstance(exc, AmiLoginError) else logging.WARNING
        if isinstance(exc, OSError):
            reason = f"cannot connect to {self.where}: {exc.strerror or type(exc).__name__}"
        else:
            reason = str(exc) or f"no answer from {self.where}"
        log.log(
            level, "AMI: %s; retrying in %.1f s (attempt %d)", reason, delay, state.attempt_number
        )

    async def _serve(self, link: _Link) -> None:
        self._link = link
        self._logged_in.set()
        self._metrics.ami_connected.set(1)
        log.info("AMI: logged in to %s as %r (%s)", self.where, self.settings.username, self.banner)
        tasks = [asyncio.create_task(self._keepalive(link), name="ami-keepalive")]
        if self._on_login is not None:
            tasks.append(asyncio.create_task(self._after_login(), name="ami-login"))
        try:
            await link.lost
        finally:
            for task in tasks:
                task.cancel()
            self._logged_in.clear()
            self._link = None
            self._metrics.ami_connected.set(0)
            if self._closing:
                link.abort()
            else:
                self._metrics.ami_reconnects.inc()
                log.warning("AMI: connection to %s lost; reconnecting", self.where)

    async def _after_login(self) -> None:
        """Run the login hook; on an AMI error, again (backing off) while the link lasts:
        a restarting Asterisk takes logins before its modules are loaded ("Invalid/unknown
        command: DeviceStateList" for a second or so)."""
        assert self._on_login is not None
        delay = 0.25
        while True:
            try:
                await self._on_login()
                return
            except AmiError as exc:
                log.warning(
                    "AMI: resynchronisation after login failed: %s; again in %.1f s", exc, delay
                )
            except Exception:
                log.exception("AMI: resynchronisation after login failed")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)

    async def _keepalive(self, link: _Link) -> None:
        settings = self.settings
        while True:
            await asyncio.sleep(settings.keepalive_s)
            try:
                pong = await self._send(
                    link, "Ping", {}, settings.keepalive_timeout_s, patient=True
                )
                assert isinstance(pong, Message)
                self.lag.observe(pong.get("timestamp"))
            except AmiTimeout:
                log.warning(
                    "AMI: %s sent nothing for %.1f s and did not answer a Ping: link is dead, "
                    "reconnecting",
                    self.where,
                    settings.keepalive_timeout_s,
                )
                link.abort()
                return
            except AmiError:
                return

    def _dispatch(self, message: Message) -> None:
        self._metrics.ami_events.inc()
        try:
            self._on_event(message)
        except Exception:
            self._metrics.handler_errors.inc()
            self._handler_log.exception("AMI: handler failed on event %s", message.name)

    def _bad_frames(self, reasons: list[str]) -> None:
        self._metrics.ami_bad_frames.inc(len(reasons))
        self._bad_log.warning("AMI: skipped a malformed frame from %s: %s", self.where, reasons[0])


# However long bytes keep arriving, an action's answer is given up on after this many of
# its timeouts (an Asterisk that answers everything but this action).
MAX_WAIT_TIMEOUTS = 10


class _Watch:
    """Bounds the wait for an action's response, awaited or not: the action fails with
    :class:`AmiTimeout` once nothing was read for ``timeout``; while bytes keep arriving
    (an answer queued behind a backlog the daemon is still reading) it is waited for, up
    to ``MAX_WAIT_TIMEOUTS`` of them, or without limit if ``patient`` (the keepalive's
    Ping: a link that is delivering bytes is alive, however far behind the daemon is).
    Its pending entry goes when it is done either way. A timer, not a task: behind a
    backlog thousands of answers may await Asterisk's confirmation at once."""

    __slots__ = ("action_id", "future", "give_up", "link", "reads", "timeout", "timer", "what")

    def __init__(
        self,
        link: _Link,
        action_id: str,
        future: asyncio.Future[Message | list[Message]],
        timeout: float,
        where: str,
        name: str,
        *,
        patient: bool = False,
    ) -> None:
        loop = future.get_loop()
        self.link, self.action_id, self.future, self.timeout = link, action_id, future, timeout
        self.what = (name, where)
        self.give_up = math.inf if patient else loop.time() + timeout * MAX_WAIT_TIMEOUTS
        self.reads = link.reads
        self.timer = loop.call_later(timeout, self._check)
        future.add_done_callback(self._done)

    def _check(self) -> None:
        if self.future.done():
            return
        now = self.future.get_loop().time()
        if self.link.reads == self.reads or now >= self.give_up:
            name, where = self.what
            self.future.set_exception(AmiTimeout(f"no answer to {name} from AMI at {where}"))
            return
        self.reads = self.link.reads
        self.timer = self.future.get_loop().call_at(
            min(now + self.timeout, self.give_up), self._check
        )

    def _done(self, _: object) -> None:
        self.timer.cancel()
        self.link.pending.pop(self.action_id, None)
