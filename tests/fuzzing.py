"""Hypothesis settings for the hostile-input tests.

The default suite runs a modest number of examples per property so it stays fast. A long
fuzz run multiplies them::

    ICM_FUZZ_SCALE=50 .venv/bin/pytest tests/test_hostile_*.py

(``ICM_FUZZ_SCALE=50`` is 50 times the default examples of every property; a failure
prints the smallest input Hypothesis found and the ``@reproduce_failure`` line.)
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = max(1, int(os.environ.get("ICM_FUZZ_SCALE", "1")))


def fuzz(examples: int) -> settings:
    """Settings for a property: ``examples`` by default, times ``ICM_FUZZ_SCALE``; no
    per-example deadline (async tests and loaded CI machines would flake on one)."""
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        derandomize=SCALE == 1 and os.environ.get("ICM_FUZZ_RANDOM") is None,
    )
