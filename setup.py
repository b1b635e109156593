"""ICM's extras, the one part of its metadata ``pyproject.toml`` cannot hold.

The ``test`` and ``demo`` extras install the simulated Asterisk (``simpbx/``, the
``icm-simpbx`` distribution) from this checkout. A requirement can only name a local
directory by an absolute ``file://`` URL, so it is computed here, where the checkout is.
A build from a tree without ``simpbx/`` (the Dockerfile copies only what the daemon needs)
has nothing to point at and leaves it out; the production wheel never contains it.
"""

from pathlib import Path

from setuptools import setup

SIMPBX = Path(__file__).resolve().parent / "simpbx"

# What the tests need besides the simulator. setuptools builds the production wheel in
# tests/test_packaging.py without network access (no build isolation).
TEST = [
    "hypothesis>=6.100",
    "pytest>=8",
    "pytest-asyncio>=0.23",
    "pytest-timeout>=2.3",
    "pyyaml>=6",
    "ruff>=0.5",
    "setuptools>=70.1",
]
# Profiling a slow path (bench/README.md): py-spy and pyinstrument.
PROFILE = ["py-spy>=0.3", "pyinstrument>=4"]


def simulator() -> list[str]:
    """The requirement on this checkout's ``simpbx/``, if the tree has it."""
    if not (SIMPBX / "pyproject.toml").is_file():
        return []
    return [f"icm-simpbx @ {SIMPBX.as_uri()}"]


setup(
    extras_require={
        "test": [*TEST, *simulator()],
        "demo": simulator(),
        "profile": PROFILE,
    }
)
