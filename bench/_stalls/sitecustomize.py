"""Where a request waits behind other work: the event-loop callbacks that held the loop.

Loaded by Python at start-up when this folder is on ``PYTHONPATH`` (realpbx_load.py
``--stalls FILE`` puts it there for ``icm run`` only). Every callback the loop runs is
timed; those over 2 ms are counted by what ran (a task's coroutine, or a transport's
method), with their total and longest time. Every 2 s the counts go to FILE (JSON:
``hist_ms`` every callback by whole milliseconds, ``slow`` name -> [count, total_ms,
max_ms]). Production code is untouched; the cost is one clock read per callback.
"""

from __future__ import annotations

import os
import sys

_OUT = os.environ.get("ICM_STALLS_OUT", "")

if _OUT and sys.argv and os.path.basename(sys.argv[0]) == "icm":
    import asyncio.events
    import collections
    import json
    import threading
    import time

    _SLOW_S = 0.002
    _run = asyncio.events.Handle._run
    _hist: collections.Counter[int] = collections.Counter()
    _slow: dict[str, list[float]] = {}

    def _name(handle: asyncio.events.Handle) -> str:
        callback = handle._callback  # type: ignore[attr-defined]
        owner = getattr(callback, "__self__", None)
        if owner is not None and hasattr(owner, "get_coro"):
            return str(owner.get_coro().__qualname__)
        if owner is not None:
            return f"{type(owner).__name__}.{getattr(callback, '__name__', '?')}"
        return str(getattr(callback, "__qualname__", repr(callback)))

    def _timed(self: asyncio.events.Handle) -> None:
        start = time.perf_counter()
        _run(self)
        took = time.perf_counter() - start
        _hist[min(int(took * 1000), 50)] += 1
        if took > _SLOW_S:
            entry = _slow.setdefault(_name(self), [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += took * 1000
            entry[2] = max(entry[2], took * 1000)

    def _dump() -> None:
        while True:
            time.sleep(2)
            counts = {"hist_ms": dict(sorted(_hist.items())), "slow": dict(_slow)}
            with open(_OUT, "w", encoding="utf-8") as out:
                json.dump(counts, out, indent=1)

    asyncio.events.Handle._run = _timed  # type: ignore[method-assign]
    threading.Thread(target=_dump, name="stalls", daemon=True).start()
