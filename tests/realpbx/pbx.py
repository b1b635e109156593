"""A real Asterisk, SIPp phones and callers, and ICM as a process, for the real-PBX tier.

Everything runs as a PBX administrator would run it, on loopback, in a run directory of
its own: ``asterisk -C RUN/etc/asterisk.conf -f`` with the project's
``config/asterisk/extensions_icm.conf`` and ``manager_icm.conf`` included unchanged,
SIPp processes for phones and callers, and ``icm run -c FILE`` for the daemon.

The test's own dialplan (``[from-trunk]``, below) plays the company's scenario: it
hands the call to ICM through one of the three entries, then reports what came back with
``UserEvent(TestResult, ...)``, which the observer AMI user (read/write all) collects.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

PREFIX = Path(os.environ.get("ICM_ASTERISK", "/opt/asterisk"))
REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "asterisk"
ICM_SECRET = "change-me"  # the secret written in the shipped manager_icm.conf
OBSERVER_SECRET = "observer-7d1e"
TRUNK_IP = "127.0.0.2"  # callers from "the operator" and the operator's side of outbound calls
PHONES = ("101", "102", "103", "104", "105", "106")
OFFLINE = "109"  # configured, never reachable: device state UNAVAILABLE
ENTRIES = {"ami": ("1", "icm"), "agi": ("2", "icm-agi"), "curl": ("3", "icm-curl")}

_NOLOAD = [
    # Need files, ports or servers this test does not set up.
    "chan_iax2.so",
    "chan_unistim.so",
    "chan_websocket.so",
    "pbx_dundi.so",
    "app_voicemail.so",
    "app_minivm.so",
    "app_stasis.so",
    "res_phoneprov.so",
    "res_pjsip_phoneprov_provider.so",
    "res_smdi.so",
    "res_hep.so",
    "res_hep_pjsip.so",
    "res_hep_rtcp.so",
    "res_calendar.so",
    "res_stun_monitor.so",
    "res_prometheus.so",
    "res_statsd.so",
    "res_websocket_client.so",
    "res_aeap.so",
    "res_speech_aeap.so",
    "res_pjsip_transport_websocket.so",
    "res_http_websocket.so",
    "res_http_media_cache.so",
    "res_config_pgsql.so",
    "res_config_sqlite3.so",
    "cdr_csv.so",
    "cdr_custom.so",
    "cdr_pgsql.so",
    "cdr_sqlite3_custom.so",
    "cel_custom.so",
    "cel_pgsql.so",
    "cel_sqlite3_custom.so",
]


def missing() -> str | None:
    """Why the tier cannot run here, in one line; None when it can."""
    binary = PREFIX / "sbin" / "asterisk"
    if not binary.exists():
        return (
            f"no Asterisk at {PREFIX} (ICM_ASTERISK): build one with "
            "tests/realpbx/build-asterisk.sh (README, 'Running the real-PBX tests'), then "
            "ICM_ASTERISK=/opt/asterisk .venv/bin/pytest -m realpbx"
        )
    if shutil.which("sipp") is None:
        return "sipp is not installed (apt install sip-tester): the real-PBX tier needs it"
    return None


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_port_blocks = itertools.count(0)


def free_udp_block(size: int = 4) -> int:
    """The first of ``size`` free UDP ports (SIPp binds its media port, +1 for RTCP, +2
    and +3 for video), never handed out twice in a session: SIPp processes started a few
    milliseconds apart must not race for the same port the kernel just freed. Outside
    Asterisk's RTP range (rtp.conf 10000-29999)."""
    for _ in range(2000):
        block = (os.getpid() * 131 + next(_port_blocks)) % 6000
        port = 32000 + block * size
        sockets = []
        try:
            for offset in range(size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind(("0.0.0.0", port + offset))
            return port
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free UDP ports for SIPp")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true; fail with ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


# -- AMI observer ----------------------------------------------------------------------


class Event(dict[str, str]):
    """One AMI message: lower-case keys, first value wins; ``raw`` keeps every line."""

    raw: list[tuple[str, str]]

    @property
    def name(self) -> str:
        return self.get("event", "")

    @property
    def time(self) -> float:
        """Asterisk's own clock (``timestampevents = yes``)."""
        return float(self.get("timestamp", "0"))


class Ami:
    """The observer: an AMI session with every right, in a thread of its own. It keeps
    every event it sees (in order) and sends actions."""

    def __init__(self, port: int, username: str = "observer", secret: str = OBSERVER_SECRET):
        self.port, self.username, self.secret = port, username, secret
        self.events: list[Event] = []
        self._responses: dict[str, Event] = {}
        self._lists: dict[str, list[Event]] = {}
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.connected = False

    def connect(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        sock.settimeout(None)
        self._sock = sock
        self.connected = True
        self._thread = threading.Thread(target=self._read, args=(sock,), daemon=True)
        self._thread.start()
        answer = self.action("Login", Username=self.username, Secret=self.secret, _timeout=10)
        assert answer.get("response") == "Success", answer

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(5)

    def _read(self, sock: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                buffer += data
                while b"\r\n\r\n" in buffer:
                    frame, buffer = buffer.split(b"\r\n\r\n", 1)
                    self._handle(frame.decode("utf-8", "replace"))
        except OSError:
            pass
        finally:
            with self._cond:
                self.connected = False
                self._cond.notify_all()

    def _handle(self, frame: str) -> None:
        message = Event()
        message.raw = []
        for line in frame.split("\r\n"):
            key, sep, value = line.partition(": ")
            if not sep:
                key, sep, value = line.partition(":")
            if not sep:
                continue
            message.raw.append((key, value))
            message.setdefault(key.lower(), value)
        with self._cond:
            action_id = message.get("actionid", "")
            if "response" in message and action_id in self._lists:
                self._lists[action_id].append(message)
            if "response" in message:
                self._responses[action_id] = message
            elif action_id in self._lists:
                self._lists[action_id].append(message)
            else:
                message["_seen"] = f"{time.monotonic():.6f}"
                self.events.append(message)
            self._cond.notify_all()

    def action(self, name: str, _timeout: float = 10.0, **headers: str) -> Event:
        action_id = f"obs-{next(self._ids)}"
        lines = [f"Action: {name}", f"ActionID: {action_id}"]
        lines += [f"{key}: {value}" for key, value in headers.items()]
        assert self._sock is not None
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        with self._cond:
            ok = self._cond.wait_for(lambda: action_id in self._responses, _timeout)
            assert ok, f"no answer to {name} within {_timeout} s"
            return self._responses.pop(action_id)

    def list_action(self, name: str, complete: str, _timeout: float = 10.0, **headers: str):
        action_id = f"obs-{next(self._ids)}"
        with self._cond:
            self._lists[action_id] = []
        lines = [f"Action: {name}", f"ActionID: {action_id}"]
        lines += [f"{key}: {value}" for key, value in headers.items()]
        assert self._sock is not None
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        with self._cond:
            ok = self._cond.wait_for(
                lambda: any(m.name == complete for m in self._lists[action_id]), _timeout
            )
            assert ok, f"{name}: no {complete} within {_timeout} s"
            items = self._lists.pop(action_id)
        return [m for m in items if "event" in m and m.name != complete]

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def since(self, mark: int) -> list[Event]:
        with self._cond:
            return list(self.events[mark:])

    def wait(
        self, predicate: Callable[[Event], bool], timeout: float, mark: int = 0, what: str = ""
    ) -> Event:
        """The first event from ``mark`` on that matches; fails after ``timeout``."""
        found: list[Event] = []

        def seen() -> bool:
            for event in self.events[mark:]:
                if predicate(event):
                    found.append(event)
                    return True
            return False

        with self._cond:
            if not self._cond.wait_for(seen, timeout):
                names = [f"{e.name}/{e.get('userevent', '')}" for e in self.events[mark:]][-40:]
                raise AssertionError(f"no {what or 'matching event'} within {timeout} s: {names}")
        return found[0]

    def getvar(self, variable: str, channel: str = "") -> str:
        headers = {"Variable": variable}
        if channel:
            headers["Channel"] = channel
        answer = self.action("Getvar", **headers)
        return answer.get("value", "")

    def user_events(self, kind: str, mark: int = 0) -> list[Event]:
        return [e for e in self.since(mark) if e.name == "UserEvent" and e.get("userevent") == kind]


# -- Asterisk ----------------------------------------------------------------------------


@dataclass
class Asterisk:
    """One Asterisk in ``run``; ``tech`` is ``sip`` (chan_sip) or ``pjsip``."""

    run: Path
    tech: str
    sip_port: int = field(default_factory=free_udp_block)
    ami_port: int = field(default_factory=free_port)
    provider_port: int = field(default_factory=free_udp_block)
    phone_ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    observer: Ami | None = None

    def __post_init__(self) -> None:
        for ext in PHONES:
            self.phone_ports.setdefault(ext, free_udp_block())
        self.etc = self.run / "etc"

    # naming
    @property
    def channel_tech(self) -> str:
        return "PJSIP" if self.tech == "pjsip" else "SIP"

    def device(self, ext: str) -> str:
        return f"{self.channel_tech}/{ext}"

    @property
    def dial_section(self) -> str:
        """ICM's [dial] for this PBX: PJSIP runs on the shipped defaults."""
        if self.tech == "pjsip":
            return ""
        return '[dial]\nextension = "SIP/{ext}"\nexternal = "SIP/trunk/{number}"\n'

    # configuration
    def write_config(self) -> None:
        for sub in ("etc", "lib", "spool", "run", "log", "agi", "cache"):
            (self.run / sub).mkdir(parents=True, exist_ok=True)
        files = {
            "asterisk.conf": self._asterisk_conf(),
            "modules.conf": self._modules_conf(),
            "logger.conf": "[general]\ndateformat = %F %T.%3q\n[logfiles]\n"
            "messages => notice,warning,error,verbose\n",
            "manager.conf": self._manager_conf(),
            "rtp.conf": "[general]\nrtpstart = 10000\nrtpend = 29999\n",
            "extensions.conf": self._extensions_conf(),
            "cdr.conf": "[general]\nenable = no\n",
            "sip.conf": self._sip_conf() if self.tech == "sip" else "",
            "pjsip.conf": self._pjsip_conf() if self.tech == "pjsip" else "",
            "features.conf": "[general]\n",
        }
        for name, text in files.items():
            (self.etc / name).write_text(text, encoding="utf-8")

    def _asterisk_conf(self) -> str:
        r = self.run
        return f"""[directories]
astetcdir => {r}/etc
astmoddir => {PREFIX}/lib/asterisk/modules
astvarlibdir => {r}/lib
astdbdir => {r}/lib
astkeydir => {r}/lib
astdatadir => {PREFIX}/var/lib/asterisk
astagidir => {r}/agi
astspooldir => {r}/spool
astrundir => {r}/run
astlogdir => {r}/log
astsbindir => {PREFIX}/sbin
astcachedir => {r}/cache
[options]
nofork = yes
verbose = 3
"""

    def _modules_conf(self) -> str:
        noload = list(_NOLOAD)
        if self.tech == "pjsip":
            noload.append("chan_sip.so")
        else:
            noload += ["chan_pjsip.so", "res_pjsip.so"]
        lines = ["[modules]", "autoload = yes"] + [f"noload => {m}" for m in noload]
        return "\n".join(lines) + "\n"

    def _manager_conf(self) -> str:
        return f"""[general]
enabled = yes
port = {self.ami_port}
bindaddr = 127.0.0.1
timestampevents = yes

[observer]
secret = {OBSERVER_SECRET}
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = all
write = all

; Users whose event filters the facts about the simulator check (test_facts.py).
[filtered-advanced]
secret = {OBSERVER_SECRET}
permit = 127.0.0.1/255.255.255.255
read = all
write = all
eventfilter(action(include),name(UserEvent),header(UserEvent),method(exact)) = FactProbe

[filtered-posix]
secret = {OBSERVER_SECRET}
permit = 127.0.0.1/255.255.255.255
read = all
write = all
eventfilter = UserEvent: Fact\\d
eventfilter = UserEvent: Class[[:digit:]]

#tryinclude "{SHIPPED / "manager_icm.conf"}"
"""

    def _header(self, name: str) -> str:
        if self.tech == "pjsip":
            return f"${{PJSIP_HEADER(read,{name})}}"
        return f"${{SIP_HEADER({name})}}"

    def _extensions_conf(self) -> str:
        tech = self.channel_tech
        hints = "\n".join(f"exten => {ext},hint,{tech}/{ext}" for ext in (*PHONES, OFFLINE))
        # 106's hint also follows a custom state (do not disturb).
        hints = hints.replace(f"{tech}/106", f"{tech}/106&Custom:DND106")
        entries = "\n".join(
            f"exten => _{digit}X.,1,Gosub(icm-test,s,1)\n"
            f" same => n,Gosub({context},6100,1(${{ARGNUM}}))\n"
            f" same => n,Goto(icm-test-after,s,1)"
            for digit, context in ENTRIES.values()
        )
        trunk = "PJSIP/${EXTEN}@trunk" if self.tech == "pjsip" else "SIP/trunk/${EXTEN}"
        report = ",".join(
            f"{key}: ${{{variable}}}"
            for key, variable in [
                ("Tag", "TAG"),
                ("Status", "ICM_STATUS"),
                ("Manager", "ICM_MANAGER"),
                ("Deputy", "ICM_DEPUTY"),
                ("Source", "ICM_SOURCE"),
                ("DialStatus", "ICM_DIALSTATUS"),
                ("AgiStatus", "AGISTATUS"),
                ("Wait", "ICM_WAIT"),
                ("Reply", "ICM_REPLY"),
                ("Body", "ICM_BODY"),
            ]
        )
        return f"""[general]
static = yes
writeprotect = yes
autofallthrough = yes

[globals]

; The project's shipped dialplan, unchanged.
#include "{SHIPPED / "extensions_icm.conf"}"

; The test's scenario. The dialled number picks the entry: 1... AMI, 2... FastAGI,
; 3... HTTP/CURL. Headers of the caller's INVITE steer the test: X-Tag names the call,
; X-CID64 (base64) replaces the caller ID (any bytes: the shipped contexts see it as if
; the operator had delivered it), X-Number is the number passed to the entry,
; X-After: a device the scenario dials after ICM (is the channel still alive?).
[from-trunk]
{entries}
; 5...: no ICM, the scenario only dials X-After with the X-Timeout it says.
exten => _5X.,1,Gosub(icm-test,s,1)
 same => n,Dial(${{AFTER}},${{DIALTIMEOUT}},g)
 same => n,UserEvent(TestAfter,Tag: ${{TAG}},DialStatus: ${{DIALSTATUS}})
 same => n,Hangup()
exten => _4X.,1,Gosub(icm-test,s,1)
 same => n,Set(TIMEOUT(absolute)=30)
 same => n,Gosub(icm-agi,6100,1(${{ARGNUM}}))
 same => n,UserEvent(TestTimeout,Tag: ${{TAG}},Remaining: ${{TIMEOUT(absolute)}})
 same => n,Goto(icm-test-after,s,1)

[icm-test]
exten => s,1,Set(TAG=${{FILTER(0-9a-zA-Z_,{self._header("X-Tag")})}})
 same => n,Set(CID64={self._header("X-CID64")})
 same => n,GotoIf($[${{LEN(${{CID64}})}} = 0]?number)
 same => n,Set(CALLERID(num)=${{BASE64_DECODE(${{CID64}})}})
 same => n(number),Set(ARGNUM=${{FILTER(0-9+,{self._header("X-Number")})}})
 same => n,Set(AFTER=${{FILTER(A-Z0-9/,{self._header("X-After")})}})
 same => n,Set(DIALTIMEOUT=${{FILTER(0-9.,{self._header("X-Timeout")})}})
 same => n,Set(ICM_CONTINUE_AFTER_ANSWER=${{FILTER(01,{self._header("X-Continue")})}})
 same => n,Answer()
 same => n,UserEvent(TestStart,Tag: ${{TAG}})
 same => n,Return()

[icm-test-after]
; A caller ID with CR/LF would cut this report's AMI frame (Asterisk writes CallerIDNum
; into every event unescaped): report under a clean one, then put it back.
exten => s,1,Set(CID_SAVED=${{CALLERID(num)}})
 same => n,Set(CALLERID(num)=reported)
 same => n,UserEvent(TestResult,{report})
 same => n,Set(CALLERID(num)=${{CID_SAVED}})
 same => n,GotoIf($[${{LEN(${{AFTER}})}} = 0]?end)
 same => n,Dial(${{AFTER}},10,g)
 same => n,UserEvent(TestAfter,Tag: ${{TAG}},DialStatus: ${{DIALSTATUS}})
 same => n(end),Wait(0.2)
 same => n,Hangup()

; Managers' phones: internal calls and calls out through the operator.
[from-phones]
exten => _1XX,1,Dial({tech}/${{EXTEN}},20)
 same => n,Hangup()
exten => _X.,1,Dial({trunk},20)
 same => n,Hangup()
{hints}

; Calls the observer originates to keep a phone busy.
[hold]
exten => s,1,Answer()
 same => n,Wait(60)
 same => n,Hangup()
"""

    def _sip_conf(self) -> str:
        phones = "\n".join(
            f"[{ext}]\ntype = friend\nhost = 127.0.0.1\nport = {port}\ncontext = from-phones\n"
            for ext, port in self.phone_ports.items()
        )
        return f"""[general]
udpbindaddr = 127.0.0.1:{self.sip_port}
context = refuse
allowguest = no
callcounter = yes
disallow = all
allow = ulaw
directmedia = no
alwaysauthreject = yes

{phones}
[{OFFLINE}]
type = friend
host = dynamic
context = from-phones

[trunk]
type = friend
host = {TRUNK_IP}
port = {self.provider_port}
insecure = port,invite
context = from-trunk
"""

    def _pjsip_conf(self) -> str:
        common = "disallow = all\nallow = ulaw\ndirect_media = no\n"
        phones = "\n".join(
            f"[{ext}]\ntype = endpoint\ncontext = from-phones\n{common}aors = {ext}\n\n"
            f"[{ext}]\ntype = aor\ncontact = sip:{ext}@127.0.0.1:{port}\n"
            for ext, port in self.phone_ports.items()
        )
        return f"""[transport-udp]
type = transport
protocol = udp
bind = 127.0.0.1:{self.sip_port}

{phones}
[{OFFLINE}]
type = endpoint
context = from-phones
{common}aors = {OFFLINE}

[{OFFLINE}]
type = aor
max_contacts = 1

[trunk]
type = endpoint
context = from-trunk
{common}aors = trunk

[trunk]
type = aor
contact = sip:{TRUNK_IP}:{self.provider_port}

[trunk]
type = identify
endpoint = trunk
match = {TRUNK_IP}
"""

    # life cycle
    def _asterisk(self, *args: str) -> list[str]:
        return [str(PREFIX / "sbin" / "asterisk"), "-C", str(self.etc / "asterisk.conf"), *args]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "LD_LIBRARY_PATH": str(PREFIX / "lib")}

    def start(self, timeout: float = 60.0) -> None:
        self.write_config()
        log = (self.run / "log" / "console.log").open("ab")
        self.process = subprocess.Popen(
            self._asterisk("-f", "-n", "-g"),
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(
            lambda: self.process.poll() is not None or (self.run / "run" / "asterisk.ctl").exists(),
            timeout,
            "Asterisk's control socket",
        )
        assert self.process.poll() is None, f"Asterisk exited: {self.logs()[-2000:]}"
        out = self.cli("core waitfullybooted", timeout=timeout)
        assert "fully booted" in out.lower(), out
        self.observer = Ami(self.ami_port)
        self.observer.connect()

    def cli(self, command: str, timeout: float = 20.0) -> str:
        result = subprocess.run(
            self._asterisk("-rx", command),
            env=self._env(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return result.stdout.decode("utf-8", "replace")

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.close()
            self.observer = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        with contextlib.suppress(FileNotFoundError):
            (self.run / "run" / "asterisk.ctl").unlink()

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self) -> str:
        text = ""
        for name in ("messages", "console.log"):
            path = self.run / "log" / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    @property
    def ami(self) -> Ami:
        assert self.observer is not None
        return self.observer

    def device_state(self, ext: str) -> str:
        answer = self.ami.action("Getvar", Variable=f"DEVICE_STATE({self.device(ext)})")
        return answer.get("value", "")


# -- SIPp --------------------------------------------------------------------------------

_SDP = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""


def _msg(text: str, **attrs: str) -> str:
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f"<send{extra}><![CDATA[\n{text}\n]]></send>\n"


_OK_LAST = """SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
"""


def phone_scenario(behaviour: str, ring_ms: int = 200, talk_ms: int = 0) -> str:
    """A UAS: ``answer`` (talks until the other side hangs up, or hangs up itself after
    ``talk_ms``), ``busy`` (486) or ``ring`` (rings until cancelled)."""
    # SIPp refuses variables it never uses: capture only what the behaviour needs.
    captures = {
        "remote": '<ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote"/>',
        "local": '<ereg regexp=".*" search_in="hdr" header="To:" assign_to="local"/>',
        "cseq": '<ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="cseq"/>',
    }
    needed = {"ring": ["cseq"], "answer": ["remote", "local", "cseq"] if talk_ms else []}
    wanted = needed.get(behaviour, [])
    head = '<recv request="INVITE" crlf="true" rrs="true">\n'
    if wanted:
        head += "<action>\n" + "\n".join(captures[name] for name in wanted) + "\n</action>\n"
    head += "</recv>\n"
    ringing = _msg(
        """SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]T[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0
"""
    )
    if behaviour == "busy":
        body = (
            head
            + _msg(
                """SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]T[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
"""
            )
            + '<recv request="ACK"/>\n'
        )
    elif behaviour == "ring":
        body = (
            head
            + ringing
            + '<recv request="CANCEL"/>\n'
            + _msg(_OK_LAST)
            + _msg(
                """SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]T[call_number]
[last_Call-ID:]
CSeq: [$cseq] INVITE
Content-Length: 0
"""
            )
            + '<recv request="ACK"/>\n'
        )
    else:
        answered = _msg(
            """SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]T[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

"""
            + _SDP,
            retrans="500",
        )
        body = head + ringing + f'<pause milliseconds="{ring_ms}"/>\n' + answered
        body += '<recv request="ACK" crlf="true"/>\n'
        if talk_ms:
            body += (
                f'<recv request="BYE" timeout="{talk_ms}" ontimeout="hangup" next="byed"/>\n'
                '<label id="hangup"/>\n'
                + _msg(
                    """BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: [$local];tag=[pid]T[call_number]
To: [$remote]
[last_Call-ID:]
CSeq: [$cseq]0 BYE
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Max-Forwards: 70
Content-Length: 0
""",
                    retrans="500",
                )
                + '<recv response="200" next="end"/>\n<label id="byed"/>\n'
                + _msg(_OK_LAST)
                + '<label id="end"/>\n'
            )
        else:
            body += '<recv request="BYE"/>\n' + _msg(_OK_LAST)
    return _scenario(body)


def caller_scenario(
    *,
    from_user: str,
    headers: dict[str, str],
    hold_ms: int,
) -> str:
    """A UAC: INVITE (with ``headers``), answered, then waits for Asterisk's BYE at most
    ``hold_ms`` before hanging up itself."""
    extra = "".join(f"{escape(k)}: {escape(v)}\n" for k, v in headers.items())
    invite = _msg(
        f"""INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{escape(from_user)}@[local_ip]:[local_port]>;tag=[pid]C[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:{escape(from_user)}@[local_ip]:[local_port]>
Max-Forwards: 70
{extra}Content-Type: application/sdp
Content-Length: [len]

"""
        + _SDP,
        retrans="500",
    )
    body = (
        invite
        + '<recv response="100" optional="true"/>\n'
        + '<recv response="180" optional="true"/>\n'
        + '<recv response="183" optional="true"/>\n'
        + '<recv response="200" rrs="true"/>\n'
        + _msg(
            """ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
"""
        )
        + f'<recv request="BYE" timeout="{hold_ms}" ontimeout="hangup" next="byed"/>\n'
        + '<label id="hangup"/>\n'
        + _msg(
            """BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0
""",
            retrans="500",
        )
        + '<recv response="200" next="end"/>\n'
        + '<label id="byed"/>\n'
        + _msg(_OK_LAST)
        + '<label id="end"/>\n'
    )
    return _scenario(body)


def _scenario(body: str) -> str:
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        '<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        f'<scenario name="icm-test">\n{body}</scenario>\n'
    )


_sipp_ids = itertools.count(1)


class Sipp:
    """One SIPp process (a phone, or a caller placing one call)."""

    def __init__(self, run: Path, name: str, scenario: str, args: list[str]) -> None:
        self.dir = run / "sipp"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = f"{name}-{next(_sipp_ids)}"
        self.file = self.dir / f"{self.name}.xml"
        self.file.write_text(scenario, encoding="latin-1", errors="replace")
        self.log = self.dir / f"{self.name}.log"
        command = [
            "sipp",
            *args,
            "-sf",
            str(self.file),
            "-nostdin",
            "-cp",
            str(free_udp_block()),
            "-mp",
            str(free_udp_block()),
            "-trace_err",
            "-error_file",
            str(self.dir / f"{self.name}.errors"),
        ]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(3)

    def errors(self) -> str:
        path = self.dir / f"{self.name}.errors"
        return path.read_text(errors="replace") if path.exists() else ""


class Phones:
    """The managers' phones of one test: each a SIPp process on the port Asterisk knows."""

    def __init__(self, pbx: Asterisk, run: Path) -> None:
        self.pbx, self.run = pbx, run
        self.running: dict[str, Sipp] = {}

    def start(self, ext: str, behaviour: str = "answer", **kwargs: int) -> Sipp:
        self.stop(ext)
        port = self.pbx.phone_ports[ext]
        sipp = Sipp(
            self.run,
            f"phone{ext}-{behaviour}",
            phone_scenario(behaviour, **kwargs),
            ["-i", "127.0.0.1", "-p", str(port), "-aa"],
        )
        self.running[ext] = sipp
        time.sleep(0.15)  # let it bind before Asterisk sends it anything
        assert sipp.process.poll() is None, sipp.log.read_text(errors="replace")
        return sipp

    def provider(self, behaviour: str = "answer", **kwargs: int) -> Sipp:
        """The operator's side: answers outbound calls (mobiles, external numbers)."""
        self.stop("trunk")
        sipp = Sipp(
            self.run,
            f"provider-{behaviour}",
            phone_scenario(behaviour, **kwargs),
            ["-i", TRUNK_IP, "-p", str(self.pbx.provider_port), "-aa"],
        )
        self.running["trunk"] = sipp
        time.sleep(0.15)
        return sipp

    def stop(self, ext: str) -> None:
        sipp = self.running.pop(ext, None)
        if sipp is not None:
            sipp.stop()

    def stop_all(self) -> None:
        for ext in list(self.running):
            self.stop(ext)


_tags = itertools.count(1)


def new_tag(prefix: str = "t") -> str:
    return f"{prefix}{os.getpid()}x{next(_tags)}"


@dataclass
class Call:
    tag: str
    sipp: Sipp

    def wait(self, timeout: float = 60.0) -> int:
        return self.sipp.wait(timeout)


def place_call(
    pbx: Asterisk,
    run: Path,
    *,
    entry: str = "ami",
    caller: str = "79161234567",
    cid: str | None = None,
    number: str = "",
    after: str = "",
    continue_after_answer: bool = True,
    dial_timeout: str = "",
    hold_ms: int = 20000,
    dialled: str | None = None,
    tag: str | None = None,
    from_ip: str = TRUNK_IP,
    from_port: int = 0,
) -> Call:
    """A caller from the operator's side (``from_ip``), dialling the scenario's number
    for ``entry``. ``cid`` replaces the caller ID with any bytes (through X-CID64)."""
    tag = tag or new_tag()
    headers = {"X-Tag": tag}
    if cid is not None:
        headers["X-CID64"] = base64.b64encode(cid.encode("utf-8")).decode()
    if number:
        headers["X-Number"] = number
    if after:
        headers["X-After"] = after
    headers["X-Continue"] = "1" if continue_after_answer else "0"
    if dial_timeout:
        headers["X-Timeout"] = dial_timeout
    service = dialled or f"{ENTRIES[entry][0]}000"
    sipp = Sipp(
        run,
        f"call-{tag}",
        caller_scenario(from_user=caller, headers=headers, hold_ms=hold_ms),
        [
            f"127.0.0.1:{pbx.sip_port}",
            "-i",
            from_ip,
            "-p",
            str(from_port),
            "-s",
            service,
            "-m",
            "1",
            "-aa",
            "-timeout",
            "120",
            "-timeout_error",
        ],
    )
    return Call(tag, sipp)


# -- ICM --------------------------------------------------------------------------------


MANAGERS = """[managers.101]
name = "Anna"
[managers.102]
name = "Boris"
[managers.103]
name = "Vera"
[managers.104]
name = "Gleb"
mobiles = ["+79160000104"]
[managers.105]
name = "Dina"
[managers.106]
name = "Egor"
[managers.109]
name = "Offline Oleg"
"""


def icm_command() -> list[str]:
    """The venv's ``icm`` (beside this Python), else ``python -m icm``."""
    script = Path(sys.executable).with_name("icm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "icm"]


class Icm:
    """``icm run -c FILE`` against ``pbx``, with [http] and [agi] on free ports."""

    def __init__(
        self,
        pbx: Asterisk,
        run: Path,
        name: str = "icm",
        *,
        routing: str = "",
        extra: str = "",
        store: str | None = None,
        budget_ms: int = 1500,
        environ: dict[str, str] | None = None,
        dial: str | None = None,
        managers: str | None = None,
    ) -> None:
        """:param dial: a [dial] section instead of the one that suits ``pbx``.
        :param managers: [managers.<ext>] sections instead of the usual ones."""
        self.pbx, self.run, self.name = pbx, run, name
        self.http_port = free_port()
        self.agi_port = free_port()
        self.config = run / f"{name}.toml"
        self.log = run / f"{name}.log"
        self.store = store or str(run / f"{name}.db")
        self.environ = environ or {}
        self.config.write_text(
            f"""[ami]
host = "127.0.0.1"
port = {pbx.ami_port}
keepalive_s = 1.0
keepalive_timeout_s = 2.0
reconnect_max_s = 1.0
connect_timeout_s = 2.0

[routing]
area_code = "495"
lookup_budget_ms = {budget_ms}
dial_timeout_s = 3
{routing}

{MANAGERS if managers is None else managers}
[sources.icmdb]
min_talk_s = 0.5

[store]
url = "{self.store}"

[http]
listen = "127.0.0.1:{self.http_port}"

[agi]
enabled = true
listen = "127.0.0.1:{self.agi_port}"

[log]
level = "debug"

{pbx.dial_section if dial is None else dial}
{extra}
""",
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "ICM_AMI_SECRET": ICM_SECRET, **self.environ}

    def start(self, wait: bool = True) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*icm_command(), "run", "-c", str(self.config)],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Logged in, presence resynchronised, and Asterisk's globals point here."""
        wait_until(lambda: self.resyncs() > 0 or self._dead(), timeout, f"{self.name} to log in")
        assert not self._dead(), self.logs()[-3000:]
        url = f"agi://127.0.0.1:{self.agi_port}/route"
        wait_until(lambda: self.pbx.ami.getvar("ICM_AGI_URL") == url, 10, "ICM_AGI_URL")

    def republish(self) -> None:
        """Make Asterisk's globals point at this daemon again (a reload publishes them)."""
        url = f"agi://127.0.0.1:{self.agi_port}/route"
        if self.pbx.ami.getvar("ICM_AGI_URL") != url:
            self.signal(signal.SIGHUP)
            wait_until(lambda: self.pbx.ami.getvar("ICM_AGI_URL") == url, 10, "ICM_AGI_URL")

    def _dead(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def resyncs(self) -> int:
        return self.logs().count("presence resynchronised")

    def readiness(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))

    def readyz(self) -> int:
        try:
            url = f"http://127.0.0.1:{self.http_port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*icm_command(), *args, "-c", str(self.config)],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def bind(self, number: str, ext: str) -> None:
        result = self.cli("bind", number, ext)
        assert result.returncode == 0, result.stderr

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def metric(self, name: str, **labels: str) -> float:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        total = 0.0
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample.split("{")[0] == name and all(w in sample for w in wanted):
                total += float(value)
        return total


def result_of(pbx: Asterisk, call: Call, timeout: float = 30.0, mark: int = 0) -> Event:
    """The TestResult the scenario raised for ``call``."""
    return pbx.ami.wait(
        lambda e: (
            e.name == "UserEvent"
            and e.get("userevent") == "TestResult"
            and e.get("tag") == call.tag
        ),
        timeout,
        mark,
        what=f"TestResult of {call.tag}",
    )


def start_of(pbx: Asterisk, call: Call, timeout: float = 30.0, mark: int = 0) -> Event:
    return pbx.ami.wait(
        lambda e: (
            e.name == "UserEvent" and e.get("userevent") == "TestStart" and e.get("tag") == call.tag
        ),
        timeout,
        mark,
        what=f"TestStart of {call.tag}",
    )


@contextlib.contextmanager
def stopped(process: Icm) -> Iterator[None]:
    """The daemon alive but not answering (SIGSTOP) for the block."""
    process.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.signal(signal.SIGCONT)
