"""Real-PBX load: the round trip of ``Gosub(icm,6100,1)`` on a real Asterisk under load.

One Asterisk (``tests/realpbx/pbx.py``: chan_sip or PJSIP, the shipped
``extensions_icm.conf`` and ``manager_icm.conf`` unchanged), SIPp callers from the
operator's side at ``--rates`` calls/s, each a distinct caller number (``-inf`` CSV), half
of them learned earlier (so ICM dials their manager, who answers in 0.2 s and talks
``--talk-s``), the other half unknown (NOTFOUND: the scenario keeps them ``--talk-s``
too). 200 managers, on four answering SIPp phones, so no manager is ever busy.

The scenario raises ``UserEvent(LoadStart)`` just before ``Gosub(icm,6100,1)`` and
``UserEvent(LoadEnd)`` right after it; a call ICM dials ends its wait at its
``DialBegin``. The round trip is from LoadStart to whichever comes first, read from the
events' ``Timestamp`` (``timestampevents = yes``): Asterisk's own clock. An observer AMI
user with an event filter collects them.

Runs, in order: the minimal responder (a tiny asyncio AMI client in its own process, this
file with ``--responder``, that answers every ``ICMRoute`` at once with the
``Setvar ICM_REPLY`` the dialplan expects: the same DIAL for the same learned callers,
NOTFOUND for the others, and nothing else) at each rate; then ``icm run`` (SQLite,
learning on) through the AMI entry at each rate; then the FastAGI and HTTP/CURL entries
(``Gosub(icm-agi,6100,1)``, ``Gosub(icm-curl,6100,1)``) at the highest rate.

    .venv/bin/python bench/realpbx_load.py                 # ~80 s: 6 s of calls a run
    .venv/bin/python bench/realpbx_load.py --seconds 30 --repeat 3 --tech pjsip
    .venv/bin/python bench/realpbx_load.py --rates 60 --entries ami --profile /tmp/icm.txt
    .venv/bin/python bench/realpbx_load.py --rates 60 --entries agi --stalls /tmp/stalls.json

Skips with one line when there is no Asterisk at ``ICM_ASTERISK`` (default /opt/asterisk)
or no sipp.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MANAGERS = 200  # 201..400: a manager gets a call every 6.7 s at 60 calls/s, half dialled
PHONE_PROCESSES = 4
ENTRY_CONTEXTS = {"ami": "icm", "agi": "icm-agi", "curl": "icm-curl"}
SERVICES = {"ami": "81000", "agi": "82000", "curl": "83000"}
OBSERVER = "loadobs"
DIAL_TIMEOUT_S = 3  # the harness's [routing] dial_timeout_s, which the responder echoes
FIRST_CALLER = 74952000000  # caller i calls from FIRST_CALLER + i


def manager_of(number: str) -> str | None:
    """The manager who learned caller ``number`` earlier: every other caller, in turn."""
    try:
        index = int(number) - FIRST_CALLER
    except ValueError:
        return None
    if index < 0 or index % 2:
        return None
    return str(201 + (index // 2) % MANAGERS)


# -- the minimal responder (its own process) -------------------------------------------


def minimal_reply(token: str, number: str, technology: str) -> str:
    """What ICM answers for this caller, made at once: DIAL his manager, or NOTFOUND."""
    ext = manager_of(number)
    if ext:
        return f"{token}|DIAL|{technology}/{ext}|{ext}|icmdb|{DIAL_TIMEOUT_S}"
    return f"{token}|NOTFOUND||||{DIAL_TIMEOUT_S}"


def _fields(frame: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in frame.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(": ")
        fields.setdefault(key.lower(), value)
    return fields


async def respond(port: int, secret: str, technology: str) -> None:
    """The minimal responder: answers every request at once and does nothing else. AMI:
    each ICMRoute UserEvent gets its ``Setvar ICM_REPLY``; FastAGI: ``SET VARIABLE
    ICM_REPLY``, then close; HTTP: the one-line body of ``/route``. It prints its AGI and
    HTTP ports, then ``ready``."""

    async def agi(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            env = _fields(await reader.readuntil(b"\n\n"))
            reply = minimal_reply(
                env.get("agi_arg_1", ""),
                env.get("agi_arg_2") or env.get("agi_callerid", ""),
                technology,
            )
            writer.write(f'SET VARIABLE ICM_REPLY "{reply}"\n'.encode())
            await reader.readline()  # 200 result=1
        writer.close()

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            query = dict(item.partition("=")[::2] for item in target.partition("?")[2].split("&"))
            # /route answers the reply's fields without the token
            body = minimal_reply("", query.get("number", ""), technology)[1:].encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        writer.close()

    agi_server = await asyncio.start_server(agi, "127.0.0.1", 0)
    http_server = await asyncio.start_server(http, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()  # the banner
    writer.write(f"Action: Login\r\nUsername: icm\r\nSecret: {secret}\r\n\r\n".encode())
    login = await reader.readuntil(b"\r\n\r\n")
    if b"Success" not in login:
        raise SystemExit(f"responder: login refused: {login!r}")
    for server in (agi_server, http_server):
        print(server.sockets[0].getsockname()[1], flush=True)
    print("ready", flush=True)
    sent = 0
    while True:
        frame = await reader.readuntil(b"\r\n\r\n")
        if b"UserEvent: ICMRoute\r\n" not in frame:
            continue
        fields = _fields(frame)
        number = fields.get("icmnumber") or fields.get("calleridnum", "")
        reply = minimal_reply(fields.get("icmtoken", ""), number, technology)
        sent += 1
        writer.write(
            f"Action: Setvar\r\nActionID: r{sent}\r\nChannel: {fields.get('channel', '')}\r\n"
            f"Variable: ICM_REPLY\r\nValue: {reply}\r\n\r\n".encode()
        )


# -- the bench ----------------------------------------------------------------------------

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def _pbx_module() -> Any:
    from tests.realpbx import pbx

    return pbx


def cpu_seconds(pid: int) -> float:
    from _harness import cpu_seconds as used

    return float(used(pid))


@dataclass
class Run:
    entry: str  # ami, agi, curl
    responder: bool
    rate: int

    @property
    def name(self) -> str:
        return f"{self.entry}{'-responder' if self.responder else ''}@{self.rate}"


def load_asterisk_class(pbx: Any) -> Any:
    """``pbx.Asterisk`` with the load scenario added to its dialplan and an observer user
    that only sees what the bench reads."""

    @dataclass
    class LoadAsterisk(pbx.Asterisk):  # type: ignore[misc,name-defined]
        talk_s: float = 4.0

        def _extensions_conf(self) -> str:
            base: str = super()._extensions_conf()
            scenario = "".join(
                f"exten => _{SERVICES[entry][:2]}X.,1,Answer()\n"
                " same => n,UserEvent(LoadStart)\n"
                f" same => n,Gosub({context},6100,1)\n"
                " same => n,UserEvent(LoadEnd,Status: ${ICM_STATUS})\n"
                f" same => n,Wait({self.talk_s})\n"
                " same => n,Hangup()\n"
                for entry, context in ENTRY_CONTEXTS.items()
            )
            marker = "[from-trunk]\n"
            assert marker in base
            return base.replace(marker, marker + scenario, 1)

        def _manager_conf(self) -> str:
            base: str = super()._manager_conf()
            return (
                base
                + f"""
