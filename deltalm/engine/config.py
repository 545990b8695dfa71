"""The shared sections of the training config tree (pre-training and fine-tuning both build on them).

Every knob lives in exactly one section. YAML ``model: {preset: base, d_model: 512}`` selects the preset's
defaults and lets the other keys override them (:func:`resolve_model_section`). Batch accumulation is never a
knob: it is computed from ``global_batch_size / (micro_batch_size * world_size)`` and an indivisible global batch
is refused before any work (:meth:`BatchConfig.accumulation`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deltalm.config_tree import ConfigError, apply_overrides, from_dict, load_yaml, merge, validate_tree
from deltalm.model_config import DeltaLMConfig

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class RunConfig:
    run_dir: str = "runs/pretrain"
    seed: int = 1
    max_steps: int = 1000
    log_every: int = 1  # progress line every N optimizer steps (metrics.jsonl gets every step)

    def validate(self) -> None:
        if not self.run_dir:
            raise ConfigError("run.run_dir must not be empty")
        if self.max_steps < 1:
            raise ConfigError(f"run.max_steps must be >= 1, got {self.max_steps}")
        if self.log_every < 1:
            raise ConfigError(f"run.log_every must be >= 1, got {self.log_every}")
        if self.seed < 0:
            raise ConfigError(f"run.seed must be >= 0, got {self.seed}")


@dataclass
class InitConfig:
    """Where the weights come from: none (random), an HF XLM-R/InfoXLM dir, our pretrained dir, an official .pt."""

    kind: Literal["none", "xlmr", "pretrained", "official"] = "none"
    path: str = ""

    def validate(self) -> None:
        if self.kind != "none" and not self.path:
            raise ConfigError(f"init.path is required when init.kind is {self.kind!r}")
        if self.kind == "none" and self.path:
            raise ConfigError("init.path is set but init.kind is 'none'")


@dataclass
class OptimizerConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # 0 disables clipping
    fused: Literal["auto", "torch", "deepspeed", "none"] = "auto"

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optimizer.lr must be > 0, got {self.lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optimizer.betas must be in [0, 1), got {list(self.betas)}")
        if self.eps <= 0:
            raise ConfigError(f"optimizer.eps must be > 0, got {self.eps}")
        if self.weight_decay < 0:
            raise ConfigError(f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip < 0:
            raise ConfigError(f"optimizer.grad_clip must be >= 0, got {self.grad_clip}")


@dataclass
class ScheduleConfig:
    kind: Literal["linear", "inverse_sqrt", "constant"] = "linear"
    warmup_steps: int = 10_000
    total_steps: int = 0  # linear decay reaches 0 here; 0 = run.max_steps

    def validate(self) -> None:
        if self.warmup_steps < 0:
            raise ConfigError(f"schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.total_steps < 0:
            raise ConfigError(f"schedule.total_steps must be >= 0, got {self.total_steps}")
        if self.kind == "linear" and self.total_steps and self.total_steps <= self.warmup_steps:
            raise ConfigError(
                f"schedule.total_steps ({self.total_steps}) must exceed schedule.warmup_steps ({self.warmup_steps})"
            )


@dataclass
class BatchConfig:
    global_batch_size: int = 2048  # samples per optimizer step, all ranks and micro-batches together
    micro_batch_size: int = 8  # samples per rank per forward/backward

    def validate(self) -> None:
        for name in ("global_batch_size", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"batch.{name} must be >= 1, got {getattr(self, name)}")

    def accumulation(self, world_size: int) -> int:
        """Gradient-accumulation steps; refuses a global batch not divisible by micro x world."""
        per_pass = self.micro_batch_size * world_size
        if self.global_batch_size % per_pass:
            raise ConfigError(
                f"batch.global_batch_size ({self.global_batch_size}) is not divisible by "
                f"batch.micro_batch_size ({self.micro_batch_size}) x world size ({world_size})"
            )
        return self.global_batch_size // per_pass


@dataclass
class CheckpointConfig:
    every: int = 1000  # optimizer steps between checkpoints (0 = only at the end and on signals)
    keep_last: int = 3
    dir: str = ""  # default: <run_dir>/checkpoints
    resume: Literal["auto", "never", "require"] = "auto"
    save_final: bool = True

    def validate(self) -> None:
        if self.every < 0:
            raise ConfigError(f"checkpoint.every must be >= 0, got {self.every}")
        if self.keep_last < 2:
            raise ConfigError(f"checkpoint.keep_last must be >= 2, got {self.keep_last}")


@dataclass
class DeepSpeedSection:
    """DeepSpeed knobs; the template JSON holds the rest (buckets, loss scaling). Empty = the template's value."""

    config: str = "ds_configs/cpu.json"
    zero_stage: int | None = None
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    offload: bool | None = None
    timeout_s: int = 60  # process-group timeout: a dead or hung rank ends the job in this many seconds
    cpu_shm_comm: bool = False  # DeepSpeed's JIT-built shared-memory allreduce on CPU (first start ~60 s)

    def validate(self) -> None:
        if self.zero_stage is not None and self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"deepspeed.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.timeout_s < 1:
            raise ConfigError(f"deepspeed.timeout_s must be >= 1, got {self.timeout_s}")

    def template_path(self) -> Path:
        path = Path(self.config)
        return path if path.is_absolute() or path.exists() else REPO_ROOT / path


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    progress_every_s: float = 30.0  # also print a progress line at least this often (0 = only run.log_every)
    peak_tflops: float = 0.0  # device peak for MFU; 0 = from the device table

    def validate(self) -> None:
        if self.progress_every_s < 0 or self.peak_tflops < 0:
            raise ConfigError("logging.progress_every_s and logging.peak_tflops must be >= 0")


