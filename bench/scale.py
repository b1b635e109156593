"""Two ICM instances on one Redis and one (simulated) Asterisk: 1,000 routing requests for
learned numbers. Every instance receives every request; per-call claims in Redis decide
which one answers. Measured from the ICMRoute UserEvent written by the AMI server to the
(single) Setvar arriving back, in two shapes:

* burst: the 1,000 requests written at once (1,000 calls waiting at the same moment);
* paced: the same 1,000 spread over one second.

Also: answers per call (must be exactly 1), claims won per instance, RSS per instance.
The daemons are separate processes (`icm run`); redis-server is started on a free port.

    python bench/scale.py [--requests 1000] [--instances 2]

Last line: {"p50_ms", "p99_ms" (paced), "burst_p50_ms", "burst_p99_ms", "answers_per_call",
"rss_mb" (the larger instance), ...}. Targets: p99 <= 5 ms on a learned number,
exactly 1 answer per call, RSS <= 100 MB per instance.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    Answers,
    attach_py_spy,
    free_port,
    report,
    rss_mb,
    scrape,
    start_daemon,
    start_pbx,
    summary,
    write_config,
)

from icm.store.redis import RedisStore
from simpbx.redis_server import RedisServer, available


async def run(requests: int, instances: int, profile: str | None = None) -> dict[str, object]:
    pbx = await start_pbx()
    answers = Answers(pbx, per_token=True)
    latencies = answers.answered
    with tempfile.TemporaryDirectory(prefix="icm-scale-") as tmp_name:
        tmp = Path(tmp_name)
        redis = RedisServer(tmp)
        daemons: list[subprocess.Popen[bytes]] = []
        ports: list[int] = []
        try:
            redis.start()
            url = redis.url
            store = RedisStore(url)
            await store.open()
            numbers = [f"+7916{i:07d}" for i in range(2 * requests)]
            await store.learn_many(
                [(n, str(100 + i % 100), time.time(), "") for i, n in enumerate(numbers)]
            )
            await store.close()
            for i in range(instances):
                ports.append(free_port())
                home = tmp / f"i{i}"
                home.mkdir()
                config = write_config(home, pbx.port, http_port=ports[-1], store=url)
                daemons.append(start_daemon(config, tmp / f"i{i}.log"))
            await pbx.ami.wait_login(instances, timeout=30)
            await asyncio.sleep(1.0)

            async def wave(offset: int, spread_s: float) -> list[float]:
                tokens = []
                loop = asyncio.get_running_loop()
                start = loop.time()
                for i in range(requests):
                    token = f"{offset + i + 1:012d}"
                    tokens.append(token)
                    answers.send(token, pbx.route_request(numbers[offset + i], token))
                    if spread_s:
                        await asyncio.sleep(
                            max(0.0, start + spread_s * (i + 1) / requests - loop.time())
                        )
                deadline = loop.time() + 10
                while (
                    len([t for t in tokens if t in latencies]) < requests and loop.time() < deadline
                ):
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.5)  # any second answer would arrive by now
                return [latencies[t] for t in tokens if t in latencies]

            spy = attach_py_spy(daemons[0].pid, profile) if profile else None
            burst = await wave(0, 0.0)
            paced = await wave(requests, 1.0)
            won = []
            for port in ports:
                metrics = await scrape(port)
                won.append(
                    int(
                        sum(
                            v
                            for k, v in metrics.items()
                            if k.startswith("icm_claims_total")
                            and 'kind="route"' in k
                            and 'result="won"' in k
                        )
                    )
                )
            memory = [round(rss_mb(d.pid), 1) for d in daemons]
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on ^C
                spy.wait(30)
        finally:
            for daemon in daemons:
                daemon.terminate()
            for daemon in daemons:
                daemon.wait(10)
            redis.stop()
            await pbx.stop()
    assert answers.per_token is not None
    per_call = {answers.per_token[f"{i + 1:012d}"] for i in range(2 * requests)}
    paced_summary, burst_summary = summary(paced), summary(burst)
    return {
        **paced_summary,
        "burst_p50_ms": burst_summary["p50_ms"],
        "burst_p99_ms": burst_summary["p99_ms"],
        "requests": 2 * requests,
        "answered": len(latencies),
        "answers_per_call": sorted(per_call),
        "claims_won_per_instance": won,
        "instances": instances,
        "rss_mb": max(memory),
        "rss_mb_per_instance": memory,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--profile", help="py-spy the first instance during the waves: FILE")
    args = parser.parse_args()
    if not available():
        report({"error": "redis-server is not installed (apt install redis-server)"})
        sys.exit(1)
    report(asyncio.run(run(args.requests, args.instances, args.profile)))
