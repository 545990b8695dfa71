"""The ``init`` section → a model: random, an HF XLM-R/InfoXLM directory, our pretrained directory, or an official
``deltalm-*.pt``. The adapters (deltalm/adapters/) do the format work; this module only dispatches and checks
that the loaded architecture is the configured one.
"""

from __future__ import annotations

from pathlib import Path

from deltalm.config_tree import ConfigError
from deltalm.engine.config import InitConfig
from deltalm.model_config import DeltaLMConfig

# What the checkpoint fixes: the run's config (written into every checkpoint and used by export) must say the same.
ARCHITECTURE_FIELDS = (
    "d_model",
    "heads",
    "ffn",
    "encoder_layers",
    "decoder_blocks",
    "vocab_size",
    "max_positions",
    "embedding_layer_norm",
    "separate_decoder_positions",
)
RUNTIME_FIELDS = (
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "pad_vocab_to_multiple",
    "attention_backend",
    "fused_qkv",
    "activation_checkpointing",
    "loss_chunk_size",
    "loss_fused",
    "cpu_packed_linear",
)


def check_init(init: InitConfig) -> None:
    """Refuse a missing init path before any process group starts."""
    if init.kind == "none":
        return
    path = Path(init.path)
    if init.kind in ("xlmr", "pretrained") and not path.is_dir():
        raise ConfigError(f"init.path: {init.kind} directory not found: {path}")
    if init.kind == "official" and not path.is_file():
        raise ConfigError(f"init.path: official checkpoint not found: {path}")


def init_max_positions(init: InitConfig) -> int | None:
    """Rows of the position table of the checkpoint ``init`` names, read from its metadata without loading
    weights: a ``save_pretrained`` directory's ``config.json``, an HF directory's ``max_position_embeddings``,
    the position table's rows in an official ``.pt`` (memory-mapped, nothing read but that shape). None when
    that does not say (random init, a run directory) or is unreadable (the loader reports that)."""
    import json

    if init.kind == "official":
        return _official_positions(Path(init.path))
    path = Path(init.path) / "config.json"
    if init.kind not in ("pretrained", "xlmr") or not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        value = (
            meta["model"]["max_positions"]
            if init.kind == "pretrained"
            else meta.get("max_position_embeddings", 514)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _official_positions(path: Path) -> int | None:
    import pickle

    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(blob["weights"]["src_embedding.embed_positions.weight"].shape[0])
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, pickle.UnpicklingError):
        return None


def position_limit(model: DeltaLMConfig, init: InitConfig) -> tuple[int, str] | None:
    """(longest sequence the position table holds, where the table comes from) of the model ``init`` gives:
    the ``model`` section for a random init, the checkpoint's metadata otherwise; None when only loading the
    checkpoint tells (the entry point checks the loaded model then)."""
    if init.kind == "none":
        return model.max_source_length, f"model.max_positions={model.max_positions}"
    rows = init_max_positions(init)
    if rows is None:
        return None
    return rows - model.pad_id - 1, f"max_positions={rows} of init.path {init.path}"


def build_model(config: DeltaLMConfig, init: InitConfig, *, seed: int):
    """The model to train; a loaded model whose shapes differ from ``config`` is a ConfigError."""
    import torch

    from deltalm.model import DeltaLM

    torch.manual_seed(seed)
    if init.kind == "none":
        return DeltaLM(config)
    from deltalm.adapters.checkpoint_io import CheckpointError as AdapterError

    try:
        model = _load(config, init, seed)
    except AdapterError as exc:  # a bad file is a bad config: one line, exit 2
        raise ConfigError(f"init.path: {exc}") from None
    loaded = model.config
    for name in ARCHITECTURE_FIELDS:
        if getattr(loaded, name) != getattr(config, name):
            raise ConfigError(
                f"init.path {init.path}: model.{name} is {getattr(loaded, name)} there, "
                f"{getattr(config, name)} in the config"
            )
    return model


def _load(config: DeltaLMConfig, init: InitConfig, seed: int):
    # Runtime knobs (dropout, speed paths, vocabulary padding) come from the config, not the checkpoint.
    dropouts = {k: getattr(config, k) for k in RUNTIME_FIELDS}
    if init.kind == "xlmr":
        from deltalm.adapters.xlmr import from_xlmr

        model = from_xlmr(
            init.path,
            decoder_blocks=config.decoder_blocks,
            vocab_size=config.vocab_size,
            seed=seed,
            **dropouts,
        ).model
    elif init.kind == "pretrained":
        from deltalm.adapters.pretrained import from_pretrained

        model = from_pretrained(init.path, **dropouts)
    else:
        from deltalm.adapters.official import load_official

        model = load_official(init.path, heads=config.heads, **dropouts)
    return model
