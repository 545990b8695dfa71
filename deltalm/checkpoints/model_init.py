"""The ``init`` section → the model a run starts from. The one dispatcher of pre-training and fine-tuning.

``init.kind`` picks the source; the adapters (``deltalm/checkpoints/``) do the format work:

- ``random``: a fresh model of the ``model`` section (a preset or its fields; without either the run is
  refused rather than built at some default size);
- ``xlmr``: a Hugging Face XLM-R/InfoXLM directory (:func:`deltalm.checkpoints.xlmr.from_xlmr`);
- ``pretrained``: a ``save_pretrained`` directory (``python -m deltalm.export`` output, a fine-tuning run's
  ``best/``/``final/``/``averaged/``), or a pre-training / fine-tuning *run directory*, whose newest committed
  checkpoint is verified and consolidated from its ZeRO shards;
- ``official``: a released ``deltalm-*.pt`` (:func:`deltalm.checkpoints.official.load_official`).

One rule for the architecture (docs/design.md#model): every architecture field the config states
(:data:`ARCHITECTURE_FIELDS`, from a preset or a key) must equal the checkpoint's, else the run is refused in
one line naming both values; the fields it does not state come from the checkpoint. Run-time fields
(:data:`RUNTIME_FIELDS`: dropout, speed paths, vocabulary padding) always come from the config.

Fine-tuning passes its task vocabulary: the checkpoint's vocabulary must then be that vocabulary without
language tags (or with the same tags), and the tag rows are added by
:func:`deltalm.model.embedding_growth.grow_vocabulary`, tags the checkpoint was saved with keeping their rows by
name (:func:`init_lang_tags`); the config's ``vocab_size`` does not apply.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from deltalm.config_tree import ConfigError
from deltalm.engine.config import InitConfig
from deltalm.model.config import MODEL_PRESETS, DeltaLMConfig
from deltalm.vocabulary import Vocabulary

ARCHITECTURE_FIELDS = (
    "vocab_size",
    "d_model",
    "heads",
    "ffn",
    "encoder_layers",
    "decoder_blocks",
    "max_positions",
    "activation",
    "layer_norm_eps",
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
    if init.kind == "random":
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
    if init.kind == "random":
        return model.max_source_length, f"model.max_positions={model.max_positions}"
    rows = init_max_positions(init)
    if rows is None:
        return None
    return rows - model.pad_id - 1, f"max_positions={rows} of init.path {init.path}"


def init_lang_tags(init: InitConfig) -> tuple[str, ...]:
    """The language tags (in id order) the starting model was saved with; () when it has none or they are not
    recorded (official and XLM-R checkpoints, pre-training runs). A ``save_pretrained`` directory records them
    with its vocabulary; a fine-tuning run directory in its ``config.yaml`` (``task.lang_tags``) and in every
    checkpoint (the vocabulary record)."""
    if init.kind != "pretrained":
        return ()
    path = Path(init.path)
    if (path / "config.json").is_file():
        from deltalm.checkpoints.pretrained import saved_lang_tags

        return saved_lang_tags(path)
    if (path / "config.yaml").is_file():  # the run's config (cheap; the checkpoint holds the same tree)
        import yaml

        task = (yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}).get("task")
        tags = task.get("lang_tags") if isinstance(task, dict) else None
        if isinstance(tags, list) and tags:
            return tuple(str(t) for t in tags)
    from deltalm.checkpoints.engine_checkpoint import open_checkpoint

    record = open_checkpoint(path).vocabulary or {}
    return tuple(record.get("lang_tags", ()))


def build_model(
    config: DeltaLMConfig,
    init: InitConfig,
    *,
    seed: int,
    given: Collection[str] | None = None,
    vocab: Vocabulary | None = None,
):
    """The model to train, per ``init``.

    ``given``: the model fields the config states (``None``: every field, as for a ``DeltaLMConfig`` built in
    code). ``vocab``: fine-tuning's task vocabulary (language tags included). Errors: :class:`ConfigError`
    (one line) for a refused architecture, vocabulary or unreadable checkpoint.
    """
    import torch

    from deltalm.file_io import CheckpointError
    from deltalm.model.embedding_growth import grow_vocabulary, tag_row_sources
    from deltalm.model.model import DeltaLM

    stated = set(ARCHITECTURE_FIELDS if given is None else given) & set(ARCHITECTURE_FIELDS)
    if vocab is not None:
        stated.discard("vocab_size")
    torch.manual_seed(seed)
    if init.kind == "random":
        if not stated and given is not None:
            raise ConfigError(
                "init.kind=random builds the model the config describes, but it states no model shape: "
                f"set model.preset ({', '.join(MODEL_PRESETS)}) or the model.* fields"
            )
        return DeltaLM(config.replace(vocab_size=vocab.size) if vocab is not None else config)
    try:
        model = _load(config, init, seed, stated, vocab)
    except CheckpointError as exc:  # a bad file is a bad config: one line, exit 2
        raise ConfigError(f"init.path: {exc}") from None
    loaded = model.config
    for name in ARCHITECTURE_FIELDS:
        if name in stated and getattr(loaded, name) != getattr(config, name):
            raise ConfigError(
                f"init.path {init.path}: model.{name} is {getattr(loaded, name)} there, "
                f"{getattr(config, name)} in the config"
            )
    if vocab is None:
        return model
    saved = init_lang_tags(init)
    if saved and loaded.vocab_size == vocab.first_lang_tag + len(saved):  # tag rows follow their names
        return grow_vocabulary(
            model, vocab.size, tag_row_sources(vocab.first_lang_tag, saved, vocab.lang_tags)
        )
    if loaded.vocab_size not in (vocab.pretrain_size, vocab.size):
        raise ConfigError(
            f"init.path {init.path}: the model has a {loaded.vocab_size}-row vocabulary but task.spm_model gives "
            f"{vocab.pretrain_size} (+{len(vocab.lang_tags)} language tags); use the SentencePiece model the "
            "checkpoint was trained with"
        )
    return grow_vocabulary(model, vocab.size)


def describe(model, init: InitConfig) -> str:
    """One line for the console: the model's shape, its parameter count and where its weights came from."""
    c = model.config
    source = "random init" if init.kind == "random" else f"{init.kind} {init.path}"
    return (
        f"model: d_model {c.d_model}, {c.heads} heads, ffn {c.ffn}, {c.encoder_layers} encoder layers, "
        f"{c.decoder_blocks} decoder blocks, {c.vocab_size} vocabulary rows, {c.max_positions} positions; "
        f"{model.num_parameters() / 1e6:.2f}M parameters ({source})"
    )