[{OBSERVER}]
secret = {pbx.OBSERVER_SECRET}
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = all
write = all
eventfilter = Event: UserEvent
eventfilter = Event: DialBegin
eventfilter = Variable: ICM_REPLY
"""
            )

    return LoadAsterisk


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def analyse(events: list[Any]) -> dict[str, Any]:
    """Round trips (ms, Asterisk's clock) from the observer's events of one run."""
    starts: dict[str, float] = {}
    asked: dict[str, float] = {}
    answered: dict[str, float] = {}  # ICM_REPLY set to an answer (VarSet)
    ends: dict[str, float] = {}
    statuses: dict[str, str] = {}
    dialled = 0
    for event in events:
        uid = event.get("uniqueid", "")
        kind = event.get("userevent", "")
        if event.name == "UserEvent" and kind == "LoadStart":
            starts[uid] = event.time
        elif event.name == "UserEvent" and kind == "ICMRoute":
            asked.setdefault(uid, event.time)
        elif event.name == "VarSet" and event.get("value"):
            answered.setdefault(uid, event.time)
        elif event.name == "UserEvent" and kind == "ICMResult":
            statuses.setdefault(uid, event.get("icmstatus"))
        elif (event.name == "UserEvent" and kind == "LoadEnd") or event.name == "DialBegin":
            if event.name == "DialBegin":
                dialled += 1
            if uid in starts and uid not in ends:
                ends[uid] = event.time
    trips = [(ends[uid] - starts[uid]) * 1000 for uid in starts if uid in ends]
    waits = [(ends[uid] - asked[uid]) * 1000 for uid in asked if uid in ends and uid in starts]
    figures: dict[str, Any] = {
        "calls_answered_by_pbx": len(starts),
        "calls_returned": len(trips),
        "calls_dialled": dialled,
        "p50_ms": round(percentile(trips, 0.50), 1),
        "p90_ms": round(percentile(trips, 0.90), 1),
        "p99_ms": round(percentile(trips, 0.99), 1),
        "max_ms": round(max(trips), 1) if trips else float("nan"),
        "statuses": dict(Counter(statuses.values())),
    }
    if waits:  # AMI entry: from the ICMRoute event to the end of the wait
        figures["event_to_return_p99_ms"] = round(percentile(waits, 0.99), 1)
    # The answer landing in the channel, without the poll: from the ICMRoute event (AMI)
    # or LoadStart (FastAGI, CURL) to the VarSet of ICM_REPLY.
    since = asked or starts
    answers = [(answered[uid] - since[uid]) * 1000 for uid in since if uid in answered]
    figures["answer_p50_ms"] = round(percentile(answers, 0.50), 1)
    figures["answer_p99_ms"] = round(percentile(answers, 0.99), 1)
    return figures


def daemon_times(log: Path, offset: int, entry: str) -> dict[str, float]:
    """The daemon's own time per request (``total_ms`` of its decision log lines: from
    the request read to the answer written and, on AMI and FastAGI, confirmed)."""
    name = {"curl": "http"}.get(entry, entry)
    with log.open("rb") as file:
        file.seek(offset)
        text = file.read().decode("utf-8", "replace")
    found = re.findall(rf"\b{name} call=\S+ .*?total_ms=([0-9.]+)", text)
    times = [float(ms) for ms in found]
    return {
        "daemon_p50_ms": round(percentile(times, 0.50), 1),
        "daemon_p99_ms": round(percentile(times, 0.99), 1),
    }


def sipp_totals(stat_file: Path) -> dict[str, int]:
    """Calls created, successful and failed, from SIPp's ``-trace_stat`` file."""
    if not stat_file.exists():
        return {}
    lines = [line for line in stat_file.read_text(errors="replace").splitlines() if line]
    if len(lines) < 2:
        return {}
    header, last = lines[0].split(";"), lines[-1].split(";")
    row = dict(zip(header, last, strict=False))

    def count(name: str) -> int:
        try:
            return int(row.get(name, "0"))
        except ValueError:
            return 0

    return {
        "created": count("TotalCallCreated"),
        "successful": count("SuccessfulCall(C)"),
        "failed": count("FailedCall(C)"),
    }


