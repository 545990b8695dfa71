"""The non-finite guard and the optimizer factory, on plain torch (no DeepSpeed)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from deltalm.engine.config import OptimizerConfig
from deltalm.engine.optimizer import build_optimizer, optimizer_kind, parameter_groups


def model_and_optimizer(clip: float = 0.0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    config = OptimizerConfig(lr=0.1, grad_clip=clip)
    optimizer = build_optimizer(
        model, config, device_type="cpu", offload=False, partitioned=False, clip_here=clip > 0
    )
    return model, optimizer


def test_nan_gradient_leaves_weights_and_moments_untouched():
    model, optimizer = model_and_optimizer()
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(2, 4)).sum().backward()
    next(model.parameters()).grad[0, 0] = float("nan")
    optimizer.step()
    assert optimizer.last_skipped and math.isnan(optimizer.last_norm)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not optimizer.state  # Adam moments never created


def test_force_skip_and_normal_step():
    model, optimizer = model_and_optimizer()
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(2, 4)).sum().backward()
    optimizer.force_skip = True
    optimizer.step()
    assert optimizer.last_skipped and all(
        torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )
    optimizer.force_skip = False
    optimizer.step()
    assert not optimizer.last_skipped
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_guard_clips_to_the_configured_norm():
    model, optimizer = model_and_optimizer(clip=0.01)
    model(torch.randn(8, 4) * 10).sum().backward()
    expected = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()))
    optimizer.step()
    assert (
        optimizer.last_norm == pytest.approx(expected, rel=1e-6) and expected > 0.01
    )  # fp32 per-tensor norms
    clipped = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()))
    assert abs(clipped - 0.01) < 1e-6


def test_no_weight_decay_on_vectors_and_kind_selection():
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    decay, no_decay = parameter_groups(model, 0.01)
    assert [p.ndim for p in decay["params"]] == [2] and no_decay["weight_decay"] == 0.0
    assert optimizer_kind(OptimizerConfig(), "cpu", offload=False) == "torch"
    assert optimizer_kind(OptimizerConfig(), "cuda", offload=False) == "torch_fused"
    assert optimizer_kind(OptimizerConfig(fused="deepspeed"), "cuda", offload=False) == "ds_fused"
    assert optimizer_kind(OptimizerConfig(), "cuda", offload=True) == "cpu_adam"
