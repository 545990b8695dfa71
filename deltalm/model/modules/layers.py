"""The two transformer layers of DeltaLM, post-LN, parameter names as in the released checkpoints.

- :class:`EncoderLayer`: self-attention → FFN (XLM-R layer).
- :class:`DecoderBlock`: the *interleaved* block, self-attention → FFN-1 → cross-attention → FFN-2, every
  sub-layer ``x = LN(x + dropout(sublayer(x)))``. Block j is initialized from XLM-R layers 2j and 2j+1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deltalm.model.modules.attention import MultiheadAttention
from deltalm.model.modules.feed_forward import FeedForward
from deltalm.model.modules.layer_norm import LayerNorm


def _attention(c) -> MultiheadAttention:
    return MultiheadAttention(
        c.d_model, c.heads, c.attention_dropout, c.fused_qkv, c.attention_backend, c.cpu_packed_linear
    )


def _feed_forward(c) -> FeedForward:
    return FeedForward(c.d_model, c.ffn, c.activation, c.activation_dropout, c.cpu_packed_linear)


class EncoderLayer(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        c = config
        self.dropout = c.dropout
        self.self_attn = _attention(c)
        self.self_attn_layer_norm = LayerNorm(c.d_model, c.layer_norm_eps)
        self.ffn = _feed_forward(c)
        self.final_layer_norm = LayerNorm(c.d_model, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.self_attn_layer_norm(
            x + F.dropout(self.self_attn.self_attention(x, key_mask), self.dropout, self.training)
        )
        return self.final_layer_norm(x + F.dropout(self.ffn(x), self.dropout, self.training))

    def forward_unpadded(
        self, x: torch.Tensor, rows: torch.Tensor, shape: tuple[int, int], key_mask: torch.Tensor
    ) -> torch.Tensor:
        """Inference on the real tokens only (x [N, d] = rows ``rows`` of the padded batch); see ``DeltaLM.encode``."""
        x = self.self_attn_layer_norm(x + self.self_attn.unpadded_self_attention(x, rows, shape, key_mask))
        return self.final_layer_norm(x + self.ffn(x))


class DecoderBlock(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        c = config
        self.dropout = c.dropout
        self.self_attn = _attention(c)
        self.self_attn_layer_norm = LayerNorm(c.d_model, c.layer_norm_eps)
        self.ffn_1 = _feed_forward(c)
        self.ffn_layer_norm = LayerNorm(c.d_model, c.layer_norm_eps)
        self.encoder_attn = _attention(c)
        self.encoder_attn_layer_norm = LayerNorm(c.d_model, c.layer_norm_eps)
        self.ffn_2 = _feed_forward(c)
        self.final_layer_norm = LayerNorm(c.d_model, c.layer_norm_eps)

    def _residual(self, x: torch.Tensor, y: torch.Tensor, norm: LayerNorm) -> torch.Tensor:
        return norm(x + F.dropout(y, self.dropout, self.training))

    def _after_self_attention(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None,
        memory_mask: torch.Tensor | None,
        cross_kv: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        x = self._residual(x, self.ffn_1(x), self.ffn_layer_norm)
        x = self._residual(
            x,
            self.encoder_attn.cross_attention(x, memory, memory_mask, cross_kv),
            self.encoder_attn_layer_norm,
        )
        return self._residual(x, self.ffn_2(x), self.final_layer_norm)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Full (teacher-forced) pass: causal self-attention over x [B, T, d]."""
        x = self._residual(x, self.self_attn.self_attention(x, causal=True), self.self_attn_layer_norm)
        return self._after_self_attention(x, memory, memory_mask, None)

    def step(
        self,
        x: torch.Tensor,
        self_cache: tuple[torch.Tensor, torch.Tensor],
        position: int,
        cross_kv: tuple[torch.Tensor, torch.Tensor],
        cross_mask: torch.Tensor | None,
        group: int,
    ) -> torch.Tensor:
        """One incremental step on x [N·group, 1, d] (see :class:`deltalm.model.decoding_state.DecodingState`).

        ``self_cache``: this block's key/value buffers [capacity, R, H, hd], written at ``position``;
        ``cross_kv`` [N, H, S, hd] with ``cross_mask`` [N, 1, 1, S]: ``group`` consecutive rows per source row.
        """
        x = self._residual(
            x, self.self_attn.cached_self_attention(x, self_cache, position), self.self_attn_layer_norm
        )
        x = self._residual(x, self.ffn_1(x), self.ffn_layer_norm)
        y = self.encoder_attn.grouped_cross_attention(x, cross_kv, cross_mask, group)
        x = self._residual(x, y, self.encoder_attn_layer_norm)
        return self._residual(x, self.ffn_2(x), self.final_layer_norm)
