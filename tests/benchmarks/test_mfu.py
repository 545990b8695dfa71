"""benchmarks/mfu.py end to end on CPU (tiny preset, the real engine step), its errors, and fp16 loss scaling."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch

from benchmarks import mfu
from benchmarks.hf_peer import matched_mt5_config, mt5_flops_of
from deltalm.engine.flops import training_flops_per_sample
from deltalm.model.config import DeltaLMConfig

TINY_RUN = [
    "--preset",
    "tiny",
    "--shapes",
    "40/12,40/24",
    "--micro-batch",
    "2",
    "--steps",
    "2",
    "--warmup",
    "1",
]


def test_tiny_run_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "mfu.json"
    assert mfu.main([*TINY_RUN, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| deltalm-tiny |" in printed and "| hf-mt5 (d_ff " in printed
    assert "speed-up over the HF peer:" in printed and "GEMM ceiling" in printed

    data = json.loads(out.read_text())
    ours, peer = data["results"]
    config = DeltaLMConfig.preset("tiny", pad_vocab_to_multiple=64)
    shapes = [(40, 12), (40, 24)]
    expected = sum(training_flops_per_sample(config, s, t) for s, t in shapes) / 2 / 1e9
    assert ours["flops_per_sample_g"] == pytest.approx(expected, rel=1e-9)
    peer_config = matched_mt5_config(config, shapes)
    assert peer["flops_per_sample_g"] == pytest.approx(
        sum(mt5_flops_of(peer_config, s, t) for s, t in shapes) / 2 / 1e9, rel=1e-9
    )
    assert peer["flops_per_sample_g"] == pytest.approx(
        ours["flops_per_sample_g"], rel=0.01
    )  # equal-FLOPs peer
    for r in (ours, peer):
        assert r["steps"] == 2 and r["micro_batch"] == 2 and len(r["losses"]) == 2
        assert all(math.isfinite(x) for x in r["losses"])
        assert r["samples_per_s"] > 0 and 0 <= r["wait_fraction"] < 1
        # consistency of the derived figures: TFLOP/s = samples/s x FLOPs/sample; tokens cycle both shapes
        assert r["tflops"] == pytest.approx(r["samples_per_s"] * r["flops_per_sample_g"] / 1e3, rel=1e-6)
        assert r["tokens_per_s"] == pytest.approx(r["samples_per_s"] * (52 + 64) / 2, rel=1e-6)
        assert r["mfu_ceiling"] == pytest.approx(
            r["tflops"] / data["environment"]["ceiling_tflops"], rel=1e-6
        )
        assert r["mfu_datasheet"] is None  # no datasheet peak for a CPU
    assert data["environment"]["precision"] == "fp32" and data["environment"]["zero_stage"] == 0


def test_compiled_layers_with_activation_checkpointing_train_through_the_engine(capsys):
    """--compile wiring (layers compiled in place under DeepSpeed, with checkpointing); the eager backend keeps
    CI fast, inductor's speed is a GPU figure."""
    argv = ["--preset", "tiny", "--shapes", "24/8", "--steps", "2", "--warmup", "1", "--peer", "none"]
    argv += ["--compile", "--compile-backend", "eager", "--activation-checkpointing", "--probe"]
    assert mfu.main(argv) == 0
    assert capsys.readouterr().out.startswith("probe: peak ")  # one --find-max-micro-batch trial


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shapes", "512x114"], "--shapes: '512x114'"),
        (["--shapes", "600/100"], "exceed the position table"),
        (["--micro-batch", "0"], "--micro-batch must be >= 1"),
        (["--precision", "fp16"], "needs a CUDA GPU"),
    ],
)
def test_bad_arguments_give_one_line(argv, message, capsys):
    if "fp16" in argv and torch.cuda.is_available():
        pytest.skip("fp16 is valid on a GPU")
    assert mfu.main(["--preset", "tiny", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_fp16_dynamic_loss_scaling_runs_a_few_steps():
    """DeepSpeed fp16 (dynamic loss scaling) on the real engine, where DeepSpeed's accelerator allows fp16."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if torch.float16 not in accelerator.supported_dtypes():
        pytest.skip(
            f"DeepSpeed's {accelerator.device_name()} accelerator supports only "
            f"{[str(d) for d in accelerator.supported_dtypes()]}: its engine refuses fp16 "
            "('Type fp16 is not supported on your device'); covered by the gpu test below"
        )
    args = mfu.build_parser().parse_args(
        ["--preset", "tiny", "--shapes", "40/12", "--steps", "4", "--warmup", "0", "--peer", "none"]
    )
    args.precision = "fp16"
    mfu.resolve(args)
    _, (result,) = mfu.benchmark(args)
    assert len(result.losses) == 4 and all(math.isfinite(x) for x in result.losses)


@pytest.mark.gpu
def test_fp16_loss_scale_is_stable_over_a_hundred_steps():
    """GPU only: 100 fp16 steps of the small preset stay finite (skips only while the loss scale settles)."""
    args = mfu.build_parser().parse_args(
        ["--preset", "small", "--shapes", "span", "--micro-batch", "8", "--steps", "100", "--warmup", "0"]
    )
    args.peer = "none"
    args.precision = "fp16"
    mfu.resolve(args)
    _, (result,) = mfu.benchmark(args)
    finite = [x for x in result.losses if math.isfinite(x)]
    assert len(finite) >= 90 and all(math.isfinite(x) for x in result.losses[-10:])


def test_find_max_micro_batch_doubles_then_bisects(monkeypatch, capsys):
    """The search over probe subprocesses (faked here: fits up to 37); the probe mode itself runs for real in
    the compile test above."""
    trials = []

    def fake_run(command, **kwargs):
        micro = int(command[command.index("--micro-batch") + 1])
        trials.append((micro, command))
        code = 0 if micro <= 37 else mfu.OOM_EXIT
        return subprocess.CompletedProcess(
            command, code, stdout=f"probe: peak {micro / 10:.2f} GB\n", stderr=""
        )

    monkeypatch.setattr(mfu.subprocess, "run", fake_run)
    argv = ["--preset", "tiny", "--find-max-micro-batch", "--fused-loss", "--vocab-multiple", "8"]
    assert mfu.main(argv) == 0
    assert [m for m, _ in trials] == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    command = trials[0][1]
    assert "--probe" in command and "--fused-loss" in command
    assert (
        command[command.index("--vocab-multiple") + 1] == "8"
        and command[command.index("--peer") + 1] == "none"
    )
    out = capsys.readouterr().out
    assert "micro-batch 64: out of memory (probe: peak 6.40 GB)" in out and "largest micro-batch: 37 |" in out
