"""Smoke test of ``python -m benchmarks.data_prep --quick`` (tiny sizes; the floors are checked by the full run)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_benchmark_quick_prints_the_table(spm_model, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.data_prep",
            "--quick",
            "--no-datasets",
            "--workers",
            "1",
            "--spm",
            str(spm_model),
            "--workdir",
            str(tmp_path),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| raw spm Encode, documents" in out and "| data_prep mono " in out
    assert "mono MB/CPU-s (w=1) / raw spm MB/CPU-s" in out and "peak RSS" in out
