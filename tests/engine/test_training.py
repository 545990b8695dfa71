"""Multi-process engine tests on CPU (gloo): rank equivalence, exact resume, kills, signals, NaN, universal.

All runs share one tiny config (d 32, 1+1 layers, vocab 512, dropout 0.1, 6 steps, checkpoint every 2) and
reuse each other's outputs: the 1-rank ZeRO-1 run is the reference for the resume tests, the 2-rank ZeRO-2 run
is the source of the universal checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.engine import ranks

pytestmark = pytest.mark.slow

STEPS = 6
CONFIG = f"""
run: {{seed: 7, max_steps: {STEPS}}}
model: {{preset: tiny, vocab_size: 512, d_model: 32, heads: 2, ffn: 64, encoder_layers: 1, decoder_blocks: 1,
        dropout: 0.1}}
optimizer: {{lr: 0.003}}
schedule: {{warmup_steps: 2}}
batch: {{global_batch_size: 4, micro_batch_size: 2}}
checkpoint: {{every: 2, keep_last: 2}}
logging: {{tensorboard: false}}
data: {{source_len: 24, target_len: 8}}
"""
DETERMINISTIC = ("step", "loss", "nll", "lr", "grad_norm", "skipped", "tokens", "samples")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("engine")
    (path / "config.yaml").write_text(CONFIG)
    return path


def args(workdir: Path, run: str, *overrides: str) -> list[str]:
    out = ["--config", str(workdir / "config.yaml"), "--set", f"run.run_dir={workdir / run}"]
    for item in overrides:
        out += ["--set", item]
    return out


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def exact(records: list[dict]) -> list[tuple]:
    return [tuple(r[k] for k in DETERMINISTIC) for r in records]


def ok(results) -> None:
    for rc, _out, err in results:
        assert rc == 0, err[-3000:]


_cache: dict[str, list[dict]] = {}


def trained(workdir: Path, world: int, stage: int, *, mpi: bool = False) -> list[dict]:
    """Metrics of a full run (cached across tests)."""
    name = f"w{world}_z{stage}{'_mpi' if mpi else ''}"
    if name not in _cache:
        argv = args(workdir, name, f"deepspeed.zero_stage={stage}")
        if mpi:
            ok([ranks.mpirun(world, argv)])
        else:
            ok(ranks.run(world, argv))
        _cache[name] = metrics(workdir / name)
    return _cache[name]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_two_ranks_equal_one_rank_with_accumulation(workdir, stage):
    one = trained(workdir, 1, stage)
    two = trained(workdir, 2, stage, mpi=stage == 1)  # ZeRO-1's two ranks start under `mpirun -np 2`
    assert len(one) == len(two) == STEPS
    for a, b in zip(one, two, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-4
        assert a["tokens"] == b["tokens"] and a["lr"] == b["lr"]
    assert one[1]["lr"] == pytest.approx(0.003) and one[-1]["lr"] == 0.0


def test_sigkill_mid_accumulation_then_kill_during_save_resumes_exactly(workdir):
    reference = trained(workdir, 1, 1)
    run = workdir / "killed"
    argv = args(workdir, "killed", "deepspeed.zero_stage=1")
    # batch 7 is the first micro-batch of step 4: last commit was step 2
    ((rc, _, _),) = ranks.run(1, argv, extra_env={"DELTALM_TEST_KILL_AT_BATCH": "7"})
    assert rc == -signal.SIGKILL
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000000002"
    # resume from 2, get killed while committing step 4: latest must stay at 2, the torn step 4 is ignored
    ((rc, _, _),) = ranks.run(1, argv, extra_env={"DELTALM_TEST_KILL_IN_SAVE": "4"})
    assert rc == -signal.SIGKILL
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000000002"
    torn = run / "checkpoints" / "step_000000004"
    assert torn.is_dir() and not (torn / "COMMITTED").exists()
    ((rc, _, err),) = ranks.run(1, argv)
    assert rc == 0, err[-3000:]
    assert "resumed from" in err and "step_000000002" in err
    assert exact(metrics(run)) == exact(reference)


def test_sigterm_checkpoints_exits_zero_and_resumes_exactly(workdir):
    reference = trained(workdir, 1, 1)
    run = workdir / "term"
    argv = args(workdir, "term", "deepspeed.zero_stage=1", "checkpoint.every=0", f"run.max_steps={STEPS}")
    held = workdir / "term.held"
    # batch 5 is the first micro-batch of step 3: the run holds there until the signal arrives, finishes step 3,
    # checkpoints and stops (a plain race against a fast machine could finish all steps before the signal)
    (proc,) = ranks.start(1, argv, extra_env={"DELTALM_TEST_HOLD_AT_BATCH": f"5:{held}"})
    deadline = time.time() + 120
    while time.time() < deadline and not held.is_file() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM" in err
    stopped = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert stopped == 3
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{stopped:09d}"
    ok(ranks.run(1, argv))
    assert exact(metrics(run)) == exact(reference)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_injected_nan_is_skipped_at_every_zero_stage(workdir, stage):
    name = f"nan_z{stage}"
    ok(
        ranks.run(
            1,
            args(
                workdir,
                name,
                f"deepspeed.zero_stage={stage}",
                "run.max_steps=4",
                "nonfinite.inject_at_steps=[2]",
                "checkpoint.every=0",
            ),
        )
    )
    records = metrics(workdir / name)
    assert [r["skipped"] for r in records] == [False, True, False, False]
    assert records[1]["grad_norm"] == "nan"
    assert all(math.isfinite(r["loss"]) for r in records[2:])  # applied NaN would poison every later step
    assert records[-1]["skipped_total"] == 1


def test_nonfinite_streak_aborts_with_one_line(workdir):
    ((rc, _, err),) = ranks.run(
        1,
        args(
            workdir,
            "abort",
            "deepspeed.zero_stage=0",
            "nonfinite.inject_at_steps=[1,2]",
            "nonfinite.max_consecutive=2",
            "checkpoint.every=0",
        ),
    )
    assert rc == 4
    assert err.strip().splitlines()[-1].startswith("error: step 2: 2 non-finite steps in a row")


def test_resume_two_ranks_to_one_through_universal_checkpoint(workdir):
    two = trained(workdir, 2, 2)
    source = workdir / "w2_z2" / "checkpoints"
    run = workdir / "universal"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(source / "step_000000004", run / "checkpoints" / "step_000000004")
    (run / "checkpoints" / "latest").write_text("step_000000004\n")
    ok(ranks.run(1, args(workdir, "universal", "deepspeed.zero_stage=2")))
    resumed = metrics(run)
    assert [r["step"] for r in resumed] == [5, 6]
    for a, b in zip(resumed, two[4:], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)


def test_corrupted_checkpoint_is_a_clear_error(workdir):
    trained(workdir, 1, 1)
    run = workdir / "flipped"
    shutil.copytree(workdir / "w1_z1" / "checkpoints", run / "checkpoints")
    target = run / "checkpoints" / "step_000000006" / "mp_rank_00_model_states.pt"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    ((rc, _, err),) = ranks.run(1, args(workdir, "flipped", "deepspeed.zero_stage=1"))
    assert rc == 3
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(target) in last and "sha256" in last
    assert not (run / "metrics.jsonl").exists()  # never a silent fresh start


def test_bad_cli_is_one_line_exit_2(workdir):
    ((rc, out, err),) = ranks.run(
        1, args(workdir, "bad", "batch.global_batch_size=6", "batch.micro_batch_size=4")
    )
    assert rc == 2
    assert (
        err.strip()
        == "error: batch.global_batch_size (6) is not divisible by batch.micro_batch_size (4) x world size (1)"
    )
    assert not os.path.exists(workdir / "bad")


def _tensorboard_losses(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("train/loss")]


def test_logs_read_like_one_run_after_a_kill_before_the_first_checkpoint(workdir):
    reference = trained(workdir, 1, 1)
    run = workdir / "early_kill"
    argv = args(workdir, "early_kill", "deepspeed.zero_stage=1", "logging.tensorboard=true")
    # batch 3 is the first micro-batch of step 2: step 1 is logged, no checkpoint exists yet
    ((rc, _, _),) = ranks.run(1, argv, extra_env={"DELTALM_TEST_KILL_AT_BATCH": "3"})
    assert rc == -signal.SIGKILL and not (run / "checkpoints" / "latest").exists()
    assert [r["step"] for r in metrics(run)] == [1]
    # a restart from scratch, killed again after the step-2 checkpoint, then resumed from step 2
    ((rc, _, _),) = ranks.run(1, argv, extra_env={"DELTALM_TEST_KILL_AT_BATCH": "7"})
    assert rc == -signal.SIGKILL
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]
    ok(ranks.run(1, argv))
    assert exact(metrics(run)) == exact(reference)
    board = _tensorboard_losses(run)
    assert [step for step, _ in board] == list(range(1, STEPS + 1))
    assert [value for _, value in board] == pytest.approx([r["loss"] for r in reference], rel=1e-6)


def test_zero0_checkpoint_resumed_at_another_stage_is_refused_in_one_line(workdir):
    run = "zero0"
    ok(ranks.run(1, args(workdir, run, "deepspeed.zero_stage=0", "run.max_steps=2", "checkpoint.every=0")))
    ((rc, _, err),) = ranks.run(1, args(workdir, run, "deepspeed.zero_stage=1", "run.max_steps=4"))
    assert rc == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: checkpoint step_000000002 was saved by 1 ranks at ZeRO-0")
    assert "resume with deepspeed.zero_stage=0 on 1 ranks" in last and "Traceback" not in err
    assert [r["step"] for r in metrics(workdir / run)] == [1, 2]  # the refused start wrote nothing


def test_skipped_step_does_not_advance_the_schedule_across_a_resume(workdir):
    """Step 2 is non-finite: step 3 (after a resume) uses the LR step 2 would have used."""
    name = "nan_schedule"
    schedule = ["schedule.total_steps=10", "nonfinite.inject_at_steps=[2]", "checkpoint.every=0"]
    ok(ranks.run(1, args(workdir, name, "deepspeed.zero_stage=1", "run.max_steps=2", *schedule)))
    ok(ranks.run(1, args(workdir, name, "deepspeed.zero_stage=1", "run.max_steps=4", *schedule)))
    records = metrics(workdir / name)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["skipped"] for r in records] == [False, True, False, False]
    # linear warm-up 2 steps to 0.003, decay to 0 at 10: lr_at(1), lr_at(2) (skipped), lr_at(2), lr_at(3)
    assert [r["lr"] for r in records] == pytest.approx([0.0015, 0.003, 0.003, 0.003 * 7 / 8], rel=1e-12)
