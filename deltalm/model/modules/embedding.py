"""Token + learned position embeddings (+ optional embedding LayerNorm), XLM-R style.

Positions follow the HF XLM-R / fairseq formula: ``id = cumsum(non-pad) * non-pad + pad_id``, so pads get
``pad_id`` and the first real token ``pad_id + 1``; the table has ``max_positions`` rows (514 for XLM-R).
No embedding scaling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deltalm.model.modules.layer_norm import LayerNorm


def make_positions(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Position ids of ``tokens`` [B, L]: pads → ``pad_id``, real tokens → ``pad_id + 1, pad_id + 2, ...``."""
    mask = tokens.ne(pad_id).long()
    return torch.cumsum(mask, dim=1) * mask + pad_id


class Embeddings(nn.Module):
    """The one embedding shared by encoder, decoder and the tied output projection."""

    def __init__(
        self,
        vocab_rows: int,
        d_model: int,
        max_positions: int,
        pad_id: int,
        layer_norm: bool,
        eps: float = 1e-5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.max_positions = max_positions
        self.embed_tokens = nn.Embedding(vocab_rows, d_model, padding_idx=pad_id)
        self.embed_positions = nn.Embedding(max_positions, d_model, padding_idx=pad_id)
        self.emb_layer_norm = LayerNorm(d_model, eps) if layer_norm else None
        self.dropout = dropout

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        if positions is None:
            positions = make_positions(tokens, self.pad_id)
        # cheap bound first (no device sync): positions never exceed pad_id + length
        if self.pad_id + tokens.size(1) >= self.max_positions and int(positions.max()) >= self.max_positions:
            raise ValueError(
                f"sequence of {int(positions.max()) - self.pad_id} tokens is longer than the position table "
                f"allows ({self.max_positions - self.pad_id - 1})"
            )
        x = self.embed_tokens(tokens) + self.embed_positions(positions)
        if self.emb_layer_norm is not None:
            x = self.emb_layer_norm(x)
        return F.dropout(x, self.dropout, self.training)
