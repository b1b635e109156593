"""Bare panoramisk 1.4, for bench/ingest.py: a Manager logged in to the bench's AMI server
with one no-op callback for every event (``*``), counting. Nothing else runs in this
process, so its rate is what panoramisk's parse-and-dispatch path sustains.

    python bench/_panoramisk_sink.py PORT SECRET EVENTS

Prints ``ready`` once logged in, then, when EVENTS events have arrived, one JSON line:
{"marks": {count: monotonic time, ...}} with a mark every 5 % of EVENTS.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from panoramisk import Manager


async def main(port: int, secret: str, events: int) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    step = max(1, events // 20)
    marks: dict[int, float] = {}
    count = 0

    def on_event(manager: Manager, event: object) -> None:
        nonlocal count
        count += 1
        if count % step == 0 or count == events:
            marks[count] = time.monotonic()
        if count >= events:
            done.set()

    manager = Manager(
        loop=loop,
        host="127.0.0.1",
        port=port,
        username="icm",
        secret=secret,
        ping_delay=3600,
        ping_interval=3600,
        reconnect_timeout=3600,
        on_login=lambda manager: print("ready", flush=True),
    )
    manager.register_event("*", on_event)
    await manager.connect()
    await done.wait()
    print(json.dumps({"marks": marks}), flush=True)
    manager.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
