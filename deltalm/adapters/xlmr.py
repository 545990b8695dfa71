"""Hugging Face XLM-R / InfoXLM ⇄ DeltaLM: initialization from a pretrained encoder, and encoder export.

Mapping (DESIGN.md §6, layers 0-indexed): encoder layer i ← XLM-R layer i. Decoder block j ← layer 2j (its
self-attention → self-attn, attention LN → self-attn LN, FFN → FFN-1, output LN → FFN-1 LN) and layer 2j+1
(self-attention → cross-attention, attention LN → cross-attn LN, FFN → FFN-2, output LN → FFN-2 LN). Embeddings,
positions and embedding LayerNorm shared; ``token_type_embeddings[0]`` (added to every token by XLM-R) is
folded into every row of the position table. Token rows beyond the checkpoint's vocabulary (sentinels, language
tags, vocabulary padding) are initialized N(0, 0.02) and listed. Pooler and LM head are dropped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from deltalm.adapters.checkpoint_io import (
    CheckpointError,
    atomic_directory,
    read_safetensors,
    read_torch_weights,
)
from deltalm.model import DeltaLM
from deltalm.model_config import XLMR_VOCAB, DeltaLMConfig

log = logging.getLogger(__name__)

HF_XLMR_VOCAB = 250_002  # <s> <pad> </s> <unk> + 250k pieces (offset) + <mask>
NEW_ROW_STD = 0.02

_ATTENTION = {
    "q_proj": "attention.self.query",
    "k_proj": "attention.self.key",
    "v_proj": "attention.self.value",
    "out_proj": "attention.output.dense",
}


@dataclass
class XlmrInit:
    """Result of :func:`from_xlmr`: the model, the source of every parameter, the freshly initialized rows."""

    model: DeltaLM
    sources: dict[str, str] = field(default_factory=dict)  # DeltaLM parameter → XLM-R tensor(s)
    new_token_rows: range = range(0)

    def table(self) -> str:
        width = max(len(k) for k in self.sources)
        return "\n".join(f"{k:<{width}}  <-  {v}" for k, v in self.sources.items())


# ---------------------------------------------------------------------- the mapping
def _linear(target: str, source: str) -> dict[str, str]:
    return {f"{target}.weight": f"{source}.weight", f"{target}.bias": f"{source}.bias"}


def _attention(target: str, layer: int) -> dict[str, str]:
    out = {}
    for ours, theirs in _ATTENTION.items():
        out.update(_linear(f"{target}.{ours}", f"encoder.layer.{layer}.{theirs}"))
    return out


def _ffn(target: str, layer: int) -> dict[str, str]:
    return {
        **_linear(f"{target}.fc1", f"encoder.layer.{layer}.intermediate.dense"),
        **_linear(f"{target}.fc2", f"encoder.layer.{layer}.output.dense"),
    }


def parameter_sources(encoder_layers: int, decoder_blocks: int) -> dict[str, str]:
    """DeltaLM parameter name → HF XLM-R tensor name (embedding rows and positions handled specially)."""
    m = {
        "embedding.embed_tokens.weight": "embeddings.word_embeddings.weight",
        "embedding.embed_positions.weight": "embeddings.position_embeddings.weight"
        " + embeddings.token_type_embeddings.weight[0]",
        **_linear("embedding.emb_layer_norm", "embeddings.LayerNorm"),
    }
    for i in range(encoder_layers):
        p = f"encoder.layers.{i}"
        m.update(_attention(f"{p}.self_attn", i))
        m.update(_linear(f"{p}.self_attn_layer_norm", f"encoder.layer.{i}.attention.output.LayerNorm"))
        m.update(_ffn(f"{p}.ffn", i))
        m.update(_linear(f"{p}.final_layer_norm", f"encoder.layer.{i}.output.LayerNorm"))
    for j in range(decoder_blocks):
        p, a, b = f"decoder.layers.{j}", 2 * j, 2 * j + 1
        m.update(_attention(f"{p}.self_attn", a))
        m.update(_linear(f"{p}.self_attn_layer_norm", f"encoder.layer.{a}.attention.output.LayerNorm"))
        m.update(_ffn(f"{p}.ffn_1", a))
        m.update(_linear(f"{p}.ffn_layer_norm", f"encoder.layer.{a}.output.LayerNorm"))
        m.update(_attention(f"{p}.encoder_attn", b))
        m.update(_linear(f"{p}.encoder_attn_layer_norm", f"encoder.layer.{b}.attention.output.LayerNorm"))
        m.update(_ffn(f"{p}.ffn_2", b))
        m.update(_linear(f"{p}.final_layer_norm", f"encoder.layer.{b}.output.LayerNorm"))
    return m


# ---------------------------------------------------------------------- reading an HF directory
def _read_hf_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{directory}: no config.json (expected a Hugging Face XLM-R/InfoXLM directory)"
        )
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg})") from None
    model_type = cfg.get("model_type")
    if model_type not in ("xlm-roberta", "roberta"):
        raise CheckpointError(f"{path}: model_type {model_type!r} is not XLM-R (expected 'xlm-roberta')")
    checks = {
        "hidden_act": ("gelu", cfg.get("hidden_act", "gelu")),
        "position_embedding_type": ("absolute", cfg.get("position_embedding_type", "absolute")),
        "pad_token_id": (1, cfg.get("pad_token_id", 1)),
    }
    for key, (want, got) in checks.items():
        if got != want:
            raise CheckpointError(f"{path}: {key} = {got!r}, DeltaLM needs {want!r}")
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if not isinstance(cfg.get(key), int):
            raise CheckpointError(f"{path}: missing integer {key}")
    return cfg


def _read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / "model.safetensors").is_file():
        state = read_safetensors(directory / "model.safetensors")
    elif (directory / "pytorch_model.bin").is_file():
        state = read_torch_weights(directory / "pytorch_model.bin")
        if not isinstance(state, dict):
            raise CheckpointError(f"{directory / 'pytorch_model.bin'}: expected a state dict")
    else:
        raise CheckpointError(f"{directory}: neither model.safetensors nor pytorch_model.bin found")
    # XLMRobertaForMaskedLM and friends prefix the encoder with "roberta."
    prefix = "roberta."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _take(state: dict[str, torch.Tensor], name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if name not in state:
        raise CheckpointError(f"XLM-R checkpoint lacks tensor {name}")
    t = state[name]
    if tuple(t.shape) != shape:
        raise CheckpointError(f"XLM-R tensor {name} has shape {tuple(t.shape)}, expected {shape}")
    return t


def from_xlmr(
    path: str | Path,
    decoder_blocks: int | None = None,
    vocab_size: int | None = None,
    seed: int = 0,
    **overrides,
) -> XlmrInit:
    """Build a :class:`DeltaLM` initialized from the HF XLM-R/InfoXLM directory ``path``.

    ``decoder_blocks`` defaults to half the encoder layers (each block consumes two layers). ``vocab_size``
    defaults to the checkpoint's, or to 250,104 (with sentinels) for the real 250,002-row XLM-R vocabulary.
    ``overrides`` set other :class:`DeltaLMConfig` fields (dropout, pad_vocab_to_multiple, ...).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"XLM-R directory not found: {directory}")
    hf = _read_hf_config(directory)
    layers = hf["num_hidden_layers"]
    if decoder_blocks is None:
        if layers % 2:
            raise CheckpointError(
                f"{directory}: {layers} layers is odd; pass decoder_blocks explicitly (each block uses 2 layers)"
            )
        decoder_blocks = layers // 2
    if decoder_blocks < 1 or 2 * decoder_blocks > layers:
        raise CheckpointError(
            f"{directory}: {decoder_blocks} decoder blocks need {2 * decoder_blocks} layers, checkpoint has {layers}"
        )
    hf_vocab = hf["vocab_size"]
    if vocab_size is None:
        vocab_size = XLMR_VOCAB if hf_vocab == HF_XLMR_VOCAB else hf_vocab
    if vocab_size < hf_vocab:
        raise CheckpointError(f"vocab_size {vocab_size} is smaller than the checkpoint's {hf_vocab} rows")
    config = DeltaLMConfig.from_dict(
        {
            "vocab_size": vocab_size,
            "d_model": hf["hidden_size"],
            "heads": hf["num_attention_heads"],
            "ffn": hf["intermediate_size"],
            "encoder_layers": layers,
            "decoder_blocks": decoder_blocks,
            "max_positions": hf.get("max_position_embeddings", 514),
            "layer_norm_eps": float(hf.get("layer_norm_eps", 1e-5)),
            "embedding_layer_norm": True,
            "pad_id": 1,
            **overrides,
        }
    )
    state = _read_hf_weights(directory)
    torch.manual_seed(seed)
    model = DeltaLM(config)
    d = config.d_model
    sources = parameter_sources(config.encoder_layers, config.decoder_blocks)
    params = dict(model.named_parameters())
    for name in [n for n in params if n.startswith("decoder_embedding.")]:  # copies of the encoder's, below
        sources[name] = sources["embedding" + name[len("decoder_embedding") :]]
    missing = sorted(set(params) - set(sources))
    if missing:  # the mapping must cover every parameter: no sub-layer stays random
        raise CheckpointError(f"no XLM-R source for DeltaLM parameter {missing[0]}")

    with torch.no_grad():
        words = _take(state, "embeddings.word_embeddings.weight", (hf_vocab, d))
        table = params["embedding.embed_tokens.weight"]
        table[:hf_vocab].copy_(words)
        new_rows = range(hf_vocab, table.size(0))
        if len(new_rows):
            g = torch.Generator().manual_seed(seed)
            table[hf_vocab:].copy_(torch.randn(len(new_rows), d, generator=g) * NEW_ROW_STD)
        token_type = state.get("embeddings.token_type_embeddings.weight")
        positions = _take(state, "embeddings.position_embeddings.weight", (config.max_positions, d))
        if token_type is not None:
            positions = positions + token_type[0]
        params["embedding.embed_positions.weight"].copy_(positions)
        for name, source in sources.items():
            if name in ("embedding.embed_tokens.weight", "embedding.embed_positions.weight"):
                continue
            if name.startswith("decoder_embedding."):
                continue  # copy_decoder_embedding below
            params[name].copy_(_take(state, source, tuple(params[name].shape)))
        model.copy_decoder_embedding()
    if len(new_rows):
        sources["embedding.embed_tokens.weight"] += (
            f" (rows 0..{hf_vocab - 1}; rows {hf_vocab}..{table.size(0) - 1} new, N(0, {NEW_ROW_STD}))"
        )
    result = XlmrInit(model=model, sources=sources, new_token_rows=new_rows)
    log.info("DeltaLM initialized from %s:\n%s", directory, result.table())
    return result


