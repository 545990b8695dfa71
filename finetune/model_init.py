"""The model a fine-tuning run starts from, with its vocabulary grown for the language tags.

``init.kind`` (the engine's shared section) picks the source:

- ``none``: random initialization of ``model`` (preset + overrides), sized to the tagged vocabulary;
- ``pretrained``: a ``save_pretrained`` directory (``python -m deltalm.export`` output; a fine-tuning run's
  ``best``/``final``/``averaged``), or a pre-training / fine-tuning *run directory*, whose newest committed
  checkpoint is verified and consolidated from its ZeRO shards (:mod:`deltalm.export_checkpoint`);
- ``official``: a released ``deltalm-*.pt`` (:func:`deltalm.adapters.official.load_official`);
- ``xlmr``: a Hugging Face XLM-R/InfoXLM directory (:meth:`deltalm.model.DeltaLM.from_xlmr`).

Loaded models keep their architecture; the run's dropout settings (``model.dropout``, ``attention_dropout``,
``activation_dropout``) apply. The checkpoint's vocabulary must be the task's SentencePiece vocabulary. Language
tags the checkpoint was saved with (:func:`init_lang_tags`: a ``save_pretrained`` directory's vocabulary, a
fine-tuning run's ``task.lang_tags``) keep their rows by name; new tags get new rows
(:func:`finetune.embedding_growth.grow_vocabulary`).
"""

from __future__ import annotations

from pathlib import Path

from deltalm.adapters.checkpoint_io import CheckpointError
from deltalm.engine.config import InitConfig
from deltalm.model import DeltaLM
from deltalm.model_config import DeltaLMConfig
from deltalm.vocabulary import Vocabulary
from finetune.embedding_growth import grow_vocabulary, tag_row_sources


def init_lang_tags(init: InitConfig) -> tuple[str, ...]:
    """The language tags (in id order) the starting model was saved with; () when it has none or they are
    not recorded (official and XLM-R checkpoints, pre-training runs)."""
    if init.kind != "pretrained":
        return ()
    path = Path(init.path)
    if (path / "config.json").is_file():
        from deltalm.adapters.pretrained import saved_lang_tags

        return saved_lang_tags(path)
    if (path / "config.yaml").is_file():  # the run's config (cheap; the checkpoint holds the same tree)
        import yaml

        task = (yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}).get("task")
    else:
        from deltalm.export_checkpoint import open_checkpoint

        task = open_checkpoint(path).training_config.get("task")
    if not isinstance(task, dict):
        return ()
    from deltalm.config_tree import from_dict
    from finetune.config import TaskConfig

    return tuple(from_dict(TaskConfig, task, prefix="task").vocabulary_tags())


def _from_run(path: str, dropouts: dict) -> DeltaLM:
    """The newest committed checkpoint of a run directory, consolidated from its (ZeRO) shards."""
    from deltalm.export import consolidated_model
    from deltalm.export_checkpoint import open_checkpoint

    loaded = consolidated_model(open_checkpoint(path))
    model = DeltaLM(loaded.config.replace(**dropouts))
    model.load_state_dict(loaded.state_dict())
    return model


def initial_model(init: InitConfig, model_config: DeltaLMConfig, vocab: Vocabulary) -> DeltaLM:
    """The starting model for ``vocab`` (tags included), per ``init``; refuses a vocabulary mismatch."""
    dropouts = {
        "dropout": model_config.dropout,
        "attention_dropout": model_config.attention_dropout,
        "activation_dropout": model_config.activation_dropout,
    }
    if init.kind == "none":
        return DeltaLM(model_config.replace(vocab_size=vocab.size))
    if init.kind == "pretrained" and not (Path(init.path) / "config.json").is_file():
        model = _from_run(init.path, dropouts)  # a pre-training (or fine-tuning) run directory
    elif init.kind == "pretrained":
        from deltalm.adapters.pretrained import from_pretrained

        model = from_pretrained(init.path, **dropouts)
    elif init.kind == "official":
        from deltalm.adapters.official import load_official

        model = load_official(init.path, heads=model_config.heads, **dropouts)  # heads: not in the file
    elif init.kind == "xlmr":
        model = DeltaLM.from_xlmr(init.path, vocab_size=vocab.pretrain_size, **dropouts)
    else:
        raise CheckpointError(f"init.kind {init.kind!r} is not supported for fine-tuning")
    rows = model.config.vocab_size
    saved = init_lang_tags(init)
    if saved and rows == vocab.first_lang_tag + len(saved):
        return grow_vocabulary(
            model, vocab.size, tag_row_sources(vocab.first_lang_tag, saved, vocab.lang_tags)
        )
    if rows not in (vocab.pretrain_size, vocab.size):
        raise CheckpointError(
            f"{init.path}: the model has a {rows}-row vocabulary but task.spm_model gives {vocab.pretrain_size} "
            f"(+{len(vocab.lang_tags)} language tags); use the SentencePiece model the checkpoint was trained with"
        )
    return grow_vocabulary(model, vocab.size)
