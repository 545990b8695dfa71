"""Shared, cached assets of the export tests: engine runs at every ZeRO stage and a tiny SentencePiece model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.deltalm.engine import ranks

REPO = Path(__file__).resolve().parents[3]
DRIVER = REPO / "benchmarks" / "checkpoint_runs.py"
SAMPLE = REPO / "data_prep" / "sample_corpus" / "mono"
SPM_PIECES = 396  # + specials, mask, reserved and 100 sentinels = the driver's vocab_size of 500

# (world size, variants): every ZeRO stage at 1 and 2 ranks, fp32 and bf16 master-weight layouts both covered
RUNS = {1: ["1:fp32", "2:bf16", "3:fp32"], 2: ["1:bf16", "2:fp32", "3:bf16"]}


def train_runs(root: Path) -> dict[str, Path]:
    """Run the driver once per world size; returns ``{"w1_z1_fp32": run_dir, ...}``."""
    out = {}
    for world, variants in RUNS.items():
        base = root / f"w{world}"
        results = ranks.run(world, [str(base), *variants], timeout=300, script=DRIVER)
        for rc, _stdout, stderr in results:
            assert rc == 0, stderr[-3000:]
        for variant in variants:
            stage, precision = variant.split(":")
            out[f"w{world}_z{stage}_{precision}"] = base / f"z{stage}_{precision}"
    return out


def train_spm(root: Path) -> Path:
    prefix = root / "spm"
    cmd = [
        sys.executable, "-m", "data_prep", "train-spm",
        "--vocab-size", str(SPM_PIECES), "--character-coverage", "0.995", "--num-threads", "1",
        "--output", str(prefix), str(SAMPLE / "en.txt.gz"), str(SAMPLE / "de.txt.gz"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return prefix.with_suffix(".model")
