"""Engine benchmark on CPU: step time and samples/s per model preset and ZeRO stage; checkpoint save + load time.

    DS_ACCELERATOR=cpu .venv/bin/python -m benchmarks.engine [--presets small base] [--stages 0 1 2 3]
        [--steps 3] [--source-len 64] [--target-len 16] [--micro-batch 2] [--checkpoint-preset base]
        [--json OUT.json]

Each configuration runs in its own process (world size 1; memory is returned between them), synthetic batches of fixed shape (benchmarks/synthetic_batches.py), fp32, the
real Trainer (guard, token normalization, metrics). The first step of each configuration is warm-up and not
counted. The base preset on CPU needs a short sequence (64 source / 16 target tokens by default) to finish in
minutes. Checkpoint timing: the full commit protocol (DeepSpeed save, manifest with sha256 of every file,
COMMITTED, latest) and the verified load (hash check + DeepSpeed load) of the base preset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import torch

from benchmarks.synthetic_batches import SyntheticBatches, SyntheticDataConfig
from deltalm.engine.config import TrainingConfig, build_config
from deltalm.engine.distributed import discover, init_process_group, shutdown
from deltalm.engine.trainer import Trainer


def make_trainer(args, preset: str, stage: int, run_dir: Path, every: int = 0) -> Trainer:
    overrides = [
        f"model.preset={preset}",
        f"run.run_dir={run_dir}",
        f"run.max_steps={args.steps + 1}",
        "run.log_every=1000000",
        f"batch.micro_batch_size={args.micro_batch}",
        f"batch.global_batch_size={args.micro_batch}",
        f"deepspeed.zero_stage={stage}",
        "schedule.warmup_steps=1",
        f"checkpoint.every={every}",
        "checkpoint.resume=never",
        "logging.tensorboard=false",
    ]
    if preset in ("tiny", "small"):
        overrides.append(f"model.vocab_size={args.vocab_size}")
    config = build_config(TrainingConfig, {}, None, overrides)
    from deltalm.model.model import DeltaLM

    torch.manual_seed(0)
    model = DeltaLM(config.model)
    data = SyntheticDataConfig(source_len=args.source_len, target_len=args.target_len)
    batches = SyntheticBatches(
        data, config.model.vocab_size, micro_batch_size=args.micro_batch, seed=0, dp_rank=0, dp_world_size=1
    )
    trainer = Trainer(config, model, batches, discover())
    trainer.num_parameters = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them
    trainer.setup()
    return trainer


def time_steps(args, preset: str, stage: int, work: Path) -> dict:
    run_dir = work / f"{preset}_z{stage}"
    trainer = make_trainer(args, preset, stage, run_dir)
    for _ in range(args.steps + 1):
        trainer.train_step()
    trainer.metrics.close()
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    step_s = statistics.median(r["step_time_s"] for r in steps)
    params = trainer.num_parameters
    del trainer
    return {
        "preset": preset,
        "zero_stage": stage,
        "params_m": round(params / 1e6, 1),
        "step_s": round(step_s, 3),
        "samples_per_s": round(args.micro_batch / step_s, 2),
        "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in steps), 1),
    }


def time_checkpoint(args, preset: str, stage: int, work: Path) -> dict:
    run_dir = work / f"ckpt_{preset}_z{stage}"
    trainer = make_trainer(args, preset, stage, run_dir)
    trainer.train_step()
    started = time.perf_counter()
    trainer.save_checkpoint()
    save_s = time.perf_counter() - started
    tag = trainer.store.resume_tag()
    started = time.perf_counter()
    manifest = trainer.store.verify(tag)
    trainer.store.load(trainer.engine, tag, manifest, universal=False)
    load_s = time.perf_counter() - started
    size = sum(entry["size"] for entry in manifest["files"].values())
    trainer.metrics.close()
    return {
        "preset": preset,
        "zero_stage": stage,
        "gb": round(size / 1e9, 2),
        "save_s": round(save_s, 2),
        "load_s": round(load_s, 2),
    }


def run_one(args, kind: str, preset: str, stage: int) -> dict:
    """Measure one configuration in this process (the child side of :func:`spawn`)."""
    init_process_group(discover(), timeout_s=600)
    work = Path(tempfile.mkdtemp(prefix="engine_bench_"))
    try:
        if kind == "steps":
            return time_steps(args, preset, stage, work)
        return time_checkpoint(args, preset, stage, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutdown()


def spawn(argv: list[str], kind: str, preset: str, stage: int) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.engine", *argv, "--one", f"{kind}:{preset}:{stage}"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        why = "killed (SIGKILL: out of memory?)" if proc.returncode == -9 else f"exit {proc.returncode}"
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        print(f"{kind} {preset} ZeRO-{stage} failed: {why} {tail[0][:300]}", file=sys.stderr, flush=True)
        return {"preset": preset, "zero_stage": stage, "error": why}
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["small", "base"], choices=["tiny", "small", "base"])
    parser.add_argument("--stages", nargs="+", type=int, default=[0, 1, 2, 3], choices=[0, 1, 2, 3])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--source-len", type=int, default=64)
    parser.add_argument("--target-len", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument(
        "--vocab-size", type=int, default=8104, help="tiny/small preset vocabulary (base: 250,104)"
    )
    parser.add_argument("--checkpoint-preset", default="base", choices=["tiny", "small", "base", "none"])
    parser.add_argument("--checkpoint-stage", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: KIND:PRESET:STAGE in this process
    args = parser.parse_args()
    if args.one:
        kind, preset, stage = args.one.split(":")
        print("RESULT " + json.dumps(run_one(args, kind, preset, int(stage))), flush=True)
        return 0
    argv = list(sys.argv[1:])
    if "--json" in argv:  # the children report on stdout; only this process writes the file
        at = argv.index("--json")
        del argv[at : at + 2]
    results = {"steps": [], "checkpoint": None}
    for preset in args.presets:
        for stage in args.stages:
            row = spawn(argv, "steps", preset, stage)
            results["steps"].append(row)
            print(json.dumps(row), flush=True)
    if args.checkpoint_preset != "none":
        results["checkpoint"] = spawn(argv, "checkpoint", args.checkpoint_preset, args.checkpoint_stage)
        print(json.dumps(results["checkpoint"]), flush=True)
    results["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "deepspeed": __import__("deepspeed").__version__,
        "shape": f"micro-batch {args.micro_batch}, {args.source_len} source / {args.target_len} target tokens, fp32",
    }
    print("\n| preset | params (M) | ZeRO | step (s) | samples/s | tokens/s |\n|---|---|---|---|---|---|")
    for r in results["steps"]:
        if "error" in r:
            print(f"| {r['preset']} | | {r['zero_stage']} | {r['error']} | | |")
            continue
        print(
            f"| {r['preset']} | {r['params_m']} | {r['zero_stage']} | {r['step_s']} | {r['samples_per_s']} "
            f"| {r['tokens_per_s']} |"
        )
    if results["checkpoint"] and "error" not in results["checkpoint"]:
        c = results["checkpoint"]
        print(
            f"\ncheckpoint {c['preset']} ZeRO-{c['zero_stage']}: {c['gb']} GB, save {c['save_s']} s, "
            f"load {c['load_s']} s"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
