"""SIGTERM during set-up (a real subprocess): the run ends promptly with one line and exit 143, and leaves no
run directory that looks finished; SIGTERM during training checkpoints and exits 0 without ``final/``."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, subprocess_environment
from tests.deltalm.engine.held_setup import DRIVER, sigterm_during_setup
from tests.finetune.conftest import read_pairs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def config(tmp_path_factory, spm_model) -> tuple[Path, Path]:
    import gzip
    import json

    root = tmp_path_factory.mktemp("preempt")
    data = root / "train.jsonl.gz"
    with gzip.open(data, "wt", encoding="utf-8") as handle:
        for row in read_pairs("train.en-de.jsonl.gz", 64):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    cfg = {
        "run": {"run_dir": str(root / "run"), "max_steps": 2},
        "model": {
            "preset": "tiny",
            "d_model": 32,
            "heads": 2,
            "ffn": 64,
            "encoder_layers": 2,
            "decoder_blocks": 1,
        },
        "batch": {"global_batch_size": 8, "micro_batch_size": 8},
        "checkpoint": {"every": 0},
        "logging": {"tensorboard": False},
        "task": {
            "name": "translation",
            "spm_model": str(spm_model),
            "num_sentinels": 16,
            "train": [{"path": str(data), "src_lang": "en", "tgt_lang": "de"}],
        },
    }
    path = root / "ft.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path, root / "run"


@pytest.mark.parametrize("point", ["model", "engine"])
def test_sigterm_during_setup_stops_at_once_with_one_line(config, point, tmp_path):
    config_path, run_dir = config
    run = sigterm_during_setup("finetune", point, tmp_path / "held", ["--config", str(config_path)])
    assert run.returncode == 128 + signal.SIGTERM, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM during set-up") and "exit 143" in last, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert run.seconds < 30  # the hold sleeps 120 s: the signal ended it, not the timer
    # nothing that looks finished: no committed checkpoint, no summary, no exported model
    assert not (run_dir / "summary.json").exists() and not (run_dir / "final").exists()
    assert not list(run_dir.glob("checkpoints/*/COMMITTED"))


def test_sigterm_in_training_checkpoints_and_leaves_no_final_model(config, tmp_path):
    """After set-up the signal is a checkpoint request: exit 0, a committed checkpoint, summary says 'signal',
    and no ``final/`` or ``averaged/`` that would look like a finished run."""
    import json

    config_path, run = config
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), "finetune", "training", "-", "--", "--config", str(config_path)],
        cwd=REPO,
        env=subprocess_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_by"] == "signal" and summary["step"] == 1
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000000001"
    assert not (run / "final").exists() and not (run / "averaged").exists()
