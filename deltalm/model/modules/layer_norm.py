"""LayerNorm computed in fp32 (safe under bf16/fp16 weights); NVIDIA apex's fused kernel when importable.

PyPI's ``apex`` is an unrelated package: only NVIDIA apex exposes
``apex.normalization.fused_layer_norm.fused_layer_norm_affine``, so detection looks for that function and
falls back to torch when it is absent. The fused kernel is only used for CUDA tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

try:  # NVIDIA apex, built from source on clusters; never a PyPI dependency
    from apex.normalization.fused_layer_norm import fused_layer_norm_affine as _apex_layer_norm
except Exception:  # ImportError, or a broken/unrelated ``apex`` install
    _apex_layer_norm = None


def apex_available() -> bool:
    """True when NVIDIA apex's fused LayerNorm could be imported."""
    return _apex_layer_norm is not None


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameter names) that normalizes in fp32 and returns the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-5, use_apex: bool = True) -> None:
        super().__init__(dim, eps=eps)
        self.use_apex = use_apex

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_apex and _apex_layer_norm is not None and x.is_cuda:
            return _apex_layer_norm(
                x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.normalized_shape, self.eps
            )
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)
