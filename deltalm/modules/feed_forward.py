"""Position-wise feed-forward sub-layer (fc1 → activation → dropout → fc2); parameter names as in fairseq."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    def __init__(
        self, d_model: int, ffn: int, activation: str = "gelu", activation_dropout: float = 0.0
    ) -> None:
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ValueError(f"unknown activation {activation!r} (known: gelu, relu)")
        self.fc1 = nn.Linear(d_model, ffn)
        self.fc2 = nn.Linear(ffn, d_model)
        self.activation = activation
        self.activation_dropout = activation_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = F.gelu(h) if self.activation == "gelu" else F.relu(h)  # exact (erf) GELU, as XLM-R
        h = F.dropout(h, self.activation_dropout, self.training)
        return self.fc2(h)
