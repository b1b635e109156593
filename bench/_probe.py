"""The daemon exactly as ``icm run -c FILE`` starts it, plus one read-only endpoint for the
soak bench: ``GET /debug/stats`` on the daemon's own HTTP port, with what cannot be seen
from outside the process (its asyncio tasks, how many calls and states it tracks, its
caches). Production code is untouched; open file descriptors and RSS are read from /proc.

    python bench/_probe.py FILE
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import sys

from aiohttp import web

from icm import logs
from icm.config import load
from icm.daemon import Daemon


def main(path: str) -> None:
    config = load(path, os.environ)
    logs.setup(config.log)
    daemon = Daemon(config)

    async def stats(request: web.Request) -> web.Response:
        tasks = asyncio.all_tasks()
        names = collections.Counter(task.get_name().rstrip("0123456789-") for task in tasks)
        learner = daemon.learner
        return web.json_response(
            {
                "tasks": len(tasks),
                "task_names": dict(names),
                "in_flight": daemon.entry.in_flight,
                "tracked_calls": daemon.tracker.tracked(),
                "devices": len(daemon.presence._devices),
                "hints": len(daemon.presence._hints),
                "learner_pending": learner.pending if learner else 0,
                "learner_dropped": learner.dropped if learner else 0,
                "numbers_cached": daemon.snapshot.numbers._cached.cache_info().currsize,
                "gc_objects": len(gc.get_objects()),
            }
        )

    daemon.http.app.router.add_get("/debug/stats", stats)
    asyncio.run(daemon.run())


if __name__ == "__main__":
    main(sys.argv[1])
