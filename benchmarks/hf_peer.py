"""The Hugging Face peer of the MFU benchmark: ``transformers.MT5ForConditionalGeneration`` of equal FLOPs/sample.

How the peer is matched to a DeltaLM config (at the benchmark's shapes):

- same width and attention layout: ``d_model``, ``num_heads``, ``d_kv = d_model / heads``;
- same vocabulary rows (the padded DeltaLM vocabulary) and a tied output projection (same logits cost);
- depth in XLM-R layers: ``num_layers = encoder_layers`` and ``num_decoder_layers = 2 x decoder_blocks`` (an
  interleaved block is built from two XLM-R layers; a T5 decoder layer has self-attn, cross-attn and one FFN);
- mT5's gated-GELU FFN, with ``d_ff`` solved so the training FLOPs per sample (the mean over the benchmark's
  shape cycle) equal DeltaLM's, rounded to a multiple of 64 (8 for small models); the benchmark's table
  shows both FLOP counts (the rounding leaves well under 1%).

For the base preset at 512/114 this gives mT5 12+12 layers, d 768, 12 heads, d_ff 1664 (the T5 decoder has
twice DeltaLM's decoder attention, paid for by a narrower FFN). The peer is trained by the same engine
(DeepSpeed, optimizer, clipping, precision) with the loss a Hugging Face user writes: full logits
``[B, T, V]`` and ``F.cross_entropy`` on them in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deltalm.engine.flops import training_flops_per_sample
from deltalm.model.config import DeltaLMConfig
from deltalm.model.loss import LossOutput


def mt5_forward_flops(
    *,
    d_model: int,
    d_kv: int,
    num_heads: int,
    d_ff: int,
    num_layers: int,
    num_decoder_layers: int,
    vocab_size: int,
    gated: bool,
    source_len: int,
    target_len: int,
) -> float:
    """Forward matmul FLOPs of one T5/mT5 sample (2 per multiply-add, same convention as deltalm.engine.flops)."""
    d, inner, s, t = d_model, d_kv * num_heads, source_len, target_len
    ffn_mats = 3 if gated else 2
    encoder_layer = 8 * d * inner * s + 4 * s * s * inner + 2 * ffn_mats * d * d_ff * s
    decoder_layer = (
        8 * d * inner * t
        + 4 * t * t * inner  # self-attention
        + 4 * d * inner * t
        + 4 * d * inner * s
        + 4 * t * s * inner  # cross-attention (k/v over the source)
        + 2 * ffn_mats * d * d_ff * t
    )
    output = 2 * d * vocab_size * t
    return float(num_layers * encoder_layer + num_decoder_layers * decoder_layer + output)


def mt5_flops_of(config, source_len: int, target_len: int) -> float:
    """Training FLOPs per sample (3 x forward) of an ``MT5Config``."""
    return 3.0 * mt5_forward_flops(
        d_model=config.d_model,
        d_kv=config.d_kv,
        num_heads=config.num_heads,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_decoder_layers=config.num_decoder_layers,
        vocab_size=config.vocab_size,
        gated=config.is_gated_act,
        source_len=source_len,
        target_len=target_len,
    )


def matched_mt5_config(config: DeltaLMConfig, shapes: list[tuple[int, int]]):
    """An ``MT5Config`` whose mean training FLOPs per sample over ``shapes`` [(source, target), ...] equal DeltaLM's."""
    from transformers import MT5Config

    layers, decoder_layers = config.encoder_layers, 2 * config.decoder_blocks
    common = dict(
        d_model=config.d_model,
        d_kv=config.head_dim,
        num_heads=config.heads,
        num_layers=layers,
        num_decoder_layers=decoder_layers,
        vocab_size=config.padded_vocab_size,
        gated=True,
    )
    # FLOPs are linear in d_ff: solve mean(ours) = mean(peer without FFN) + d_ff x mean(peer per FFN unit)
    target = sum(training_flops_per_sample(config, s, t) / 3.0 for s, t in shapes)
    without_ffn = sum(mt5_forward_flops(d_ff=0, source_len=s, target_len=t, **common) for s, t in shapes)
    with_one = sum(mt5_forward_flops(d_ff=1, source_len=s, target_len=t, **common) for s, t in shapes)
    exact = (target - without_ffn) / (with_one - without_ffn)
    if exact < 8:
        named = ",".join(f"{s}/{t}" for s, t in shapes)
        raise ValueError(f"no mT5 FFN width matches DeltaLM's FLOPs at {named} (solved d_ff {exact:.1f})")
    multiple = 64 if exact >= 512 else 8
    d_ff = max(multiple, int(round(exact / multiple)) * multiple)
    return MT5Config(
        vocab_size=config.padded_vocab_size,
        d_model=config.d_model,
        d_kv=config.head_dim,
        d_ff=d_ff,
        num_layers=layers,
        num_decoder_layers=decoder_layers,
        num_heads=config.heads,
        dropout_rate=config.dropout,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=True,
        pad_token_id=config.pad_id,
        eos_token_id=config.eos_id,
        decoder_start_token_id=config.eos_id,
        use_cache=False,
    )


class MT5Peer(nn.Module):
    """``MT5ForConditionalGeneration`` behind DeltaLM's ``loss(batch)`` interface, for the shared engine.

    No ``config`` attribute on purpose: the engine's own FLOP count is DeltaLM's; the benchmark counts the peer's.
    """

    def __init__(self, mt5_config) -> None:
        super().__init__()
        from transformers import MT5ForConditionalGeneration

        self.hf = MT5ForConditionalGeneration(mt5_config)
        self.vocab_size = mt5_config.vocab_size

    def loss(self, batch: dict[str, torch.Tensor]) -> LossOutput:
        out = self.hf(
            input_ids=batch["encoder_input_tokens"],
            attention_mask=batch["encoder_padding_mask"].long(),
            decoder_input_ids=batch["decoder_input_tokens"],
            use_cache=False,
        )
        keep = batch["decoder_loss_weights"] > 0
        targets = batch["decoder_target_tokens"]
        nll = F.cross_entropy(
            out.logits.float().reshape(-1, self.vocab_size), targets.reshape(-1), reduction="none"
        )
        loss_sum = (nll * keep.reshape(-1)).sum()
        return LossOutput(loss_sum=loss_sum, nll_sum=loss_sum.detach(), num_tokens=keep.sum())

    def compile_layers(self, backend: str = "inductor") -> None:
        """``torch.compile`` each T5 block in place (parameter names unchanged), as done for DeltaLM's layers."""
        for block in [*self.hf.encoder.block, *self.hf.decoder.block]:
            block.compile(dynamic=False, backend=backend)

    def enable_activation_checkpointing(self) -> None:
        self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


__all__ = ["MT5Peer", "matched_mt5_config", "mt5_flops_of", "mt5_forward_flops"]
