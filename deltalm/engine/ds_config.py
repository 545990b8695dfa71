"""Build the DeepSpeed config dict from a ``ds_configs/*.json`` template and the training config.

One way to choose the ZeRO stage, the precision and optimizer offload: the config keys
``deepspeed.zero_stage``, ``deepspeed.precision`` and ``deepspeed.offload``. Templates hold only DeepSpeed's
tuning knobs (communication buckets, ZeRO-3 prefetch, the fp16 loss-scaling settings, logging): ``cpu.json``
(none) and ``gpu.json``. Whatever the training config owns (batch sizes, clipping, the optimizer, the schedule,
the stage, the precision, offload) is refused in a template, so no knob lives in two places.
``train_batch_size = micro x accumulation x world`` is computed here, once.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from deltalm.config_tree import ConfigError
from deltalm.engine.config import TrainingConfig

# Keys the training config owns; a template stating them would be a second source of truth.
OWNED_KEYS = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "optimizer",
    "scheduler",
    "bfloat16",
)
OWNED_ZERO_KEYS = ("stage", "offload_optimizer", "offload_param")  # deepspeed.zero_stage / deepspeed.offload
BUCKET_KEYS = ("overlap_comm", "contiguous_gradients", "reduce_bucket_size", "allgather_bucket_size")


def load_template(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"deepspeed.config: template not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"deepspeed.config: {path} is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"deepspeed.config: {path} must hold a JSON object")
    stated = [k for k in OWNED_KEYS if k in data]
    zero = data.get("zero_optimization", {})
    stated += [f"zero_optimization.{k}" for k in OWNED_ZERO_KEYS if isinstance(zero, dict) and k in zero]
    stated += [
        f"{k}.enabled" for k in ("bf16", "fp16") if isinstance(data.get(k), dict) and "enabled" in data[k]
    ]
    stated += [k for k in ("bf16", "bfloat16") if k in data and not isinstance(data[k], dict)]
    if stated:
        raise ConfigError(f"deepspeed.config: {path} states {stated[0]!r}; it belongs to the training config")
    return data


def precision_of(ds: dict) -> str:
    if ds.get("bf16", {}).get("enabled"):
        return "bf16"
    if ds.get("fp16", {}).get("enabled"):
        return "fp16"
    return "fp32"


def zero_stage_of(ds: dict) -> int:
    return int(ds.get("zero_optimization", {}).get("stage", 0))


def uses_basic_optimizer(ds: dict) -> bool:
    """ZeRO-0 fp32: DeepSpeed steps the client optimizer directly (our guard then clips and measures the norm)."""
    return zero_stage_of(ds) == 0 and precision_of(ds) == "fp32"


def build_ds_config(config: TrainingConfig, world_size: int, *, load_universal: bool = False) -> dict:
    """The DeepSpeed dict for ``world_size`` ranks; raises ConfigError on an impossible batch layout."""
    section = config.deepspeed
    ds = copy.deepcopy(load_template(section.template_path()))
    accumulation = config.batch.gradient_accumulation_steps(world_size)
    ds["train_micro_batch_size_per_gpu"] = config.batch.micro_batch_size
    ds["gradient_accumulation_steps"] = accumulation
    ds["train_batch_size"] = config.batch.micro_batch_size * accumulation * world_size
    zero = ds.setdefault("zero_optimization", {})
    stage = section.zero_stage
    zero["stage"] = stage
    if stage < 3:
        for key in [k for k in zero if k.startswith("stage3_")]:
            zero.pop(key)
    else:
        zero.pop("allgather_bucket_size", None)  # ZeRO-3 gathers by stage3_prefetch_bucket_size
    if stage == 0:
        for key in BUCKET_KEYS:
            zero.pop(key, None)
    loss_scaling = ds.pop("fp16", {})
    if section.precision == "bf16":
        ds["bf16"] = {"enabled": True}
    elif section.precision == "fp16":
        ds["fp16"] = {**loss_scaling, "enabled": True}  # the template's loss-scaling knobs, else DeepSpeed's
    if section.offload:
        if stage < 1:
            raise ConfigError("deepspeed.offload needs deepspeed.zero_stage >= 1")
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    # ZeRO-0 fp32 steps our optimizer directly: the non-finite guard clips there (it must see the raw norm).
    ds["gradient_clipping"] = 0.0 if uses_basic_optimizer(ds) else config.optimizer.grad_clip
    ds.setdefault("steps_per_print", 10**9)
    if stage > 0:  # our optimizer is a supported one (Adam/AdamW) with the non-finite guard mixed in
        ds["zero_allow_untested_optimizer"] = True
    if load_universal:
        ds["checkpoint"] = {**ds.get("checkpoint", {}), "load_universal": True}
    return ds
