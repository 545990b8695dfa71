"""GPU smoke test of the engine: bf16 ZeRO-1 with the fused optimizer and a skipped NaN step (skipped on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.deltalm.engine.ranks import DRIVER, REPO

pytestmark = pytest.mark.gpu


def test_bf16_zero1_on_gpu(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "run: {max_steps: 6}\n"
        "model: {preset: tiny, vocab_size: 512, d_model: 64, heads: 4, ffn: 128, encoder_layers: 1, decoder_blocks: 1}\n"
        "schedule: {warmup_steps: 2}\nbatch: {global_batch_size: 8, micro_batch_size: 4}\n"
        "checkpoint: {every: 3}\nlogging: {tensorboard: false}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    sets = [
        "deepspeed.zero_stage=1",
        "deepspeed.precision=bf16",
        "faults.nan_at_steps=[2]",
        f"run.run_dir={tmp_path / 'r'}",
    ]
    argv = [sys.executable, str(DRIVER), "--config", str(config)] + [a for s in sets for a in ("--set", s)]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in records] == [False, True, False, False, False, False]
    assert records[-1]["mfu"] is not None and 0 < records[-1]["mfu"] < 1
