"""Multi-head attention on torch SDPA (flash / memory-efficient kernels on GPU), with a KV cache.

Parameter names follow fairseq (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) so checkpoint adapters map
them one to one. With ``fused_qkv`` the three input projections of self-attention run as one matmul over the
concatenated weights (one GEMM instead of three; same parameters, same results up to float rounding). The
concatenation copies the weights, which costs as much as the GEMM itself for a handful of tokens, so small
inputs (incremental decoding steps) use the three separate projections, and so does CPU inference on
prepacked weights (:mod:`deltalm.model.modules.linear`), where three packed GEMMs beat one unpacked one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from deltalm.model.modules.linear import Linear


def _keep_some_key(key_mask: torch.Tensor) -> torch.Tensor:
    """A row with no real key would give NaN from softmax: let such (all-pad) rows attend everywhere."""
    return key_mask | ~key_mask.any(dim=-1, keepdim=True)


FUSE_MIN_TOKENS = 128  # below this many query tokens, the weight concatenation outweighs the saved launches


class MultiheadAttention(nn.Module):
    def __init__(
        self,
        d_model: int,
        heads: int,
        dropout: float = 0.0,
        fused_qkv: bool = True,
        backend: str = "sdpa",
        packed: bool = True,
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        if backend not in ("sdpa", "math"):
            raise ValueError(f"unknown attention backend {backend!r} (known: sdpa, math)")
        self.d_model = d_model
        self.heads = heads
        self.head_dim = d_model // heads
        self.dropout = dropout
        self.fused_qkv = fused_qkv
        self.backend = backend
        self.q_proj = Linear(d_model, d_model, packed=packed)
        self.k_proj = Linear(d_model, d_model, packed=packed)
        self.v_proj = Linear(d_model, d_model, packed=packed)
        self.out_proj = Linear(d_model, d_model, packed=packed)

    # ------------------------------------------------------------------ projections
    def _fuse(self, x: torch.Tensor) -> bool:
        """One GEMM over concatenated weights: for many tokens, unless the packed weights serve them better."""
        return self.fused_qkv and x.shape[0] * x.shape[1] >= FUSE_MIN_TOKENS and not self.q_proj.packs(x)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value of ``x`` [B, T, d] as [B, H, T, hd] each."""
        if self._fuse(x):
            w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
            b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
            q, k, v = F.linear(x, w, b).split(self.d_model, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return self._split(q), self._split(k), self._split(v)

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key and value of ``memory`` [B, S, d] (cross-attention), as [B, H, S, hd]; computed once per source."""
        if self._fuse(memory):
            w = torch.cat([self.k_proj.weight, self.v_proj.weight])
            b = torch.cat([self.k_proj.bias, self.v_proj.bias])
            k, v = F.linear(memory, w, b).split(self.d_model, dim=-1)
        else:
            k, v = self.k_proj(memory), self.v_proj(memory)
        return self._split(k), self._split(v)

    # ------------------------------------------------------------------ attention core
    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Attention of q [B, H, T, hd] over k/v [B, H, S, hd] → output projection [B, T, d].

        ``key_mask`` [B, S] bool, True = real key (may attend). ``causal`` masks future keys (T == S).
        """
        if causal and key_mask is not None:  # the decoder's self-attention needs only the causal mask
            raise ValueError("causal attention with a key padding mask is not supported")
        mask = None
        if key_mask is not None:
            mask = _keep_some_key(key_mask)[:, None, None, :]
        out = self._core(q, k, v, mask, causal)
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.d_model))

    def _core(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        """Attention weights applied to v: [B, H, T, hd] (mask broadcastable to [B, H, T, S], True = keep)."""
        p = self.dropout if self.training else 0.0
        if self.backend == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        return self._math_attention(q, k, v, mask, causal, p)

    def _math_attention(self, q, k, v, mask, causal, p) -> torch.Tensor:
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(self.head_dim)
        if causal:
            t, s = scores.shape[-2:]
            future = torch.ones(t, s, dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = F.dropout(torch.softmax(scores, dim=-1), p, self.training).to(v.dtype)
        return torch.matmul(probs, v)

    # ------------------------------------------------------------------ entry points
    def self_attention(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        q, k, v = self.project_qkv(x)
        return self.attend(q, k, v, key_mask, causal)

    def unpadded_self_attention(
        self, x: torch.Tensor, rows: torch.Tensor, shape: tuple[int, int], key_mask: torch.Tensor
    ) -> torch.Tensor:
        """Self-attention of the real tokens only: x [N, d] are rows ``rows`` of a padded [B·S, d] batch.

        The projections run on the N real rows; only the attention core sees the padded [B, H, S, hd] layout
        (zeros at the pads, which ``key_mask`` [B, S] masks as keys). Returns [N, d].
        """
        batch, length = shape

        def padded(t: torch.Tensor) -> torch.Tensor:
            full = t.new_zeros(batch * length, self.d_model).index_copy_(0, rows, t)
            return full.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = (padded(proj(x)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = self._core(q, k, v, _keep_some_key(key_mask)[:, None, None, :], False)
        out = out.transpose(1, 2).reshape(batch * length, self.d_model).index_select(0, rows)
        return self.out_proj(out)

    def cached_self_attention(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], step: int
    ) -> torch.Tensor:
        """One incremental step: x [R, 1, d] attends to the cached positions ``< step`` plus itself.

        ``cache``: key and value buffers [capacity, R, H, hd] (position first); this step's key and value are
        projected straight into position ``step``.
        """
        rows = x.size(0)
        x2 = x.view(rows, self.d_model)
        key_buf, value_buf = cache
        for proj, buf in ((self.k_proj, key_buf), (self.v_proj, value_buf)):
            slot = buf[step].view(rows, self.d_model)
            if torch.is_grad_enabled() or proj.packs(x2):  # out= records no autograd history / no packed op
                slot.copy_(proj(x2))
            else:
                torch.addmm(proj.bias, x2, proj.weight.t(), out=slot)
        q = self.q_proj(x2).view(rows, self.heads, 1, self.head_dim)
        k = key_buf[: step + 1].permute(1, 2, 0, 3)  # [R, H, step + 1, hd]
        v = value_buf[: step + 1].permute(1, 2, 0, 3)
        out = self._core(q, k, v, None, False)
        return self.out_proj(out.view(rows, 1, self.d_model))

    def grouped_cross_attention(
        self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None, group: int
    ) -> torch.Tensor:
        """x [N·group, 1, d]: the ``group`` consecutive rows of source row n are its queries over ``kv[n]``.

        ``kv``: [N, H, S, hd] each; ``mask`` [N, 1, 1, S] bool (True = attend) or None. Same result as
        attending row by row against repeated keys/values, without repeating them.
        """
        rows = x.size(0)
        n = kv[0].size(0)
        q = self.q_proj(x).view(n, group, self.heads, self.head_dim).transpose(1, 2)  # [N, H, group, hd]
        out = self._core(q, kv[0], kv[1], mask, False)  # [N, H, group, hd]
        return self.out_proj(out.transpose(1, 2).reshape(rows, 1, self.d_model))

    def cross_attention(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x [B, T, d] attends to ``memory`` [B, S, d] (or to precomputed ``kv``)."""
        q = self._split(self.q_proj(x))
        k, v = kv if kv is not None else self.project_kv(memory)
        return self.attend(q, k, v, key_mask)
