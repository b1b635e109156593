"""``icm demo``: ICM at work with no Asterisk at hand.

A simulated Asterisk (``simpbx``, the one the tests use: AMI byte for byte, the shipped
dialplan run unchanged; not part of the product, the demo extra installs it) holds four
managers' phones. It first plays a few earlier calls for ICM to learn from, then places
sample calls (a known client, an unknown caller, clients whose manager is offline, busy or
not answering, a hidden number) and prints each decision as the daemon makes it, with the
dialplan's outcome. ``/metrics`` is live meanwhile. ``icm demo`` imports this module only
when it runs (icm/cli.py), and says how to install the simulator when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import tempfile
from pathlib import Path

from icm.config import from_dict
from icm.daemon import Daemon
from simpbx.pbx import TEST_SECRET, FakeAsterisk, Phone

MANAGERS = {
    "101": {"name": "Anna (sales)"},
    "102": {"name": "Boris (sales)"},
    "103": {"name": "Vera (support)", "mobiles": ["+7 916 000-00-03"]},
    "104": {"name": "Gleb (support)"},
}
# (caller as the operator delivers it, what the audience should know about it)
SAMPLE_CALLS = [
    ("89161112233", "a client of Anna, who answers"),
    ("+7 903 555-00-00", "a caller nobody knows"),
    ("8 (926) 222-33-44", "a client of Boris, whose phone is offline"),
    ("79263334455", "a client of Vera, who is on another call"),
    ("1234567", "a local number (area code 495 added), client of Gleb, who does not answer"),
    ("anonymous", "a hidden number"),
    ("+7 916 000-00-03", "Vera calling from her own mobile"),
]


def _say(text: str = "") -> None:
    """The demo's narration: for the person at the terminal, not a log line."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def run_demo(*, listen: str = "127.0.0.1:9180", once: bool = False) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    decisions = logging.getLogger("icm.decision")
    decisions.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("   ICM decided: %(message)s"))
    decisions.addHandler(handler)
    decisions.propagate = False

    pbx = FakeAsterisk(tech="PJSIP")  # the shipped dial templates are PJSIP's
    await pbx.start()
    pbx.register("101", "102", "103")
    pbx.register("104", phone=Phone(answer_after=None))
    with tempfile.TemporaryDirectory(prefix="icm-demo-") as tmp:
        config = from_dict(
            {
                "ami": {"port": pbx.port, "secret_env": "ICM_DEMO_SECRET"},
                "routing": {"area_code": "495", "lookup_budget_ms": 1500, "dial_timeout_s": 3},
                "managers": MANAGERS,
                # The simulated conversations last a few tens of milliseconds.
                "sources": {"icmdb": {"min_talk_s": 0.01}},
                "store": {"url": str(Path(tmp) / "icm.db")},
                "http": {"listen": listen},
            },
            "demo",
            {"ICM_DEMO_SECRET": TEST_SECRET},
        )
        daemon = Daemon(config)
        try:
            await daemon.start()
        except OSError as exc:
            _say(f"icm demo: cannot listen on {listen}: {exc.strerror} (try --listen)")
            await pbx.stop()
            return 1
        try:
            await _show(pbx, daemon, listen, once)
        finally:
            await daemon.stop()
            await pbx.stop()
    return 0


async def _show(pbx: FakeAsterisk, daemon: Daemon, listen: str, once: bool) -> None:
    _say(f"ICM demo: a simulated Asterisk on 127.0.0.1:{pbx.port} runs the shipped dialplan.")
    where = f"{listen.rpartition(':')[0]}:{daemon.http.port}"
    _say(f"Metrics: http://{where}/metrics   readiness: http://{where}/readyz")
    await daemon.ami.wait_logged_in(10)
    _say("\nEarlier calls ICM learns from (nobody asks ICM; it watches):")
    for extension, number in [
        ("101", "89161112233"),
        ("102", "89262223344"),
        ("103", "89263334455"),
    ]:
        await pbx.outbound(extension, number, talk=0.05)
        _say(f"   manager {extension} called {number} and talked")
    await pbx.transfer_call("84951234567", "101", "104", talk=0.05)
    _say("   74951234567 talked with 101, who transferred the call to 104")
    await asyncio.sleep(0.2)  # let the learner write
    pbx.set_device(pbx.device("102"), "UNAVAILABLE")
    pbx.set_device(pbx.device("103"), "INUSE")
    _say("\nNow Boris (102) unplugs his phone and Vera (103) takes another call.")
    _say("\nSample calls:")
    for number, what in SAMPLE_CALLS:
        await _place(pbx, number, what)
    if once:
        return
    _say("\nPlacing a random sample call every 5 s; Ctrl+C to stop.")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(2, stop.set)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5)
        if not stop.is_set():
            await _place(pbx, *random.choice(SAMPLE_CALLS))


async def _place(pbx: FakeAsterisk, number: str, what: str) -> None:
    _say(f"\n-> call from {number!r}: {what}")
    call = await pbx.call(number)
    reached = ", then ".join(app for app, _ in call.reached) or "nothing more"
    manager = call.variables.get("ICM_MANAGER") or "-"
    dialled = call.variables.get("ICM_DIALSTATUS") or "-"
    _say(
        f"   dialplan: ICM_STATUS={call.status} ICM_MANAGER={manager} ICM_DIALSTATUS={dialled};"
        f" the scenario went to: {reached}"
    )
