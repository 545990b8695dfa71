"""Smoke test of benchmarks/scale.py --quick: it runs end to end and prints its table and floor line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_scale_benchmark_quick():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for needle in ("| 1 | 0 | start-up CPU ms |", "| 4 | 3 | peak open files |", "data_prep add one shard"):
        assert needle in out.stdout
    assert "floor start-up / micro-batch / peak RSS" in out.stdout
