"""The ``icm`` command's first lines, before anything heavy is imported.

SIGHUP asks a running daemon to reload, but its default action ends the process, and
importing the daemon's libraries takes a third of a second: a reload asked for in that
time (a deploy script, ``systemctl reload`` right after ``start``) would kill it. So the
signal is held back here, at once; the daemon lets it through once its own handler is
installed, and then reloads.
"""

from __future__ import annotations

import signal


def hold_sighup() -> None:
    """Block SIGHUP in this process: a SIGHUP sent now waits, it does not kill."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})


def release_sighup() -> None:
    """Deliver a SIGHUP held back meanwhile (to the handler installed by then)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


def main() -> int:
    hold_sighup()
    from icm.cli import main as cli

    return cli()
