"""pretrain/train.py end to end with the real loader: exact resume, and launch.sh over the deepspeed launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deltalm.vocabulary import Vocabulary
from tests.deltalm.engine.held_setup import sigterm_during_setup
from tests.pretrain.corpus import random_docs, write_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VOCAB = Vocabulary(spm_size=400)
DETERMINISTIC = ("step", "loss", "nll", "lr", "grad_norm", "skipped", "tokens", "samples")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrain_data")
    rng = np.random.default_rng(0)
    high = VOCAB.spm_size + 4
    pairs = list(zip(random_docs(rng, 60, 5, 30, 4, high), random_docs(rng, 60, 5, 30, 4, high), strict=True))
    return write_dataset(
        root / "ds",
        VOCAB,
        mono={"de": random_docs(rng, 30, 20, 300, 4, high), "en": random_docs(rng, 30, 20, 300, 4, high)},
        parallel={("en", "de"): pairs},
    )


def common(dataset: Path, run_dir: Path) -> list[str]:
    sets = [
        f"data.data_dirs=[{dataset}]",
        f"model.vocab_size={VOCAB.pretrain_size}",
        "model.d_model=32",
        "model.heads=2",
        "model.ffn=64",
        "model.encoder_layers=1",
        f"run.run_dir={run_dir}",
        "batch.global_batch_size=4",
        "batch.micro_batch_size=2",
        "schedule.total_steps=6",
        "schedule.warmup_steps=2",
        "logging.tensorboard=true",
        "data.input_length=32",
        "data.translation_input_length=32",
    ]
    return ["--preset", "tiny"] + [arg for item in sets for arg in ("--set", item)]


def train(args: list[str], **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **env}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        environment.pop(key, None)
    return subprocess.run(
        [sys.executable, "pretrain/train.py", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def records(run_dir: Path) -> list[tuple]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [tuple(json.loads(line)[k] for k in DETERMINISTIC) for line in lines]


def test_resume_continues_bit_exactly_with_the_real_loader(dataset, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    proc = train(common(dataset, straight) + ["--set", "run.max_steps=6", "--set", "checkpoint.every=0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = train(common(dataset, split) + ["--set", "run.max_steps=3", "--set", "checkpoint.every=0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = train(common(dataset, split) + ["--set", "run.max_steps=6", "--set", "checkpoint.every=0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr
    assert records(split) == records(straight)
    # documented run-directory layout
    assert (split / "config.yaml").is_file() and any((split / "tensorboard").iterdir())
    assert (split / "checkpoints" / "latest").read_text().strip() == "step_000000006"
    record = json.loads((split / "metrics.jsonl").read_text().splitlines()[-1])
    for key in (
        "step",
        "loss",
        "lr",
        "grad_norm",
        "loss_scale",
        "skipped",
        "tokens_per_s",
        "samples_per_s",
        "mfu",
    ):
        assert key in record


def test_launch_sh_runs_two_ranks_through_the_deepspeed_launcher(dataset, tmp_path):
    run_dir = tmp_path / "ds"
    config = tmp_path / "c.yaml"
    config.write_text("preset: tiny\n")
    sets = common(dataset, run_dir)[2:] + ["--set", "run.max_steps=2", "--set", "checkpoint.every=0"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", MASTER_PORT=str(29500 + os.getpid() % 1000))
    proc = subprocess.run(
        ["bash", "launch.sh", "pretrain", str(config), *sets, "--num_gpus", "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    manifest = json.loads((run_dir / "checkpoints" / "step_000000002" / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert {"rank_state_00000.pt", "rank_state_00001.pt"} <= set(manifest["files"])


def test_a_bad_shard_found_during_training_is_one_line_exit_2(dataset, tmp_path):
    rng = np.random.default_rng(3)
    high = VOCAB.spm_size + 4
    other = write_dataset(tmp_path / "other", VOCAB, mono={"fr": random_docs(rng, 30, 20, 300, 4, high)})
    shard = other / "fr" / "shard-00000.arrow"
    shard.write_bytes(b"\0" * shard.stat().st_size)  # right size (passes the pre-start check), not Arrow
    run_dir = tmp_path / "run"
    args = common(dataset, run_dir) + [
        "--set",
        f"data.data_dirs=[{dataset},{other}]",
        "--set",
        "run.max_steps=6",
    ]
    args += ["--set", "checkpoint.every=0", "--set", "data.temperature=100"]
    proc = train(args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: data: {shard}: not a readable Arrow shard"), last


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_launch_sh_config_error_at_two_ranks_is_one_line_printed_last(tmp_path, stage):
    """Every rank meets the error; rank 0 alone prints it, and launch.sh repeats it after the launcher's logs."""
    config = tmp_path / "c.yaml"
    config.write_text("run:\n  max_step: 3\n")  # a misspelt key
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", MASTER_PORT=str(29600 + os.getpid() % 1000))
    proc = subprocess.run(
        ["bash", "launch.sh", stage, str(config), "--num_gpus", "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: unknown config key run.max_step (known: "), lines[-5:]
    # once from the ranks (rank 0) and once repeated by launch.sh: never once per rank
    assert sum("unknown config key run.max_step" in line for line in lines) == 2, lines


@pytest.mark.parametrize("point", ["model", "engine"])
def test_sigterm_during_setup_stops_at_once(dataset, tmp_path, point):
    """The handler is installed first thing: SIGTERM while the model or the engine is being built ends the run
    with one line and exit 143 (tests/deltalm/engine/setup_hold.py holds set-up there until the signal arrives)."""
    run_dir = tmp_path / "run"
    argv = [*common(dataset, run_dir), "--set", "run.max_steps=4"]
    run = sigterm_during_setup("pretrain", point, tmp_path / "held", argv, OMP_NUM_THREADS="1")
    err = run.stderr
    assert run.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("stopped: SIGTERM during set-up"), err[-3000:]
    assert run.seconds < 30 and "Traceback" not in err
    assert not list(run_dir.glob("checkpoints/*/COMMITTED")) and not (run_dir / "metrics.jsonl").exists()
