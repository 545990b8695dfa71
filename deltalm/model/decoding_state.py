"""Incremental decoding state: the protocol between :class:`deltalm.model.model.DeltaLM` and beam search.

Usage::

    state = model.start_decoding(encoder_out, encoder_padding_mask)  # cross-attention K/V computed once
    logits, state = model.decode_step(tokens_last, state)             # fp32 [B, padded_vocab], pads -inf
    state = state.reorder(index)                                      # select / expand / follow hypotheses

``step`` counts the tokens decoded so far; the next token gets position ``pad_id + 1 + step`` (the full
forward's position formula for non-pad tokens), so ``decode_step`` on token t reproduces the full forward's
logits at t.

Layout (chosen for beam search, where every step reorders the rows):

- The cross-attention keys/values stay **per source row** ([N, H, S, hd]); decoding rows are grouped
  sentence-major, ``group`` consecutive rows per source row (the beams of a sentence). Cross-attention then
  runs the ``group`` rows of a source row as that row's queries, so following hypotheses never gathers the
  cross keys/values; only a reorder that drops or repeats source rows in another pattern gathers them (once).
- The self-attention keys/values live in a preallocated buffer per block, ``[capacity, R, H, hd]`` (position
  first), written in place at ``step``; a reorder gathers only the filled positions, as one contiguous slab.

``decode_step`` writes position ``step`` of the buffers it shares with the state it returns: a state stays
valid for its own positions ``< step``, so decoding twice from the same state gives the same result.
"""

from __future__ import annotations

import torch

from deltalm.model.modules.attention import _keep_some_key

KV = tuple[torch.Tensor, torch.Tensor]  # key, value: [B, H, L, head_dim] each
MIN_CAPACITY = 16  # self-attention positions allocated at first; the buffer doubles when full


