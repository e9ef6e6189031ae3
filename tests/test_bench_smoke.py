"""Keep the benchmarks and the crash drill from rotting: import every bench module, and run the
full crash drill (5 kill -9s on each database) asserting zero loss.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dbs import selected_backends

ROOT = Path(__file__).resolve().parent.parent
BENCH_MODULES = ["common", "bare_app", "load", "outcomes_scale", "crash", "soak"]


@pytest.mark.parametrize("name", BENCH_MODULES)
def test_bench_module_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    if name != "common" and name != "bare_app":
        assert callable(module.main)


def test_percentile_interpolates() -> None:
    from bench.common import percentile

    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5.0
    assert percentile([3, 1, 2], 100) == 3.0


def test_crash_drill_loses_nothing_across_five_kills_on_each_database() -> None:
    """The issue's acceptance drill, as documented (`make crash`): 5 kill -9s per database."""
    backends = ",".join(selected_backends(None))
    command = [sys.executable, "bench/crash.py", "--db", backends, "--kills", "5"]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "CRASH DRILL PASSED" in output, output[-4000:]
    for backend in backends.split(","):
        summary = output[output.index(f"== {backend}: OK") :]
        assert "kills: 5" in summary, summary[:2000]
        assert "lost = 0" in summary, summary[:2000]
        assert "duplicates = 0" in summary, summary[:2000]
