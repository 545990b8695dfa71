"""Checkpoint driver: several small engine runs (one per ZeRO stage / precision) in one launch, plus a reference.

    python benchmarks/checkpoint_runs.py OUT_DIR STAGE:PRECISION [STAGE:PRECISION ...] [key=value ...]

Each run trains the engine's Trainer for 2 steps on synthetic batches into ``OUT_DIR/z<STAGE>_<PRECISION>`` and
then writes ``reference_fp32.safetensors``: DeepSpeed's own fp32 master weights read through
``deepspeed.utils.safe_get_full_fp32_param`` from the live engine, the ground truth the export must equal.
Started once per world size (RANK/WORLD_SIZE from the environment, :mod:`benchmarks.rank_launcher`); the export
tests and ``benchmarks/export.py`` use it. ``key=value`` arguments override the config (``model.d_model=512``:
benchmarks/export.py uses a bigger model).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.synthetic_batches import SyntheticBatches, SyntheticDataConfig
from deltalm.engine.config import TrainingConfig, build_config
from deltalm.engine.distributed import discover, init_process_group, shutdown
from deltalm.engine.trainer import Trainer

CONFIG = {
    "run": {"seed": 3, "max_steps": 2},
    "model": {
        "preset": "tiny",
        "vocab_size": 500,
        "d_model": 32,
        "heads": 2,
        "ffn": 64,
        "encoder_layers": 2,
        "decoder_blocks": 1,
        "dropout": 0.0,
    },
    "optimizer": {"lr": 0.01},
    "schedule": {"kind": "constant", "warmup_steps": 0},
    "batch": {"global_batch_size": 4, "micro_batch_size": 2},
    "checkpoint": {"every": 0, "keep_last": 2},
    "logging": {"tensorboard": False},
    "data": {"source_len": 16, "target_len": 8},
}


@dataclass
class DriverConfig(TrainingConfig):
    data: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)


def main(out_dir: str, args: list[str]) -> int:
    import torch
    from deepspeed.utils import safe_get_full_fp32_param
    from safetensors.torch import save_file

    from deltalm.model.model import DeltaLM

    variants = [a for a in args if "=" not in a]
    extra = [a for a in args if "=" in a]
    rank = discover()
    init_process_group(rank, timeout_s=60)
    try:
        for variant in variants:
            stage, precision = variant.split(":")
            run_dir = Path(out_dir) / f"z{stage}_{precision}"
            overrides = [
                f"run.run_dir={run_dir}",
                f"deepspeed.zero_stage={stage}",
                f"deepspeed.precision={precision}",
                *extra,
            ]
            config = build_config(DriverConfig, {"driver": CONFIG}, None, overrides, preset="driver")
            torch.manual_seed(config.run.seed)
            model = DeltaLM(config.model)
            batches = SyntheticBatches(
                config.data,
                config.model.vocab_size,
                micro_batch_size=config.batch.micro_batch_size,
                seed=config.run.seed,
                dp_rank=rank.rank,
                dp_world_size=rank.world_size,
            )
            trainer = Trainer(config, model, batches, rank)
            trainer.fit()
            reference = {}
            for name, param in trainer.engine.module.model.named_parameters():
                full = safe_get_full_fp32_param(param)  # collective under ZeRO-3
                reference[name] = full.detach().float().cpu().clone().contiguous()
            if rank.is_main:
                save_file(reference, str(run_dir / "reference_fp32.safetensors"))
            trainer.engine.destroy()  # DeepSpeed's own release of the engine (three engines run in this process)
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1], sys.argv[2:])
    # Every output is written and fsynced by now. DeepSpeed keeps gloo process groups alive in C++ after
    # destroy_process_group (deepspeed.initialize leaks one, a training step another: their threads outlive
    # main), and their teardown during interpreter exit aborted a finished run of this driver once in about
    # 20 test-suite runs ("terminate called without an active exception"). A finished driver skips it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
