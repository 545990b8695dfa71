"""``PretrainConfig``: the engine's shared sections (deltalm/engine/config.py) plus ``data`` (the loader's).

Presets in code (``--preset NAME`` or a top-level ``preset:`` in the YAML; the file and ``--set`` override):

- ``paper``: the DeltaLM paper's run: base model initialized from an HF InfoXLM directory, Adam
  β=(0.9, 0.999), linear warm-up 10,000 steps then linear decay to 0 at 600,000, 2,048 samples a step,
  gradient norm clipped to 1.0, input length 512, bf16 ZeRO-1 (``ds_configs/gpu.json``). The paper does not state the peak learning
  rate; we use 1e-4 (fairseq's and mT6's usual value for a pretrained-encoder init).
- ``tiny``: the ``tiny`` model preset on the bundled sample corpus, CPU-sized (the demo and the tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deltalm.checkpoints.model_init import position_limit
from deltalm.engine.config import TrainingConfig
from pretrain.data_config import PretrainDataConfig


@dataclass
class PretrainConfig(TrainingConfig):
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)

    def validate(self) -> None:
        """Cross-section limits: every objective's encoder and decoder lengths fit the position table."""
        super().validate()
        limit = position_limit(self.model, self.init)
        if limit is not None:
            self.data.check_lengths(*limit)


PRESETS: dict[str, dict] = {
    "paper": {
        "run": {"run_dir": "runs/pretrain-paper", "max_steps": 600_000, "log_every": 100},
        # The fast path: SDPA attention, fused QKV, chunked loss (model defaults), vocabulary rows
        # padded to a multiple of 64 for tensor-core GEMMs, torch fused AdamW on CUDA (optimizer.fused=auto),
        # bf16 with fp32 master weights, no activation checkpointing (only where memory forces it).
        "model": {"preset": "base", "pad_vocab_to_multiple": 64},
        "init": {"kind": "xlmr", "path": "checkpoints/infoxlm-base"},
        # lr 1e-4, betas (0.9, 0.999), weight decay 0.01, clipping 1.0, linear warm-up 10,000 steps then decay
        # to 0 at run.max_steps: the section defaults (deltalm/engine/config.py), stated once there
        "optimizer": {"eps": 1e-6},
        "batch": {"global_batch_size": 2048, "micro_batch_size": 16},
        "checkpoint": {"every": 2000, "keep_last": 3},
        "deepspeed": {
            "config": "ds_configs/gpu.json",
            "zero_stage": 1,
            "precision": "bf16",
            "timeout_s": 600,
        },
        "data": {"input_length": 512, "translation_ratio": 0.5},
    },
    "tiny": {
        "run": {"run_dir": "runs/pretrain-tiny", "max_steps": 40, "log_every": 5},
        "model": {"preset": "tiny", "max_positions": 130},  # 128-token inputs
        "optimizer": {"lr": 1e-3},
        "schedule": {"kind": "linear", "warmup_steps": 5},
        "batch": {"global_batch_size": 8, "micro_batch_size": 4},
        "checkpoint": {"every": 20, "keep_last": 2},
        "deepspeed": {"config": "ds_configs/cpu.json"},
        "logging": {"tensorboard": True},
        "data": {"input_length": 64, "translation_input_length": 64, "prefetch": 0},
    },
}
