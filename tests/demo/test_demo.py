"""Smoke test of the whole demo (``--budget smoke``: every stage runs its real command with tiny step counts),
then a second call that must reuse every stage, and the report built from the stages' own files."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from demo.pipeline import BUDGETS, STAGES
from tests.conftest import subprocess_environment

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_demo(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "demo", "--budget", "smoke", "--run-dir", str(run_dir), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=subprocess_environment(),
    )


@pytest.fixture(scope="module")
def demo(smoke_demo) -> tuple[Path, subprocess.CompletedProcess]:
    return smoke_demo  # tests/conftest.py: the session's smoke demo run


def test_every_stage_ran_and_left_its_artifacts(demo):
    run_dir, proc = demo
    for number, stage in enumerate(STAGES, 1):
        assert f"[demo] {number}/{len(STAGES)} {stage}: finished" in proc.stdout
        assert json.loads((run_dir / stage / "DONE").read_text())["budget"] == "smoke"
    # a stage done with other budget numbers is not reused
    marker = json.loads((run_dir / "report" / "DONE").read_text())
    assert marker["budget_settings"] == json.loads(json.dumps(dataclasses.asdict(BUDGETS["smoke"])))
    assert (run_dir / "spm" / "spm.model").is_file()
    manifest = json.loads((run_dir / "data" / "ds" / "manifest.json").read_text())
    assert manifest["tokenizer"]["spm_size"] == BUDGETS["smoke"].spm_vocab
    assert (run_dir / "encoder" / "xlmr" / "config.json").is_file()
    pretrain = [
        json.loads(line) for line in (run_dir / "pretrain" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in pretrain] == list(range(1, BUDGETS["smoke"].pretrain_steps + 1))
    assert (run_dir / "pretrain" / "checkpoints" / "latest").read_text().strip() == "step_000000004"
    export = json.loads((run_dir / "export" / "model" / "config.json").read_text())
    assert export["exported_from"]["step"] == 4
    assert "tensors bit-equal" in (run_dir / "logs" / "export.log").read_text()
    results = json.loads((run_dir / "evaluate" / "results.json").read_text())
    assert [r["pair"] for r in results["results"]] == ["en-de"]
    assert results["results"][0]["n"] == BUDGETS["smoke"].test_lines
    hyps = (run_dir / "evaluate" / results["results"][0]["hypotheses"]).read_text().splitlines()
    assert len(hyps) == BUDGETS["smoke"].test_lines


def test_report_is_built_from_the_run(demo):
    run_dir, _ = demo
    report = (run_dir / "report.md").read_text()
    results = json.loads((run_dir / "evaluate" / "results.json").read_text())
    bleu = results["results"][0]["scores"]["bleu"]
    assert f"| en-de | {BUDGETS['smoke'].test_lines} | {bleu:.2f} |" in report
    assert "stands in for InfoXLM" in report
    # the random-init control: same fine-tuning config but init.kind none, scored on the same test lines
    control = json.loads((run_dir / "evaluate" / "random_init" / "results.json").read_text())
    assert control["results"][0]["n"] == BUDGETS["smoke"].test_lines
    steps = [
        json.loads(x)["step"]
        for x in (run_dir / "finetune" / "random_run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, BUDGETS["smoke"].finetune_steps + 1))
    (row,) = json.loads((run_dir / "evaluate" / "DONE").read_text())["comparison"]
    assert row["random"] == round(control["results"][0]["scores"]["bleu"], 2)
    assert (
        f"| en-de | {BUDGETS['smoke'].test_lines} | {row['pretrained']:.2f} | {row['random']:.2f} |" in report
    )
    assert "random init (`init.kind=random`" in report
    png = (run_dir / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_second_call_reuses_finished_stages_and_redo_reruns(demo):
    run_dir, _ = demo
    before = (run_dir / "export" / "model" / "model.safetensors").stat().st_mtime_ns
    proc = run_demo(run_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for number, stage in enumerate(STAGES, 1):
        assert f"[demo] {number}/{len(STAGES)} {stage}: done before" in proc.stdout
    assert (run_dir / "export" / "model" / "model.safetensors").stat().st_mtime_ns == before
    proc = run_demo(run_dir, "--redo", "report")
    assert (
        proc.returncode == 0
        and "8/8 report: finished" in proc.stdout
        and "7/8 evaluate: done before" in proc.stdout
    )


def test_failed_stage_is_one_clear_error(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "spm").mkdir(parents=True)
    settings = json.loads(
        json.dumps(dataclasses.asdict(BUDGETS["smoke"]))
    )  # a marker that claims the stage is done, but no model
    (run_dir / "spm" / "DONE").write_text(json.dumps({"budget_settings": settings, "seconds": 0}))
    proc = run_demo(run_dir)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: command failed") and "Traceback" not in proc.stderr.splitlines()[0]
    assert "logs/data.log" in proc.stderr
    assert not (run_dir / "data" / "DONE").exists()


def test_console_shows_progress_and_log_paths_and_tensorboard_is_on(demo):
    run_dir, proc = demo
    out = proc.stdout
    for stage in ("encoder", "pretrain", "finetune", "evaluate"):
        assert f"[demo]   log: {run_dir / 'logs' / (stage + '.log')}" in out
    steps = BUDGETS["smoke"].pretrain_steps
    assert f"[demo]   [encoder] step {BUDGETS['smoke'].encoder_steps}/" in out and "| mlm loss " in out
    assert f"[demo]   step {steps}/{steps} | loss " in out and "| eta " in out
    assert "[demo]   [engine] validation step" in out
    assert (
        f"[demo]   [evaluate] en-de: {BUDGETS['smoke'].test_lines}/{BUDGETS['smoke'].test_lines} sentences"
        in out
    )
    for events in (run_dir / "pretrain" / "tensorboard", run_dir / "finetune" / "run" / "tensorboard"):
        assert list(events.glob("events.out.tfevents.*")), events


def test_sigterm_stops_the_running_stage_and_the_demo(demo, tmp_path):
    import shutil
    import signal

    source, _ = demo
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "demo",
            "--budget",
            "smoke",
            "--run-dir",
            str(run_dir),
            "--redo",
            "pretrain",
        ],
        cwd=REPO,
        env=subprocess_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("[demo]   log:") and "pretrain.log" in line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.stdout.read()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith("stopped: SIGTERM: stopped"), err
    assert not (run_dir / "pretrain" / "DONE").exists()
