"""Adam/AdamW for the engine: torch fused AdamW or DeepSpeed FusedAdam on GPU, DeepSpeedCPUAdam with ZeRO-Offload,
plain torch AdamW on CPU. Every choice carries the non-finite guard (:mod:`deltalm.engine.nonfinite`).

Weight decay applies to matrices only (biases, LayerNorm and other 1-d parameters get none).
"""

from __future__ import annotations

import torch
from torch import nn

from deltalm.engine.config import OptimizerConfig
from deltalm.engine.nonfinite import guarded


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def optimizer_kind(config: OptimizerConfig, device_type: str, offload: bool) -> str:
    """Which implementation runs: cpu_adam | ds_fused | torch_fused | torch."""
    if offload:
        return "cpu_adam"
    if device_type != "cuda" or config.fused == "none":
        return "torch"
    if config.fused == "deepspeed":
        return "ds_fused"
    return (
        "torch_fused"  # auto and torch: torch's fused AdamW is as fast as apex/DeepSpeed's and needs no build
    )


def build_optimizer(
    model: nn.Module,
    config: OptimizerConfig,
    *,
    device_type: str,
    offload: bool,
    partitioned: bool,
    clip_here: bool,
) -> torch.optim.Optimizer:
    """A guarded AdamW over ``model``'s parameters; ``clip_here``: the guard clips (ZeRO-0 fp32 path)."""
    groups = parameter_groups(model, config.weight_decay)
    common = dict(lr=config.lr, betas=tuple(config.betas), eps=config.eps)
    kind = optimizer_kind(config, device_type, offload)
    if kind == "cpu_adam":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = guarded(DeepSpeedCPUAdam)(groups, adamw_mode=True, **common)
    elif kind == "ds_fused":
        from deepspeed.ops.adam import FusedAdam

        optimizer = guarded(FusedAdam)(groups, adam_w_mode=True, **common)
    elif kind == "torch_fused":
        optimizer = guarded(torch.optim.AdamW)(groups, fused=True, **common)
    else:
        optimizer = guarded(torch.optim.AdamW)(groups, foreach=False, **common)
    optimizer.configure_guard(partitioned=partitioned, clip_norm=config.grad_clip if clip_here else 0.0)
    return optimizer


__all__ = ["build_optimizer", "optimizer_kind", "parameter_groups"]