# ---------------------------------------------------------------------- export
def export_encoder_as_xlmr(model: DeltaLM, directory: str | Path) -> Path:
    """Write the encoder (+ embeddings) as an HF ``XLMRobertaModel`` directory (config.json + safetensors).

    The position table already holds the folded token-type row, so ``token_type_embeddings`` is written as
    zeros. All embedding rows are exported (``vocab_size`` = the padded row count). No pooler is written
    (transformers initializes it; hidden states do not depend on it).
    """
    from safetensors.torch import save_file

    c = model.config
    if not c.embedding_layer_norm:
        raise CheckpointError("XLM-R always has an embedding LayerNorm; this model has none (large preset)")
    if c.pad_id != 1:
        raise CheckpointError(f"XLM-R needs pad id 1, model has {c.pad_id}")
    params = {k: v.detach() for k, v in model.named_parameters()}
    tensors: dict[str, torch.Tensor] = {}
    for ours, theirs in parameter_sources(c.encoder_layers, 0).items():
        if ours == "embedding.embed_positions.weight":
            theirs = "embeddings.position_embeddings.weight"
        tensors[theirs] = params[ours].float().contiguous().clone()
    tensors["embeddings.token_type_embeddings.weight"] = torch.zeros(1, c.d_model)
    hf_config = {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": c.padded_vocab_size,
        "hidden_size": c.d_model,
        "num_hidden_layers": c.encoder_layers,
        "num_attention_heads": c.heads,
        "intermediate_size": c.ffn,
        "hidden_act": c.activation,
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": c.attention_dropout,
        "max_position_embeddings": c.max_positions,
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": c.layer_norm_eps,
        "pad_token_id": c.pad_id,
        "bos_token_id": 0,
        "eos_token_id": c.eos_id,
        "position_embedding_type": "absolute",
        "dtype": "float32",
    }
    target = Path(directory)
    with atomic_directory(target) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    return target
