"""A toy model implementing the incremental decoding protocol, and a brute-force search over it.

The toy decoder is a small recurrent net (h' = tanh(h A + E[token] + ctx)), so every step depends on the whole
history: a beam search that reorders its state wrongly gives different sequences. The source enters as the
masked mean of source embeddings, so padding must be honoured for batched = one-by-one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

PAD, EOS = 1, 2


@dataclass
class ToyState:
    h: torch.Tensor  # [rows, d]
    ctx: torch.Tensor  # [rows, d]

    def reorder(self, index: torch.Tensor) -> ToyState:
        return ToyState(self.h.index_select(0, index), self.ctx.index_select(0, index))


class ToyModel(nn.Module):
    def __init__(
        self,
        vocab: int = 6,
        padded_vocab: int = 8,
        d: int = 6,
        seed: int = 0,
        scale: float = 2.0,
        eos_bias: float = 0.0,
        max_source_length: int = 512,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Parameter(torch.randn(padded_vocab, d, generator=g))
        self.src_emb = nn.Parameter(torch.randn(padded_vocab, d, generator=g))
        self.A = nn.Parameter(torch.randn(d, d, generator=g) * 0.7)
        self.W = nn.Parameter(torch.randn(d, padded_vocab, generator=g) * scale)
        self.register_buffer("bias", torch.zeros(padded_vocab))
        self.bias[EOS] = eos_bias
        self.config = SimpleNamespace(
            vocab_size=vocab,
            padded_vocab_size=padded_vocab,
            pad_id=PAD,
            eos_id=EOS,
            max_source_length=max_source_length,
        )
        self.encode_calls = 0
        self.decode_calls = 0

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.encode_calls += 1
        return self.src_emb[tokens]

    def start_decoding(self, encoder_out: torch.Tensor, padding_mask: torch.Tensor) -> ToyState:
        m = padding_mask.to(encoder_out.dtype)[..., None]
        ctx = (encoder_out * m).sum(1) / m.sum(1).clamp(min=1.0)
        return ToyState(torch.zeros_like(ctx), ctx)

    def decode_step(self, tokens_last: torch.Tensor, state: ToyState) -> tuple[torch.Tensor, ToyState]:
        self.decode_calls += 1
        h = torch.tanh(state.h @ self.A + self.emb[tokens_last[:, 0]] + state.ctx)
        logits = h @ self.W + self.bias
        logits[:, self.config.vocab_size :] = -math.inf
        return logits, ToyState(h, state.ctx)


def brute_force(
    model: ToyModel,
    source: list[int],
    *,
    max_len: int,
    min_len: int = 1,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    forced_first_token: int | None = None,
) -> list[tuple[list[int], float]]:
    """Every complete sequence the search may produce, with its score, best first.

    Written independently of the search code: a depth-first walk over prefixes, with the rules spelled out
    per token (pad never; EOS not before ``min_len`` tokens; only EOS at ``max_len`` tokens; no repeated
    n-gram; the forced first token).
    """
    vocab = model.config.vocab_size
    with torch.no_grad():
        src = torch.tensor([source])
        state = model.start_decoding(model.encode(src), src.ne(PAD))
        results: list[tuple[list[int], float]] = []

        def repeats(prefix: list[int], token: int) -> bool:
            n = no_repeat_ngram_size
            if n <= 0:
                return False
            seq = prefix + [token]
            if len(seq) < n:
                return False
            last = seq[-n:]
            return any(seq[i : i + n] == last for i in range(len(seq) - n))

        def walk(prefix: list[int], logp: float, last: int, st: ToyState) -> None:
            logits, nxt = model.decode_step(torch.tensor([[last]]), st)
            lp = F.log_softmax(logits.float(), dim=-1)[0]
            step = len(prefix)
            for token in range(vocab):
                if token == PAD:
                    continue
                if step == 0 and forced_first_token is not None and token != forced_first_token:
                    continue
                value = float(lp[token])
                if token == EOS:
                    if step < min_len and step < max_len:
                        continue
                    if step < min_len:  # at max length EOS is always allowed
                        value = 0.0
                    total = logp + value
                    results.append((list(prefix), total / (step + 1) ** length_penalty))
                    continue
                if step >= max_len or repeats(prefix, token):
                    continue
                walk(prefix + [token], logp + value, token, nxt)

        walk([], 0.0, EOS, state)
    results.sort(key=lambda item: -item[1])
    return results
