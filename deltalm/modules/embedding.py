"""Token + learned position embeddings (+ optional embedding LayerNorm), XLM-R style.

Positions follow the HF XLM-R / fairseq formula: ``id = cumsum(non-pad) * non-pad + pad_id``, so pads get
``pad_id`` and the first real token ``pad_id + 1``; the table has ``max_positions`` rows (514 for XLM-R).
No embedding scaling. The decoder uses the same position table and LayerNorm unless the model keeps its own
(:class:`SideEmbedding`, ``DeltaLMConfig.separate_decoder_positions``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deltalm.modules.layer_norm import LayerNorm


def make_positions(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Position ids of ``tokens`` [B, L]: pads → ``pad_id``, real tokens → ``pad_id + 1, pad_id + 2, ...``."""
    mask = tokens.ne(pad_id).long()
    return torch.cumsum(mask, dim=1) * mask + pad_id


class SideEmbedding(nn.Module):
    """A decoder's own position table and embedding LayerNorm (the official fairseq layout keeps one per side;
    the token embedding stays the shared one of :class:`Embeddings`)."""

    def __init__(
        self, d_model: int, max_positions: int, pad_id: int, layer_norm: bool, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.embed_positions = nn.Embedding(max_positions, d_model, padding_idx=pad_id)
        self.emb_layer_norm = LayerNorm(d_model, eps) if layer_norm else None


class Embeddings(nn.Module):
    """The token embedding shared by encoder, decoder and the tied output projection, with the encoder's (or
    the shared) position table and embedding LayerNorm; ``side`` in :meth:`forward` swaps in a decoder's own."""

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

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor | None = None, side: SideEmbedding | None = None
    ) -> torch.Tensor:
        if positions is None:
            positions = make_positions(tokens, self.pad_id)
        # cheap bound first (no device sync): positions never exceed pad_id + length
        if self.pad_id + tokens.size(1) >= self.max_positions and int(positions.max()) >= self.max_positions:
            raise ValueError(
                f"sequence of {int(positions.max()) - self.pad_id} tokens is longer than the position table "
                f"allows ({self.max_positions - self.pad_id - 1})"
            )
        table, norm = (
            (self.embed_positions, self.emb_layer_norm)
            if side is None
            else (side.embed_positions, side.emb_layer_norm)
        )
        x = self.embed_tokens(tokens) + table(positions)
        if norm is not None:
            x = norm(x)
        return F.dropout(x, self.dropout, self.training)