@dataclass
class NonfiniteConfig:
    max_consecutive: int = 5  # this many non-finite steps in a row abort the run
    inject_at_steps: list[int] = field(default_factory=list)  # testing aid: rank 0's loss becomes NaN there

    def validate(self) -> None:
        if self.max_consecutive < 1:
            raise ConfigError(f"nonfinite.max_consecutive must be >= 1, got {self.max_consecutive}")
        if any(step < 1 for step in self.inject_at_steps):
            raise ConfigError(f"nonfinite.inject_at_steps: steps count from 1, got {self.inject_at_steps}")


@dataclass
class TrainingConfig:
    """The sections every training entry point shares; stage configs subclass it and add their own."""

    run: RunConfig = field(default_factory=RunConfig)
    model: DeltaLMConfig = field(default_factory=DeltaLMConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    nonfinite: NonfiniteConfig = field(default_factory=NonfiniteConfig)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir) if self.checkpoint.dir else Path(self.run.run_dir) / "checkpoints"

    @property
    def total_steps(self) -> int:
        return self.schedule.total_steps or self.run.max_steps

    def validate(self) -> None:
        if not self.deepspeed.template_path().is_file():
            raise ConfigError(f"deepspeed.config: template not found: {self.deepspeed.config}")
        from deltalm.engine.ds_config import build_ds_config

        # the template's content and its combination with the deepspeed section, before any process starts
        # (the batch layout is checked for the real world size by the entry points)
        build_ds_config(self, world_size=1)


def resolve_model_section(data: dict) -> dict:
    """Turn ``model: {preset: NAME, <field>: value}`` into the full field dict of that preset."""
    section = data.get("model")
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"model: expected a mapping, got {section!r}")
    section = dict(section)
    preset = section.pop("preset", None)
    if preset is None:
        base = DeltaLMConfig()
    elif isinstance(preset, str):
        base = DeltaLMConfig.preset(preset)
    else:
        raise ConfigError(f"model.preset: expected a preset name, got {preset!r}")
    full = merge(dataclasses.asdict(base), section)
    return {**data, "model": full}


def build_config(
    cls: type, presets: dict[str, dict], path: str | None, overrides: list[str], preset: str | None = None
):
    """YAML file (optional top-level ``preset:``) + ``--set`` overrides -> validated ``cls`` instance.

    Order: the code preset named by ``preset`` (CLI) or the file's ``preset:`` key, then the file, then --set.
    """
    data = load_yaml(path) if path else {}
    name = preset or data.pop("preset", None)
    data.pop("preset", None)
    if name is not None:
        if name not in presets:
            raise ConfigError(f"unknown preset {name!r} (known: {', '.join(sorted(presets))})")
        data = merge(copy.deepcopy(presets[name]), data)  # --set must never edit the preset itself
    data = apply_overrides(data, overrides)
    config = from_dict(cls, resolve_model_section(data))
    validate_tree(config)
    return config
