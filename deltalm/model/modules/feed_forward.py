"""Position-wise feed-forward sub-layer (fc1 → activation → dropout → fc2); parameter names as in fairseq."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deltalm.model.modules.linear import Linear


class FeedForward(nn.Module):
    def __init__(
        self,
        d_model: int,
        ffn: int,
        activation: str = "gelu",
        activation_dropout: float = 0.0,
        packed: bool = True,
    ) -> None:
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ValueError(f"unknown activation {activation!r} (known: gelu, relu)")
        self.fc1 = Linear(d_model, ffn, packed=packed)
        self.fc2 = Linear(ffn, d_model, packed=packed)
        self.activation = activation
        self.activation_dropout = activation_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x, activation=self.activation)  # exact (erf) GELU, as XLM-R; fused on the packed path
        h = F.dropout(h, self.activation_dropout, self.training)
        return self.fc2(h)
