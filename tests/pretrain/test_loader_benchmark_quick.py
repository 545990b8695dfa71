"""Smoke test of benchmarks/loader.py --quick: it runs end to end and prints its table and floors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_loader_benchmark_quick():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.loader", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for needle in (
        "ours: loader end-to-end",
        "HF-style collator end-to-end",
        "speed-up",
        "RSS growth 1x -> 10x",
    ):
        assert needle in out.stdout
    assert out.stdout.count("floor ") == 3
