"""DeltaLMConfig: every dimension of the model, with presets in code (tiny, small, base, large)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from deltalm.config_tree import ConfigError, from_dict, to_dict
from deltalm.vocabulary import EOS_ID, PAD_ID, XLMR_SPM_SIZE, Vocabulary

XLMR_VOCAB = Vocabulary(XLMR_SPM_SIZE).pretrain_size  # 250,104 rows in the released checkpoints


# Model shapes by name; every other place that needs a shape names one of these. The tiny and small vocabulary
# sizes are placeholders: a run sets model.vocab_size to its SentencePiece model's (and may shorten the position
# table, model.max_positions, as the CPU runs do).
MODEL_PRESETS: dict[str, dict] = {
    # tiny: the tests, CI, `pretrain/train.py --preset tiny` and the demo's smoke budget.
    "tiny": dict(vocab_size=8104, d_model=64, heads=4, ffn=128, encoder_layers=2, decoder_blocks=1),
    # small: the demo's default model and the CPU benchmarks' smallest recorded shape.
    "small": dict(vocab_size=8104, d_model=128, heads=4, ffn=512, encoder_layers=4, decoder_blocks=2),
    "base": dict(d_model=768, heads=12, ffn=3072, encoder_layers=12, decoder_blocks=6),
    "large": dict(
        d_model=1024,
        heads=16,
        ffn=4096,
        encoder_layers=24,
        decoder_blocks=12,
        embedding_layer_norm=False,
    ),
}


@dataclass
class DeltaLMConfig:
    """Architecture of the interleaved encoder-decoder.

    ``vocab_size`` is the logical vocabulary (rows that mean something); the embedding has
    ``padded_vocab_size`` rows (``vocab_size`` rounded up to ``pad_vocab_to_multiple``); the extra rows are
    never predicted (their logits are masked to -inf in the loss and in generation).
    """

    vocab_size: int = XLMR_VOCAB
    pad_vocab_to_multiple: int = 8
    d_model: int = 768
    heads: int = 12
    ffn: int = 3072
    encoder_layers: int = 12
    decoder_blocks: int = 6
    max_positions: int = 514  # rows of the learned position table (XLM-R: 512 + pad offset 2)
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: Literal["gelu", "relu"] = "gelu"
    layer_norm_eps: float = 1e-5
    embedding_layer_norm: bool = True  # base has one; large has none
    # The decoder has its own position table and embedding LayerNorm, as the official fairseq model does (token
    # embeddings stay shared); False: one table and LayerNorm for both sides.
    separate_decoder_positions: bool = False
    pad_id: int = PAD_ID
    eos_id: int = EOS_ID
    activation_checkpointing: bool = False
    attention_backend: Literal["sdpa", "math"] = "sdpa"
    fused_qkv: bool = True
    loss_chunk_size: int = 1024  # tokens per chunk of the chunked cross-entropy (peak: chunk x vocab floats)
    loss_fused: bool = False  # torch.compile the chunked loss's elementwise passes (GPU fast path)
    cpu_packed_linear: bool = (
        True  # CPU inference on oneDNN-prepacked weights (deltalm/model/modules/linear.py)
    )

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, **overrides) -> DeltaLMConfig:
        """The named preset of :data:`MODEL_PRESETS` with ``overrides`` applied; validated.

        Raises:
            ConfigError: an unknown name or an invalid field.
        """
        if name not in MODEL_PRESETS:
            raise ConfigError(f"unknown model preset {name!r} (known: {', '.join(MODEL_PRESETS)})")
        data = {**MODEL_PRESETS[name], **overrides}
        config = from_dict(cls, data, prefix="model")
        config.validate()
        return config

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_to_multiple
        return ((self.vocab_size + m - 1) // m) * m

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    def validate(self) -> None:
        for name in (
            "vocab_size",
            "d_model",
            "heads",
            "ffn",
            "encoder_layers",
            "decoder_blocks",
            "pad_vocab_to_multiple",
            "loss_chunk_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.heads ({self.heads})"
            )
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"model.layer_norm_eps must be > 0, got {self.layer_norm_eps}")
        if (self.pad_id, self.eos_id) != (PAD_ID, EOS_ID):
            raise ConfigError(
                f"model.pad_id and model.eos_id are the vocabulary's ({PAD_ID}, {EOS_ID}), "
                f"got ({self.pad_id}, {self.eos_id})"
            )
        if self.max_positions < 3:
            raise ConfigError("model.max_positions must be >= 3 (two rows are taken by the pad offset)")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def max_source_length(self) -> int:
        """Longest sequence the position table covers (positions start at pad_id + 1)."""
        return self.max_positions - self.pad_id - 1

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DeltaLMConfig:
        config = from_dict(cls, data, prefix="model")
        config.validate()
        return config

    def replace(self, **changes) -> DeltaLMConfig:
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config
