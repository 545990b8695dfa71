"""Smoke tests of the data benchmarks' ``--quick`` mode: each runs end to end (``python -m benchmarks.NAME
--quick``, as the docs call it) and prints its table and its floor lines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(
    ("name", "needles", "floor_lines"),
    [
        (
            "scale",
            (
                "| 1 | 0 | start-up CPU ms |",
                "| 4 | 3 | peak open files |",
                "data_prep add one shard",
                "floor start-up / micro-batch / peak RSS",
            ),
            None,  # not counted
        ),
        (
            "loader",
            ("ours: loader end-to-end", "HF-style collator end-to-end", "speed-up", "RSS growth 1x -> 10x"),
            3,
        ),
    ],
)
def test_quick_run_prints_its_table_and_floors(name: str, needles: tuple[str, ...], floor_lines: int | None):
    out = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for needle in needles:
        assert needle in out.stdout, needle
    if floor_lines is not None:
        assert out.stdout.count("floor ") == floor_lines


def test_a_benchmark_runs_as_a_script_from_anywhere(tmp_path):
    """``python benchmarks/NAME.py`` outside the repository: its ``benchmarks.*`` and library imports come from the
    installed project, not from ``sys.path`` edits or the working directory."""
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "model_params.py")],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| preset | embedding | encoder | decoder | total | paper | ratio |" in done.stdout
