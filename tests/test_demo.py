"""`icm demo`: what a newcomer sees without a PBX."""

import subprocess
import sys

from icm.demo import run_demo


async def test_demo_places_every_kind_of_call(capsys):
    assert await run_demo(listen="127.0.0.1:0", once=True) == 0
    out = capsys.readouterr().out
    for expected in (
        "status=DIAL manager=101 (Anna (sales))",
        "ICM_STATUS=ANSWERED ICM_MANAGER=101",
        "status=NOTFOUND",
        "ICM_STATUS=OFFLINE ICM_MANAGER=102",
        "ICM_STATUS=BUSY ICM_MANAGER=103",
        "number=+74951234567 status=DIAL manager=104",
        "ICM_STATUS=NOANSWER ICM_MANAGER=104",
        "status=ANONYMOUS",
        "status=EXCEPTION",
    ):
        assert expected in out, expected


def test_demo_without_the_simulator_says_how_to_install_it(tmp_path):
    """Installed without the demo extra: one line saying how to get it, exit 2. The
    simulator is made absent the way Python marks a module unavailable (None in
    sys.modules): ``import simpbx`` then fails as if it were not installed."""
    code = (
        "import sys; sys.modules['simpbx'] = None; from icm.cli import main; "
        "raise SystemExit(main(['demo', '--once', '--listen', '127.0.0.1:0']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "icm demo needs the simulated PBX: pip install -e '.[demo]'"
    ]
    assert done.stdout == ""
