"""Tiny models and batches shared by the model tests."""

from __future__ import annotations

import torch

from deltalm.model.config import DeltaLMConfig
from deltalm.model.model import DeltaLM

PAD, EOS = 1, 2


def tiny_config(**overrides) -> DeltaLMConfig:
    base = dict(vocab_size=203, d_model=32, heads=4, ffn=64, encoder_layers=2, decoder_blocks=2, dropout=0.0)
    return DeltaLMConfig.preset("tiny", **{**base, **overrides})


def tiny_model(seed: int = 0, **overrides) -> DeltaLM:
    torch.manual_seed(seed)
    return DeltaLM(tiny_config(**overrides)).eval()


def padded_batch(
    seed: int = 0, vocab: int = 203, src_lens=(7, 4, 1), tgt_lens=(5, 3, 2)
) -> dict[str, torch.Tensor]:
    """A seqio-style batch with right padding: source ``X </s>``, decoder input ``</s> Y``, target ``Y </s>``."""
    g = torch.Generator().manual_seed(seed)
    b, s, t = len(src_lens), max(src_lens), max(tgt_lens) + 1
    src = torch.full((b, s), PAD)
    dec_in = torch.full((b, t), PAD)
    target = torch.full((b, t), PAD)
    for i, (ls, lt) in enumerate(zip(src_lens, tgt_lens, strict=True)):
        src[i, : ls - 1] = torch.randint(4, vocab, (ls - 1,), generator=g)
        src[i, ls - 1] = EOS
        y = torch.randint(4, vocab, (lt,), generator=g)
        dec_in[i, 0] = EOS
        dec_in[i, 1 : lt + 1] = y
        target[i, :lt] = y
        target[i, lt] = EOS
    return {
        "encoder_input_tokens": src,
        "encoder_padding_mask": src.ne(PAD),
        "decoder_input_tokens": dec_in,
        "decoder_target_tokens": target,
        "decoder_loss_weights": target.ne(PAD).float(),
    }
