"""The HTTP side under abuse, against `icm run` under `ulimit -n 1024`, while the AMI entry
routes calls at a steady rate (issue 13): what a hostile local user can do to the daemon.

Probes, one after the other:
  idle    1,100 sockets each sending half a request and holding on (more than the
          descriptor limit), for 12 s: are they cut off, does AMI keep routing?
  flood   10,000 /route requests at once: is every answer sent within the lookup
          budget (else none at all), does AMI keep routing?
  forged  /route with forged Host headers (evil.example, 127.0.0.1.nip.io) for 5 s:
          is any answered?

For each: the AMI entry's p99 during the probe, the daemon's RSS and open descriptors
before and after. ``answers_after_budget``: answers the daemon sent later than the
budget after their request reached it (its icm_decision_seconds histogram; must be 0).
``flood_answers_late_seen_by_client``: /route answers that reached the flood client more
than the budget after its connection was made; it includes the client's own delays
(``flood_client_loop_lag_max_ms``) and the kernel's (handshakes retried when the listen
queue overflows), which the daemon cannot see.

    python bench/abuse.py [--flood 10000] [--idle 1100]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    SECRET,
    Answers,
    free_port,
    open_fds,
    percentile,
    report,
    rss_mb,
    scrape,
    start_pbx,
    tempdir,
    write_config,
)

from icm.store import SqliteStore

LEARNED = "+79161234567"
BUDGET_S = 1.5  # write_config's lookup budget
DAEMON_NOFILE = 1024  # the probe's ulimit -n
AMI_RATE = 50  # AMI routing requests per second, all along


def start_limited_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (DAEMON_NOFILE, DAEMON_NOFILE))

    import os

    return subprocess.Popen(
        [sys.executable, "-m", "icm", "run", "-c", str(config)],
        env={**os.environ, "ICM_BENCH_SECRET": SECRET},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=config.parent,
        preexec_fn=limit,
    )


class Exchange(asyncio.Protocol):
    """One HTTP request on its own connection: when the connection was made, when the
    answer came, what it said."""

    def __init__(self, request: bytes, done: asyncio.Future[None]) -> None:
        self.request = request
        self.done = done
        self.made = 0.0
        self.answered = 0.0
        self.data = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = time.monotonic()
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.data:
            self.answered = time.monotonic()
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    @property
    def status(self) -> str:
        head, _, body = bytes(self.data).partition(b"\r\n\r\n")
        if not head:
            return "closed"
        code = head.split(b" ", 2)[1].decode() if b" " in head else "?"
        return body.partition(b"|")[0].decode() or code if code == "200" else code


async def exchange(port: int, request: bytes) -> Exchange:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    protocol = Exchange(request, done)
    try:
        await loop.create_connection(lambda: protocol, "127.0.0.1", port)
        async with asyncio.timeout(30):
            await done
    except (OSError, TimeoutError):
        pass
    return protocol


def route_request(number: str, host: str) -> bytes:
    return (
        f"GET /route?number={number} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ).encode()


class AmiLoad:
    """AMI routing requests at AMI_RATE, all along; latencies kept per probe."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        pbx = self.answers.pbx
        while True:
            self.sent += 1
            token = f"{self.sent:012d}"
            self.answers.send(token, pbx.route_request("89161234567", token))
            await asyncio.sleep(1 / AMI_RATE)

    async def during(self, probe: Callable[[], Awaitable[dict[str, object]]]) -> dict[str, object]:
        first = len(self.answers.latencies)
        sent = self.sent
        result = await probe()
        await asyncio.sleep(BUDGET_S)  # the last requests' answers
        latencies = self.answers.latencies[first:]
        return {
            **result,
            "ami_requests": self.sent - sent,
            "ami_answered": len(latencies),
            "ami_p99_ms": round(percentile(latencies, 0.99), 1),
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def idle_probe(port: int, sockets: int, hold_s: float) -> dict[str, object]:
    held: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    refused = 0
    for _ in range(sockets):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            refused += 1
            continue
        writer.write(b"GET /route?number=8916 HTTP/1.1\r\nHost: 127.0.0.1")
        held.append(writer)
        readers.append(reader)
    await asyncio.sleep(hold_s)
    closed = sum(1 for reader in readers if reader.at_eof() or reader.exception() is not None)
    for reader in readers:  # a reset connection shows only when read
        if not reader.at_eof():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.001):
                    if await reader.read(1) == b"":
                        closed += 1
    for writer in held:
        writer.transport.abort()
    return {"idle_sockets": sockets, "idle_refused_at_connect": refused, "idle_closed": closed}