def _load(config: DeltaLMConfig, init: InitConfig, seed: int, stated: set[str], vocab: Vocabulary | None):
    runtime = {k: getattr(config, k) for k in RUNTIME_FIELDS}
    if init.kind == "xlmr":
        from deltalm.checkpoints.xlmr import from_xlmr

        if vocab is not None:
            vocab_size = vocab.pretrain_size
        else:
            vocab_size = config.vocab_size if "vocab_size" in stated else None
        if "separate_decoder_positions" in stated:  # a build choice for XLM-R: both start as its tables
            runtime = {**runtime, "separate_decoder_positions": config.separate_decoder_positions}
        return from_xlmr(
            init.path,
            decoder_blocks=config.decoder_blocks if "decoder_blocks" in stated else None,
            vocab_size=vocab_size,
            seed=seed,
            **runtime,
        ).model
    if init.kind == "pretrained" and not (Path(init.path) / "config.json").is_file():
        return _from_run(init.path, runtime)
    if init.kind == "pretrained":
        from deltalm.checkpoints.pretrained import from_pretrained

        return from_pretrained(init.path, **runtime)
    from deltalm.checkpoints.official import load_official

    # the file does not record the head count: the config's when it states one
    return load_official(init.path, heads=config.heads if "heads" in stated else None, **runtime)


def _from_run(path: str, runtime: dict):
    """The newest committed checkpoint of a run directory, consolidated from its (ZeRO) shards."""
    from deltalm.checkpoints.engine_checkpoint import open_checkpoint
    from deltalm.export.exporter import consolidated_model
    from deltalm.model.model import DeltaLM

    loaded = consolidated_model(open_checkpoint(path))
    state = loaded.state_dict()
    model = DeltaLM(loaded.config.replace(**runtime))
    from deltalm.checkpoints.pretrained import _repad_vocabulary_rows

    _repad_vocabulary_rows(state, model.state_dict(), loaded.config.vocab_size)
    model.load_state_dict(state)
    return model
