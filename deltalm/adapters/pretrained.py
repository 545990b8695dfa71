"""Our own checkpoint directory: ``model.safetensors`` + ``config.json`` (+ ``sentencepiece.model``).

The tied embedding / output projection is one parameter, stored once. Loading reads safetensors and JSON only
(never unpickles). Writing goes to a temp directory renamed into place, so a directory under the final name is
always complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from deltalm.adapters.checkpoint_io import CheckpointError, atomic_directory, read_safetensors
from deltalm.config_tree import ConfigError
from deltalm.model import DeltaLM
from deltalm.model_config import DeltaLMConfig
from deltalm.vocabulary import Vocabulary

FORMAT = "deltalm-pretrained"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SPM_FILE = "sentencepiece.model"


def vocabulary_record(vocabulary: Vocabulary) -> dict:
    """What ``config.json`` records of the vocabulary (``pretrained_vocabulary`` reads it back)."""
    return {
        "spm_size": vocabulary.spm_size,
        "num_sentinels": vocabulary.num_sentinels,
        "lang_tags": list(vocabulary.lang_tags),
        "spm_sha256": vocabulary.spm_sha256,
    }


def save_pretrained(model: DeltaLM, directory: str | Path, vocabulary: Vocabulary | None = None) -> Path:
    """Write ``model`` (and the vocabulary's SentencePiece model when known) to ``directory`` atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta: dict = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.config.to_dict()}
    if vocabulary is not None:
        meta["vocabulary"] = vocabulary_record(vocabulary)
    target = Path(directory)
    with atomic_directory(target) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if vocabulary is not None and vocabulary.spm_path:
            shutil.copyfile(vocabulary.spm_path, tmp / SPM_FILE)
            meta["vocabulary"]["spm_file"] = SPM_FILE
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return target


def _read_meta(directory: Path) -> dict:
    if not directory.exists():
        raise CheckpointError(f"model directory not found: {directory}")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory (a save_pretrained directory is expected)")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_FILE} (not a save_pretrained directory)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} config (format = {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    return meta


def from_pretrained(directory: str | Path, device: str | torch.device = "cpu", **overrides) -> DeltaLM:
    """Load a :func:`save_pretrained` directory; ``overrides`` change runtime config fields (dropout, ...)."""
    directory = Path(directory)
    meta = _read_meta(directory)
    try:
        config = DeltaLMConfig.from_dict({**meta["model"], **overrides})
    except (ConfigError, KeyError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: bad model config ({exc})") from None
    if not (directory / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE}")
    state = read_safetensors(directory / WEIGHTS_FILE)
    with torch.device("meta"):
        model = DeltaLM(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: missing tensor {missing[0]}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{directory / WEIGHTS_FILE}: unexpected tensor {unexpected[0]}")
    _repad_vocabulary_rows(state, expected, config.vocab_size)
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{directory / WEIGHTS_FILE}: {key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, assign=True)
    return model.to(device)


def _repad_vocabulary_rows(state: dict, expected: dict, vocab_size: int) -> None:
    """Follow a changed ``pad_vocab_to_multiple``: rows past the logical vocabulary are padding (zeros)."""
    key = "embedding.embed_tokens.weight"
    have, want = state.get(key), expected.get(key)
    if have is None or want is None or have.shape == want.shape or have.shape[1:] != want.shape[1:]:
        return
    if min(have.shape[0], want.shape[0]) < vocab_size:
        return  # a real vocabulary mismatch: reported by the shape check
    rows = torch.zeros((want.shape[0], *have.shape[1:]), dtype=have.dtype)
    rows[:vocab_size] = have[:vocab_size]
    state[key] = rows


def saved_lang_tags(directory: str | Path) -> tuple[str, ...]:
    """The language tags (id order) of the vocabulary saved with the model; () when none was saved."""
    info = _read_meta(Path(directory)).get("vocabulary") or {}
    return tuple(info.get("lang_tags") or ())


def pretrained_vocabulary(directory: str | Path) -> Vocabulary | None:
    """The vocabulary saved with the model (None when none was saved or it has no SentencePiece file)."""
    directory = Path(directory)
    info = _read_meta(directory).get("vocabulary")
    if not info or not info.get("spm_file"):
        return None
    vocab = Vocabulary.from_spm(
        directory / info["spm_file"], lang_tags=info["lang_tags"], num_sentinels=info["num_sentinels"]
    )
    if info.get("spm_sha256") and vocab.spm_sha256 != info["spm_sha256"]:
        raise CheckpointError(
            f"{directory / info['spm_file']}: sha256 differs from the one recorded in {CONFIG_FILE}"
        )
    return vocab
