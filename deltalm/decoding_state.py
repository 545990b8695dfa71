"""Incremental decoding state: the protocol between :class:`deltalm.model.DeltaLM` and beam search.

Usage::

    state = model.start_decoding(encoder_out, encoder_padding_mask)  # cross-attention K/V computed once
    logits, state = model.decode_step(tokens_last, state)             # fp32 [B, padded_vocab], pads -inf
    state = state.reorder(index)                                      # select / expand / follow hypotheses

``step`` counts the tokens decoded so far; the next token gets position ``pad_id + 1 + step`` (the full
forward's position formula for non-pad tokens), so ``decode_step`` on token t reproduces the full forward's
logits at t.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

KV = tuple[torch.Tensor, torch.Tensor]  # key, value: [B, H, L, head_dim] each


@dataclass
class DecodingState:
    """Per-sequence caches of every decoder block.

    ``cross_kv[j]``: block j's cross-attention keys/values of the source (fixed);
    ``self_kv[j]``: block j's self-attention keys/values of the decoded prefix (grows by one per step);
    ``encoder_padding_mask`` [B, S]: True = real source token.
    """

    cross_kv: list[KV]
    encoder_padding_mask: torch.Tensor
    self_kv: list[KV | None] = field(default_factory=list)
    step: int = 0

    @property
    def batch_size(self) -> int:
        return self.encoder_padding_mask.size(0)

    def reorder(self, index: torch.Tensor) -> DecodingState:
        """A new state whose row i is this state's row ``index[i]`` (repeats allowed: B → B·beam)."""
        if index.dtype not in (torch.int64, torch.int32) or index.dim() != 1:
            raise ValueError(
                f"reorder index must be a 1-D integer tensor, got {index.dtype} {tuple(index.shape)}"
            )
        index = index.to(self.encoder_padding_mask.device)

        def pick(kv: KV | None) -> KV | None:
            return None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))

        return DecodingState(
            cross_kv=[pick(kv) for kv in self.cross_kv],
            encoder_padding_mask=self.encoder_padding_mask.index_select(0, index),
            self_kv=[pick(kv) for kv in self.self_kv],
            step=self.step,
        )

    def state_dict(self) -> dict:
        """Tensors and step (e.g. to checkpoint a long generation); restore with :meth:`load_state_dict`."""
        out: dict = {"step": self.step, "encoder_padding_mask": self.encoder_padding_mask}
        for j, (k, v) in enumerate(self.cross_kv):
            out[f"cross.{j}.k"], out[f"cross.{j}.v"] = k, v
        for j, kv in enumerate(self.self_kv):
            if kv is not None:
                out[f"self.{j}.k"], out[f"self.{j}.v"] = kv
        return out

    def load_state_dict(self, state: dict) -> None:
        blocks = len(self.cross_kv)
        self.step = int(state["step"])
        self.encoder_padding_mask = state["encoder_padding_mask"]
        self.cross_kv = [(state[f"cross.{j}.k"], state[f"cross.{j}.v"]) for j in range(blocks)]
        self.self_kv = [
            (state[f"self.{j}.k"], state[f"self.{j}.v"]) if f"self.{j}.k" in state else None
            for j in range(blocks)
        ]