def _grouping(source: list[int]) -> tuple[list[int], int] | None:
    """(distinct source rows, run length) when ``source`` is ascending runs of one common length, else None."""
    if not source:
        return None
    first_change = next((i for i in range(1, len(source)) if source[i] != source[0]), len(source))
    group = first_change
    if len(source) % group:
        return None
    starts = source[::group]
    if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
        return None
    if any(source[i] != starts[i // group] for i in range(len(source))):
        return None
    return starts, group


class DecodingState:
    """Per-sequence caches of every decoder block.

    ``cross_kv[j]``: block j's cross-attention keys/values of the source rows (fixed), [N, H, S, hd];
    ``encoder_padding_mask`` [N, S]: True = real source token; decoding row r uses source row ``r // group``;
    ``self_kv[j]``: block j's self-attention keys/values of the decoded prefix as [R, H, step, hd] views.
    """

    def __init__(
        self,
        cross_kv: list[KV],
        encoder_padding_mask: torch.Tensor,
        group: int = 1,
        step: int = 0,
        self_cache: list[KV] | None = None,
    ) -> None:
        self.cross_kv = cross_kv
        self.encoder_padding_mask = encoder_padding_mask
        self.group = group
        self.step = step
        # [capacity, R, H, hd] per block, or None before the first step
        self.self_cache = self_cache
        self.cross_mask = _keep_some_key(encoder_padding_mask)[:, None, None, :]  # built once per source

    @property
    def batch_size(self) -> int:
        """Decoding rows R (source rows × group)."""
        return self.encoder_padding_mask.size(0) * self.group

    @property
    def blocks(self) -> int:
        return len(self.cross_kv)

    @property
    def self_kv(self) -> list[KV | None]:
        """Block j's self-attention cache as ([R, H, step, hd], [R, H, step, hd]) views (None before step 1)."""
        if self.self_cache is None or self.step == 0:
            return [None] * self.blocks
        return [
            (k[: self.step].permute(1, 2, 0, 3), v[: self.step].permute(1, 2, 0, 3))
            for k, v in self.self_cache
        ]

    # ------------------------------------------------------------------ buffers
    def cache_for_step(self, heads: int, head_dim: int, dtype: torch.dtype) -> list[KV]:
        """The self-attention buffers with room for position ``step`` (allocated or doubled as needed)."""
        rows = self.batch_size
        if self.self_cache is None:
            device = self.encoder_padding_mask.device
            shape = (max(MIN_CAPACITY, self.step + 1), rows, heads, head_dim)
            self.self_cache = [
                (
                    torch.empty(shape, dtype=dtype, device=device),
                    torch.empty(shape, dtype=dtype, device=device),
                )
                for _ in range(self.blocks)
            ]
        elif self.self_cache[0][0].size(0) <= self.step:
            grown = []
            for k, v in self.self_cache:
                shape = (2 * k.size(0), *k.shape[1:])
                k2, v2 = k.new_empty(shape), v.new_empty(shape)
                k2[: self.step].copy_(k[: self.step])
                v2[: self.step].copy_(v[: self.step])
                grown.append((k2, v2))
            self.self_cache = grown
        return self.self_cache

    def advanced(self) -> DecodingState:
        """The state after one decoded token (shares the buffers, written at the old ``step``)."""
        out = DecodingState.__new__(DecodingState)
        out.__dict__.update(self.__dict__)
        out.step = self.step + 1
        return out

    # ------------------------------------------------------------------ reorder
    def reorder(self, index: torch.Tensor) -> DecodingState:
        """A new state whose row i is this state's row ``index[i]`` (repeats allowed: B → B·beam)."""
        if index.dtype not in (torch.int64, torch.int32) or index.dim() != 1:
            raise ValueError(
                f"reorder index must be a 1-D integer tensor, got {index.dtype} {tuple(index.shape)}"
            )
        rows = index.tolist()
        if rows and (min(rows) < 0 or max(rows) >= self.batch_size):
            raise ValueError(f"reorder index out of range for {self.batch_size} rows")
        device = self.encoder_padding_mask.device
        index = index.to(device=device, dtype=torch.long)
        source = [r // self.group for r in rows]
        grouped = _grouping(source)
        if grouped is None:  # no sentence-major pattern: one source row per decoding row
            picked, group = source, 1
        else:
            picked, group = grouped
        cross_kv, mask = self.cross_kv, self.encoder_padding_mask
        if picked != list(range(mask.size(0))):
            pick = torch.tensor(picked, dtype=torch.long, device=device)
            cross_kv = [(k.index_select(0, pick), v.index_select(0, pick)) for k, v in cross_kv]
            mask = mask.index_select(0, pick)
        cache = None
        if self.self_cache is not None and self.step > 0:
            cache = []
            for k, v in self.self_cache:
                shape = (k.size(0), index.numel(), *k.shape[2:])
                k2, v2 = k.new_empty(shape), v.new_empty(shape)
                for src, dst in ((k, k2), (v, v2)):
                    if torch.is_grad_enabled():  # out= does not record autograd history
                        dst[: self.step].copy_(src[: self.step].index_select(1, index))
                    else:  # one gather straight into the new buffer
                        torch.index_select(src[: self.step], 1, index, out=dst[: self.step])
                cache.append((k2, v2))
        return DecodingState(cross_kv, mask, group=group, step=self.step, self_cache=cache)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """Tensors and step (e.g. to checkpoint a long generation); restore with :meth:`load_state_dict`."""
        out: dict = {
            "step": self.step,
            "group": self.group,
            "encoder_padding_mask": self.encoder_padding_mask,
        }
        for j, (k, v) in enumerate(self.cross_kv):
            out[f"cross.{j}.k"], out[f"cross.{j}.v"] = k, v
        for j, kv in enumerate(self.self_kv):
            if kv is not None:
                out[f"self.{j}.k"], out[f"self.{j}.v"] = kv
        return out

    def load_state_dict(self, state: dict) -> None:
        blocks = len(self.cross_kv)
        self.step = int(state["step"])
        self.group = int(state.get("group", 1))
        self.encoder_padding_mask = state["encoder_padding_mask"]
        self.cross_mask = _keep_some_key(self.encoder_padding_mask)[:, None, None, :]
        self.cross_kv = [(state[f"cross.{j}.k"], state[f"cross.{j}.v"]) for j in range(blocks)]
        self.self_cache = None
        if self.step > 0:
            missing = [j for j in range(blocks) if f"self.{j}.k" not in state]
            if missing:
                raise KeyError(f"decoding state at step {self.step} lacks 'self.{missing[0]}.k'")
            cache = []
            for j in range(blocks):
                k, v = state[f"self.{j}.k"], state[f"self.{j}.v"]  # [R, H, step, hd]
                shape = (max(MIN_CAPACITY, 2 * self.step), k.size(0), k.size(1), k.size(3))
                k2, v2 = k.new_empty(shape), v.new_empty(shape)
                k2[: self.step].copy_(k.permute(2, 0, 1, 3))
                v2[: self.step].copy_(v.permute(2, 0, 1, 3))
                cache.append((k2, v2))
            self.self_cache = cache
