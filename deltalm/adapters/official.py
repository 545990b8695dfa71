"""The released DeltaLM checkpoint layout (``deltalm-base.pt`` / ``deltalm-large.pt``) ⇄ :class:`DeltaLM`.

File: ``torch.load(f)["weights"]``, 392 tensors for base. The official fairseq model ties only the token
embeddings: positions (``embed_positions``) and, for base, the embedding LayerNorm (``emb_layer_norm``) are
separate parameters of the encoder (``src_embedding.*``) and the decoder (``tgt_embedding.*``), so a model
trained or fine-tuned with the official code has two different copies. Such a file loads into a model with
``separate_decoder_positions`` (``src_embedding.X`` ↔ ``embedding.X``, ``tgt_embedding.X`` ↔
``decoder_embedding.X``); a file whose copies are equal loads into one shared table (``separate`` = None, the
default, decides by comparing; True/False force it). The two ``embed_tokens`` copies must be equal: the
official model shares them. Below the embeddings our module names equal the official ones. The config is
inferred from tensor shapes; the head count cannot be, so it is an argument (default ``d_model // 64``).
Load then save gives the file's tensors back bit for bit.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from deltalm.adapters.checkpoint_io import CheckpointError, read_torch_weights, save_torch_atomic
from deltalm.model import DeltaLM
from deltalm.model_config import DeltaLMConfig

EMBEDDING_COPIES = ("src_embedding", "tgt_embedding")
TOKENS = "embed_tokens.weight"


def official_keys(config: DeltaLMConfig) -> dict[str, str]:
    """Official key → our parameter name, for every tensor of the released layout."""
    with torch.device("meta"):  # names only: no memory, no init cost
        ours = [n for n, _ in DeltaLM(config).named_parameters()]
    out = {}
    for name in ours:
        if name.startswith("decoder_embedding."):
            out["tgt_embedding" + name[len("decoder_embedding") :]] = name
        elif name.startswith("embedding."):
            rest = name[len("embedding") :]
            shared = rest == "." + TOKENS or not config.separate_decoder_positions
            for copy in EMBEDDING_COPIES if shared else EMBEDDING_COPIES[:1]:
                out[copy + rest] = name
        else:
            out[name] = name
    return out


def _copies_differ(weights: dict[str, torch.Tensor]) -> str | None:
    """The first ``tgt_embedding`` key whose tensor differs from its ``src_embedding`` copy (None: all equal)."""
    for key in sorted(weights):
        if key.startswith("tgt_embedding."):
            src = weights.get("src" + key[3:])  # a missing one is reported as missing later
            if src is not None and (src.shape != weights[key].shape or not torch.equal(src, weights[key])):
                return key
    return None


def _infer_config(
    weights: dict[str, torch.Tensor], heads: int | None, separate: bool, overrides: dict
) -> DeltaLMConfig:
    def need(key: str) -> torch.Tensor:
        if key not in weights:
            raise CheckpointError(f"official checkpoint lacks key {key}")
        return weights[key]

    rows, d = need("src_embedding.embed_tokens.weight").shape
    positions = need("src_embedding.embed_positions.weight").shape[0]
    ffn = need("encoder.layers.0.ffn.fc1.weight").shape[0]

    def count(prefix: str) -> int:
        found = {int(m.group(1)) for k in weights if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
        return max(found) + 1 if found else 0

    heads = heads if heads is not None else max(1, d // 64)
    data = {
        "vocab_size": rows,
        "pad_vocab_to_multiple": 8 if rows % 8 == 0 else 1,
        "d_model": d,
        "heads": heads,
        "ffn": ffn,
        "encoder_layers": count("encoder.layers"),
        "decoder_blocks": count("decoder.layers"),
        "max_positions": positions,
        "embedding_layer_norm": "src_embedding.emb_layer_norm.weight" in weights,
        "separate_decoder_positions": separate,
        **overrides,
    }
    try:
        return DeltaLMConfig.from_dict(data)
    except ValueError as exc:
        raise CheckpointError(f"cannot build a config from the checkpoint: {exc}") from None


def load_official(
    path: str | Path, heads: int | None = None, separate: bool | None = None, **overrides
) -> DeltaLM:
    """Load a released DeltaLM ``.pt`` (``{"weights": {...}}``) into a :class:`DeltaLM` of the file's dtype.

    Every key is checked: a missing, unexpected or wrongly shaped tensor is refused naming the key; the two
    ``embed_tokens`` copies must be equal. ``separate``: the decoder keeps its own position table and
    embedding LayerNorm (``tgt_embedding.*``); None = exactly when the file's copies differ; False refuses a
    file whose copies differ. ``overrides`` set other config fields (e.g. dropout, ``pad_vocab_to_multiple=64``:
    extra rows are added as zeros and dropped again by :func:`save_official`).
    """
    blob = read_torch_weights(path)
    if not isinstance(blob, dict) or not isinstance(blob.get("weights"), dict):
        raise CheckpointError(
            f"{path}: expected a dict with a 'weights' mapping (the released DeltaLM layout)"
        )
    weights: dict[str, torch.Tensor] = blob["weights"]
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: weights[{key!r}] is not a tensor")
    differing = _copies_differ(weights)
    if differing == "tgt_embedding." + TOKENS:
        raise CheckpointError(
            f"{path}: {differing} differs from src_embedding.{TOKENS}; the official model shares its token "
            "embeddings"
        )
    if separate is False and differing is not None:
        raise CheckpointError(
            f"{path}: {differing} differs from its src_embedding copy; load it with separate decoder positions"
        )
    separate = differing is not None if separate is None else separate
    config = _infer_config(weights, heads, separate, overrides)
    mapping = official_keys(config)
    missing = sorted(set(mapping) - set(weights))
    if missing:
        raise CheckpointError(f"{path}: missing key {missing[0]}")
    unexpected = sorted(set(weights) - set(mapping))
    if unexpected:
        raise CheckpointError(f"{path}: unexpected key {unexpected[0]}")
    dtype = weights["src_embedding." + TOKENS].dtype
    model = DeltaLM(config).to(dtype)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, name in mapping.items():
            tensor, param = weights[key], params[name]
            if name == "embedding." + TOKENS:
                if tensor.shape != (config.vocab_size, config.d_model):
                    raise CheckpointError(f"{path}: {key} has shape {tuple(tensor.shape)}")
                param[: config.vocab_size].copy_(tensor)
                param[config.vocab_size :].zero_()
                continue
            if tensor.shape != param.shape:
                raise CheckpointError(
                    f"{path}: {key} has shape {tuple(tensor.shape)}, expected {tuple(param.shape)}"
                )
            param.copy_(tensor)
    return model


def official_state(model: DeltaLM) -> dict[str, torch.Tensor]:
    """The model's tensors under the official keys (src/tgt copies as separate tensors, logical vocab rows)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    out = {}
    for key, name in official_keys(model.config).items():
        tensor = params[name]
        if name == "embedding.embed_tokens.weight":
            tensor = tensor[: model.config.vocab_size]
        out[key] = tensor.clone().contiguous().cpu()
    return out


def save_official(model: DeltaLM, path: str | Path) -> Path:
    """Write ``{"weights": {...}}`` in the released layout (atomically: temp file + rename)."""
    path = Path(path)
    save_torch_atomic({"weights": official_state(model)}, path)
    return path
