"""SIGTERM during set-up (a real subprocess): the run ends promptly with one line and exit 143, and leaves no
run directory that looks finished; SIGTERM during training checkpoints and exits 0 without ``final/``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import subprocess_environment
from tests.finetune.conftest import read_pairs

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "engine" / "setup_hold.py"
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


def signal_at(point: str, config_path: Path, marker: Path) -> tuple[int, str, float]:
    """Start the held run, SIGTERM it at ``point``; (exit code, stderr, seconds from signal to exit)."""
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), "finetune", point, str(marker), "--", "--config", str(config_path)],
        cwd=REPO,
        env=subprocess_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()[1][-3000:]
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, time.perf_counter() - sent


@pytest.mark.parametrize("point", ["model", "engine"])
def test_sigterm_during_setup_stops_at_once_with_one_line(config, point, tmp_path):
    config_path, run = config
    code, err, seconds = signal_at(point, config_path, tmp_path / "held")
    assert code == 128 + signal.SIGTERM, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM during set-up") and "exit 143" in last, err[-3000:]
    assert "Traceback" not in err
    assert seconds < 30  # the hold sleeps 120 s: the signal ended it, not the timer
    # nothing that looks finished: no committed checkpoint, no summary, no exported model
    assert not (run / "summary.json").exists() and not (run / "final").exists()
    assert not list(run.glob("checkpoints/*/COMMITTED"))


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
