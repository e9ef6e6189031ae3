"""Keep the benchmarks and the crash drill from rotting: import every bench module, and run the
crash drill in a very small mode (SQLite, 2 kills, 2 clients, 10 writes each) asserting zero loss.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_crash_drill_small_loses_nothing() -> None:
    command = [
        sys.executable,
        "bench/crash.py",
        "--db",
        "sqlite",
        "--kills",
        "2",
        "--clients",
        "2",
        "--per-client",
        "10",
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "kills: 2" in output, output[-4000:]
    assert "lost = 0" in output, output[-4000:]
    assert "duplicates = 0" in output, output[-4000:]
    assert "CRASH DRILL PASSED" in output, output[-4000:]