async def flood_client(port: int, requests: int) -> dict[str, object]:
    """The flood, in a process of its own (its loop's delays are not the AMI load's):
    every request on its own connection at once."""
    lag = 0.0

    async def ticker() -> None:
        nonlocal lag
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            lag = max(lag, loop.time() - before - 0.01)

    watch = asyncio.create_task(ticker())
    numbers = [f"8916{n % 10_000_000:07d}" for n in range(requests)]
    done = await asyncio.gather(
        *(exchange(port, route_request(number, f"127.0.0.1:{port}")) for number in numbers)
    )
    watch.cancel()
    statuses: dict[str, int] = {}
    late = 0
    for item in done:
        statuses[item.status] = statuses.get(item.status, 0) + 1
        if item.answered and item.answered - item.made > BUDGET_S:
            late += 1
    answered = [x.answered - x.made for x in done if x.answered]
    return {
        "requests": requests,
        "statuses": statuses,
        "answer_p99_ms": round(percentile(answered, 0.99) * 1000, 1),
        "answers_late_seen_by_client": late,
        "client_loop_lag_max_ms": round(lag * 1000, 1),
    }


async def flood_probe(port: int, requests: int) -> dict[str, object]:
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--flood-client",
        str(port),
        "--flood",
        str(requests),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await client.communicate()
    return json.loads(out.decode().strip().splitlines()[-1])


def late_answers(metrics: dict[str, float]) -> int:
    """Answers the daemon sent later than the budget after their request arrived (its
    decision_seconds histogram, all entries)."""
    total = metrics.get("icm_decision_seconds_count", 0.0)
    in_time = metrics.get(f'icm_decision_seconds_bucket{{le="{BUDGET_S}"}}', total)
    return int(total - in_time)


async def forged_probe(port: int, seconds: float) -> dict[str, object]:
    hosts = ["evil.example", "127.0.0.1.nip.io", f"evil.example:{port}"]
    sent = answered = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = [
            exchange(port, route_request("89161234567", hosts[i % len(hosts)])) for i in range(50)
        ]
        for item in await asyncio.gather(*batch):
            sent += 1
            answered += item.status not in ("421", "closed")
    return {"forged_requests": sent, "forged_answered": answered}


async def main(flood: int, idle: int) -> dict[str, object]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the bench's own sockets
    pbx = await start_pbx("101")
    answers = Answers(pbx)
    result: dict[str, object] = {}
    with tempdir() as tmp:
        store = SqliteStore(Path(tmp) / "icm.db")
        await store.open()
        await store.learn(LEARNED, "101", time.time())
        await store.close()
        port = free_port()
        config = write_config(Path(tmp), pbx.port, http_port=port)
        daemon = start_limited_daemon(config, Path(tmp) / "daemon.log")
        load = AmiLoad(answers)
        try:
            await pbx.ami.wait_login(1, timeout=20)
            await asyncio.sleep(1.0)  # presence resync
            load.start()
            result["baseline"] = await load.during(lambda: asyncio.sleep(3, {}))
            for name, probe in (
                ("idle", lambda: idle_probe(port, idle, 12.0)),
                ("flood", lambda: flood_probe(port, flood)),
                ("forged", lambda: forged_probe(port, 5.0)),
            ):
                before = {"rss_mb_before": rss_mb(daemon.pid), "fds_before": open_fds(daemon.pid)}
                outcome = await load.during(probe)
                await asyncio.sleep(1.0)
                after = {"rss_mb_after": rss_mb(daemon.pid), "fds_after": open_fds(daemon.pid)}
                result[name] = {**before, **outcome, **after}
            await load.stop()
            metrics = await scrape(port)
            log = (Path(tmp) / "daemon.log").read_text(errors="replace")
        finally:
            await load.stop()
            daemon.terminate()
            daemon.wait(10)
            await pbx.stop()
    flat: dict[str, object] = {}
    for probe, values in result.items():
        for key, value in values.items():  # type: ignore[attr-defined]
            flat[f"{probe}_{key}"] = round(value, 1) if isinstance(value, float) else value
    flat["answers_after_budget"] = late_answers(metrics)
    flat["late_dropped_by_daemon"] = int(metrics.get('icm_answers_dropped_total{reason="late"}', 0))
    flat["daemon_log_lines"] = len(log.splitlines())
    flat["daemon_log_tracebacks"] = log.count("Traceback")
    flat["daemon_nofile"] = DAEMON_NOFILE
    return flat


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=10_000)
    parser.add_argument("--idle", type=int, default=1_100)
    parser.add_argument("--flood-client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood_client:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        report(asyncio.run(flood_client(args.flood_client, args.flood)))
    else:
        report(asyncio.run(main(args.flood, args.idle)))
