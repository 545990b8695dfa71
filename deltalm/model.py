"""DeltaLM: XLM-R encoder + interleaved decoder, one shared token embedding tied to the output projection.

Architecture of the released checkpoints: post-LN, erf GELU, learned positions (XLM-R formula, 514 rows),
embedding LayerNorm only when ``config.embedding_layer_norm``, no final LayerNorm, no embedding scaling, no
output bias. Positions and the embedding LayerNorm are shared by both sides, or the decoder has its own
(``config.separate_decoder_positions``, the official fairseq layout). Each decoder block is self-attention → FFN-1 → cross-attention → FFN-2. Padding is derived from
``config.pad_id``; embedding rows beyond ``config.vocab_size`` (vocabulary padding) get -inf logits and are
never scored by the loss.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.utils.checkpoint
from torch import nn

from deltalm.decoding_state import DecodingState
from deltalm.loss import LossOutput, chunked_cross_entropy
from deltalm.model_config import DeltaLMConfig
from deltalm.modules.embedding import Embeddings, SideEmbedding
from deltalm.modules.layers import DecoderBlock, EncoderLayer
from deltalm.modules.linear import linear, release_packs

UNPAD_MIN_FRACTION = 0.1  # CPU inference encodes only the real tokens when at least this share is padding

BATCH_KEYS = (
    "encoder_input_tokens",
    "encoder_padding_mask",
    "decoder_input_tokens",
    "decoder_target_tokens",
    "decoder_loss_weights",
)


class Encoder(nn.Module):
    def __init__(self, config: DeltaLMConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))


class Decoder(nn.Module):
    def __init__(self, config: DeltaLMConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderBlock(config) for _ in range(config.decoder_blocks))


class DeltaLM(nn.Module):
    """The DeltaLM encoder-decoder (plain single-device module; the engine wraps it)."""

    def __init__(self, config: DeltaLMConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.embedding = Embeddings(
            config.padded_vocab_size,
            config.d_model,
            config.max_positions,
            config.pad_id,
            config.embedding_layer_norm,
            config.layer_norm_eps,
            config.dropout,
        )
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.decoder_embedding = None
        if config.separate_decoder_positions:
            with torch.random.fork_rng(
                devices=[]
            ):  # the other weights draw the same numbers as a shared model's
                self.decoder_embedding = SideEmbedding(
                    config.d_model,
                    config.max_positions,
                    config.pad_id,
                    config.embedding_layer_norm,
                    config.layer_norm_eps,
                )
        self.reset_parameters()
        self.copy_decoder_embedding()

    # ------------------------------------------------------------------ construction
    def reset_parameters(self, std: float = 0.02) -> None:
        """BERT/XLM-R initialization: N(0, std) weights, zero biases, zero pad rows, unit LayerNorms."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
                if module.padding_idx is not None and module.weight.device.type != "meta":
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @torch.no_grad()
    def copy_decoder_embedding(self) -> None:
        """Set the decoder's own position table and embedding LayerNorm (when it has them) to the encoder's:
        both sides start from the same weights (a fresh model, an XLM-R initialization)."""
        if self.decoder_embedding is None or self.embedding.embed_positions.weight.device.type == "meta":
            return
        self.decoder_embedding.embed_positions.weight.copy_(self.embedding.embed_positions.weight)
        if self.decoder_embedding.emb_layer_norm is not None:
            self.decoder_embedding.emb_layer_norm.load_state_dict(self.embedding.emb_layer_norm.state_dict())

    @classmethod
    def from_xlmr(cls, path: str | Path, decoder_blocks: int | None = None, **overrides) -> DeltaLM:
        """Initialize from a Hugging Face XLM-R/InfoXLM directory (see :mod:`deltalm.adapters.xlmr`)."""
        from deltalm.adapters.xlmr import from_xlmr

        return from_xlmr(path, decoder_blocks=decoder_blocks, **overrides).model

    def train(self, mode: bool = True) -> DeltaLM:
        """Also drops the packed inference weights (:mod:`deltalm.modules.linear`) when training resumes."""
        super().train(mode)
        if mode:
            release_packs(self)
        return self

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count (the tied embedding / output projection counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @property
    def output_weight(self) -> torch.Tensor:
        """The output projection: the token embedding (tied, no bias)."""
        return self.embedding.embed_tokens.weight

    # ------------------------------------------------------------------ forward passes
    def _checkpointed(self, layer: nn.Module, *args):
        if self.config.activation_checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def encode(self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder hidden states [B, S, d] of ``tokens`` [B, S]; padding (True = real) from the pad id if None."""
        _check_tokens(tokens, "encoder tokens")
        if padding_mask is None:
            padding_mask = tokens.ne(self.config.pad_id)
        x = self.embedding(tokens)
        if self._unpads(x, padding_mask):
            return self._encode_unpadded(x, padding_mask)
        for layer in self.encoder.layers:
            x = self._checkpointed(layer, x, padding_mask)
        return x

    def _unpads(self, x: torch.Tensor, padding_mask: torch.Tensor) -> bool:
        """CPU inference on a batch that is at least ``UNPAD_MIN_FRACTION`` padding: skip the pads' matmuls."""
        if self.training or torch.is_grad_enabled() or x.device.type != "cpu" or padding_mask.dim() != 2:
            return False
        return int(padding_mask.sum()) <= (1.0 - UNPAD_MIN_FRACTION) * padding_mask.numel()

    def _encode_unpadded(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """The encoder on the real tokens only; pad positions of the result are zeros (never attended to).

        Projections, FFNs and LayerNorms are per token, so they run on the N real tokens instead of B·S
        positions; attention scores still use the padded layout. Real positions equal the padded pass up to
        float rounding (tested).
        """
        batch, length, d = x.shape
        rows = padding_mask.reshape(-1).nonzero().squeeze(1)
        h = x.reshape(batch * length, d).index_select(0, rows)
        for layer in self.encoder.layers:
            h = layer.forward_unpadded(h, rows, (batch, length), padding_mask)
        return h.new_zeros(batch * length, d).index_copy_(0, rows, h).view(batch, length, d)

    def decode(
        self,
        decoder_input_tokens: torch.Tensor,
        encoder_out: torch.Tensor,
        encoder_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decoder hidden states [B, T, d] (teacher forcing, causal); ``encoder_padding_mask`` True = real."""
        _check_tokens(decoder_input_tokens, "decoder tokens")
        x = self.embedding(decoder_input_tokens, side=self.decoder_embedding)
        for block in self.decoder.layers:
            x = self._checkpointed(block, x, encoder_out, encoder_padding_mask)
        return x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Tied output projection of ``hidden`` [..., d] → [..., padded_vocab]; padded rows -inf."""
        packed = self.config.cpu_packed_linear and not self.training
        out = linear(hidden, self.output_weight, packed=packed)
        if self.config.padded_vocab_size > self.config.vocab_size:
            out[..., self.config.vocab_size :] = float("-inf")
        return out

    def forward(self, encoder_input_tokens: torch.Tensor, decoder_input_tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, padded_vocab] of the next token at every decoder position."""
        mask = encoder_input_tokens.ne(self.config.pad_id)
        encoder_out = self.encode(encoder_input_tokens, mask)
        return self.logits(self.decode(decoder_input_tokens, encoder_out, mask))

    def loss(self, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> LossOutput:
        """Summed (label-smoothed) cross-entropy of a seqio-style batch (docs/model.md).

        Tokens with ``decoder_loss_weights > 0`` are scored (weights act as a mask); the caller divides
        ``loss_sum`` by the global token count.
        """
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(f"batch is missing {missing[0]!r} (expected: {', '.join(BATCH_KEYS)})")
        mask = batch["encoder_padding_mask"].bool()
        encoder_out = self.encode(batch["encoder_input_tokens"], mask)
        hidden = self.decode(batch["decoder_input_tokens"], encoder_out, mask)
        keep = batch["decoder_loss_weights"] > 0
        targets = batch["decoder_target_tokens"]
        if targets.shape != hidden.shape[:2] or keep.shape != targets.shape:
            raise ValueError(
                f"decoder_target_tokens {tuple(targets.shape)} / decoder_loss_weights {tuple(keep.shape)} "
                f"do not match decoder_input_tokens {tuple(hidden.shape[:2])}"
            )
        loss_sum, nll_sum = chunked_cross_entropy(
            hidden[keep],
            self.output_weight,
            targets[keep],
            label_smoothing=label_smoothing,
            chunk_size=self.config.loss_chunk_size,
            valid_vocab=self.config.vocab_size,
            fused=self.config.loss_fused,
        )
        return LossOutput(loss_sum=loss_sum, nll_sum=nll_sum, num_tokens=keep.sum())

    # ------------------------------------------------------------------ incremental decoding
    def start_decoding(
        self, encoder_out: torch.Tensor, encoder_padding_mask: torch.Tensor | None = None
    ) -> DecodingState:
        """A fresh :class:`DecodingState`: every block's cross-attention keys/values computed once."""
        if encoder_padding_mask is None:
            encoder_padding_mask = torch.ones(
                encoder_out.shape[:2], dtype=torch.bool, device=encoder_out.device
            )
        cross_kv = [block.encoder_attn.project_kv(encoder_out) for block in self.decoder.layers]
        return DecodingState(cross_kv=cross_kv, encoder_padding_mask=encoder_padding_mask.bool())

    def decode_step(
        self, tokens_last: torch.Tensor, state: DecodingState
    ) -> tuple[torch.Tensor, DecodingState]:
        """fp32 logits [B, padded_vocab] of the token after ``tokens_last`` ([B] or [B, 1]); the state grows."""
        if tokens_last.dim() == 1:
            tokens_last = tokens_last[:, None]
        if tokens_last.dim() != 2 or tokens_last.size(1) != 1 or tokens_last.size(0) != state.batch_size:
            raise ValueError(
                f"decode_step expects tokens [B] or [B, 1] with B = {state.batch_size}, got {tuple(tokens_last.shape)}"
            )
        position = self.config.pad_id + 1 + state.step
        if position >= self.config.max_positions:
            raise ValueError(
                f"cannot decode beyond {self.config.max_source_length} tokens (position table size)"
            )
        positions = torch.full_like(tokens_last, position)
        x = self.embedding(tokens_last, positions, side=self.decoder_embedding)
        c = self.config
        caches = state.cache_for_step(c.heads, c.d_model // c.heads, x.dtype)
        for block, cache, cross_kv in zip(self.decoder.layers, caches, state.cross_kv, strict=True):
            x = block.step(x, cache, state.step, cross_kv, state.cross_mask, state.group)
        state = state.advanced()
        return self.logits(x[:, 0]).float(), state


def _check_tokens(tokens: torch.Tensor, name: str) -> None:
    if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"{name} must be an integer tensor [batch, length], got {tokens.dtype} {tuple(tokens.shape)}"
        )