class Bench:
    def __init__(self, args: argparse.Namespace, run_dir: Path) -> None:
        self.args = args
        self.dir = run_dir
        self.pbx_mod = _pbx_module()
        self.managers = [str(201 + i) for i in range(MANAGERS)]
        self.next_caller = 0
        self.stack = contextlib.ExitStack()
        self.icm: Any = None
        self.responder: subprocess.Popen[bytes] | None = None
        self.profiler: subprocess.Popen[bytes] | None = None

    # set-up
    def start(self) -> None:
        pbx = self.pbx_mod
        ports = [pbx.free_udp_block() for _ in range(PHONE_PROCESSES)]
        phone_ports = {ext: ports[i % len(ports)] for i, ext in enumerate(self.managers)}
        asterisk_class = load_asterisk_class(pbx)
        self.pbx = asterisk_class(
            self.dir / "asterisk",
            self.args.tech,
            phone_ports=phone_ports,
            talk_s=self.args.talk_s,
        )
        self.pbx.start()
        self.stack.callback(self.pbx.stop)
        # The harness's observer (every right, every event) keeps its actions only.
        self.pbx.ami.action("Events", EventMask="off")
        self.observer = pbx.Ami(self.pbx.ami_port, username=OBSERVER)
        self.observer.connect()
        self.stack.callback(self.observer.close)
        talk_ms = int(self.args.talk_s * 1000)
        for port in ports:
            phone = pbx.Sipp(
                self.dir,
                f"phones-{port}",
                pbx.phone_scenario("answer", ring_ms=200, talk_ms=talk_ms),
                ["-i", "127.0.0.1", "-p", str(port), "-aa"],
            )
            self.stack.callback(phone.stop)
        managers = "".join(f'[managers.{ext}]\nname = "M{ext}"\n' for ext in self.managers)
        environ = {}
        if self.args.stalls:  # bench/_stalls/sitecustomize.py, in icm run only
            environ = {
                "PYTHONPATH": os.pathsep.join(
                    [str(ROOT / "bench" / "_stalls"), os.environ.get("PYTHONPATH", "")]
                ),
                "ICM_STALLS_OUT": str(Path(self.args.stalls).resolve()),
            }
        self.icm = pbx.Icm(self.pbx, self.dir, managers=managers, environ=environ)
        text = self.icm.config.read_text().replace('level = "debug"', 'level = "info"')
        self.icm.config.write_text(text)
        self.stack.callback(self.icm.stop)
        self.stack.callback(self.stop_responder)
        self.stack.callback(self.stop_profiler)

    def callers(self, count: int) -> Path:
        """``count`` new caller numbers (``manager_of`` says who learned which)."""
        numbers = [str(FIRST_CALLER + self.next_caller + i) for i in range(count)]
        self.next_caller += count
        return numbers

    def seed(self, numbers: list[str]) -> None:
        """Write the learned ones of these callers into ICM's store, a day ago."""
        from icm.numbers import Numbers
        from icm.store.sqlite import SqliteStore

        normalise = Numbers("RU", "495").normalise
        at = time.time() - 86400

        async def write() -> None:
            store = SqliteStore(self.icm.store)
            await store.open()
            try:
                rows = [
                    (str(normalise(n)), ext, at, "seeded")
                    for n in numbers
                    if (ext := manager_of(n)) is not None
                ]
                await store.learn_many(rows)
            finally:
                await store.close()

        asyncio.run(write())

    # the two responders
    def start_responder(self) -> None:
        self.responder = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--responder",
                str(self.pbx.ami_port),
                self.pbx.channel_tech,
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self.responder.stdout is not None
        agi_port, http_port, ready = (self.responder.stdout.readline() for _ in range(3))
        assert ready.strip() == b"ready", ready
        # Where the shipped dialplan finds the daemon: ICM publishes its own at login.
        self.pbx.ami.action(
            "Setvar", Variable="ICM_AGI_URL", Value=f"agi://127.0.0.1:{int(agi_port)}/route"
        )
        self.pbx.ami.action(
            "Setvar", Variable="ICM_URL", Value=f"http://127.0.0.1:{int(http_port)}"
        )

    def stop_responder(self) -> None:
        if self.responder is not None and self.responder.poll() is None:
            self.responder.send_signal(signal.SIGTERM)
            self.responder.wait(5)
        self.responder = None

    def start_icm(self) -> None:
        self.icm.start()
        if self.args.profile and self.profiler is None:
            from _harness import attach_py_spy

            assert self.icm.process is not None
            self.profiler = attach_py_spy(self.icm.process.pid, self.args.profile)

    def stop_icm(self) -> None:
        self.icm.stop()
        self.stop_profiler()

    def stop_profiler(self) -> None:
        if self.profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.profiler.wait(20)
            self.profiler = None

    # one run
    def place(self, run: Run, seconds: float) -> dict[str, Any]:
        pbx = self.pbx_mod
        count = max(1, round(run.rate * seconds))
        numbers = self.callers(count)
        csv = self.dir / f"callers-{numbers[0]}.csv"
        csv.write_text("SEQUENTIAL\n" + "".join(f"{n};\n" for n in numbers))
        if not run.responder:
            self.seed(numbers)
        learned_before = self.icm.metric("icm_learned_total") if not run.responder else 0.0
        log_from = self.icm.log.stat().st_size if self.icm.log.exists() else 0
        pid = self.responder.pid if run.responder else self.icm.process.pid
        cpu_from, wall_from = cpu_seconds(pid), time.monotonic()
        mark = self.observer.mark()
        stat = self.dir / f"stat-{run.name}-{self.next_caller}.csv"
        scenario = pbx.caller_scenario(
            from_user="[field0]", headers={}, hold_ms=int((self.args.talk_s + 30) * 1000)
        )
        caller = pbx.Sipp(
            self.dir,
            f"callers-{run.entry}",
            scenario,
            [
                f"127.0.0.1:{self.pbx.sip_port}",
                "-i",
                pbx.TRUNK_IP,
                "-p",
                "0",
                "-s",
                SERVICES[run.entry],
                "-inf",
                str(csv),
                "-r",
                str(run.rate),
                "-m",
                str(count),
                "-l",
                "100000",
                "-aa",
                "-timeout",
                str(int(seconds + self.args.talk_s + 60)),
                "-timeout_error",
                "-trace_stat",
                "-stf",
                str(stat),
                "-fd",
                "1",
            ],
        )
        try:
            caller.wait(seconds + self.args.talk_s + 90)
        except subprocess.TimeoutExpired:
            caller.stop()
        time.sleep(0.3)  # the last events on their way
        cpu = (cpu_seconds(pid) - cpu_from) / (time.monotonic() - wall_from) * 100
        figures = analyse(self.observer.since(mark))
        totals = sipp_totals(stat)
        result: dict[str, Any] = {
            "entry": run.entry,
            "responder": "minimal" if run.responder else "icm",
            "rate_calls_per_s": run.rate,
            "calls_placed": totals.get("created", count),
            "calls_failed_sipp": totals.get("failed", 0),
            **figures,
            "cpu_percent_of_a_core": round(cpu, 1),  # the daemon's (or the responder's)
        }
        if not run.responder:
            expected = figures["statuses"].get("ANSWERED", 0)
            deadline = time.monotonic() + 5
            learned = 0.0
            while time.monotonic() < deadline:
                learned = self.icm.metric("icm_learned_total") - learned_before
                if learned >= expected:
                    break
                time.sleep(0.1)
            result["calls_learned"] = int(learned)
            result.update(daemon_times(self.icm.log, log_from, run.entry))
        return result

    def warm_up(self) -> None:
        """A few calls through the whole path first: the first calls of a cold Asterisk
        (and SIPp) are slower, and would count against whichever run came first."""
        self.start_responder()
        self.place(Run("ami", True, self.args.rates[0]), 1.0)
        self.stop_responder()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="calls placed per run (s)")
    parser.add_argument("--talk-s", type=float, default=4.0, help="length of each conversation")
    parser.add_argument("--tech", choices=["sip", "pjsip"], default="sip")
    parser.add_argument(
        "--rates", default="30,60", help="calls/s, comma-separated (AMI entry and responder)"
    )
    parser.add_argument(
        "--entries",
        default="ami,agi,curl",
        help="ami, agi, curl: comma-separated (each with ICM and the minimal responder)",
    )
    parser.add_argument(
        "--other-rates", default="", help="rates for agi and curl (default: the highest)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="the whole sequence, N times")
    parser.add_argument("--no-responder", action="store_true", help="ICM's runs only")
    parser.add_argument("--profile", default="", help="py-spy the daemon into FILE")
    parser.add_argument(
        "--stalls",
        default="",
        help="record in FILE the daemon's event-loop callbacks over 2 ms (bench/_stalls)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument(
        "--responder", nargs=2, metavar=("AMI_PORT", "TECH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.responder:
        pbx = _pbx_module()
        with contextlib.suppress(KeyboardInterrupt, asyncio.IncompleteReadError):
            asyncio.run(respond(int(args.responder[0]), pbx.ICM_SECRET, args.responder[1]))
        return 0
    pbx = _pbx_module()
    reason = pbx.missing()
    if reason:
        print(json.dumps({"skipped": reason}))
        return 0
    args.rates = [int(r) for r in args.rates.split(",") if r]
    entries = [e for e in args.entries.split(",") if e]
    other_rates = [int(r) for r in args.other_rates.split(",") if r] or [max(args.rates)]
    import tempfile

    from _harness import machine

    tmp = tempfile.mkdtemp(prefix="icm-realload-")
    bench = Bench(args, Path(tmp))
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    load_before = os.getloadavg()
    try:
        bench.start()
        bench.warm_up()
        for _ in range(args.repeat):
            for responder in (True, False):
                if responder and args.no_responder:
                    continue
                runs = [Run("ami", responder, rate) for rate in args.rates if "ami" in entries]
                runs += [
                    Run(entry, responder, rate)
                    for entry in ("agi", "curl")
                    if entry in entries
                    for rate in other_rates
                ]
                if responder:
                    bench.start_responder()
                else:
                    bench.start_icm()
                for run in runs:
                    results.append(bench.place(run, args.seconds))
                    print(json.dumps(results[-1]), file=sys.stderr, flush=True)
                if responder:
                    bench.stop_responder()
                else:
                    bench.stop_icm()
    finally:
        bench.stack.close()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"run directory kept: {tmp}", file=sys.stderr)
    summary: dict[str, Any] = {
        "bench": "realpbx_load",
        "tech": args.tech,
        "seconds_per_run": args.seconds,
        "talk_s": args.talk_s,
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "elapsed_s": round(time.monotonic() - started, 1),
        "runs": results,
    }
    for entry in ENTRY_CONTEXTS:
        for rate in sorted({r["rate_calls_per_s"] for r in results}):
            same = [r for r in results if r["entry"] == entry and r["rate_calls_per_s"] == rate]
            icm = [r["p99_ms"] for r in same if r["responder"] == "icm"]
            minimal = [r["p99_ms"] for r in same if r["responder"] == "minimal"]
            if icm and minimal:  # the median run of each (the machine is shared: noisy)
                key = f"{entry}_p99_over_responder_ms_at_{rate}"
                summary[key] = round(statistics.median(icm) - statistics.median(minimal), 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
