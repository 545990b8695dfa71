"""``train-spm``: a SentencePiece model whose ids fit the vocabulary contract (pieces 0,1,2 = <unk>,<s>,</s>;
no pad piece), trained on mono (CC100 layout), TSV or JSONL inputs, plain or compressed."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import DataPrepError, describe_os_error
from .readers import base_suffix, check_input, open_input

DEFAULTS = {
    "model_type": "unigram",
    "character_coverage": 0.9995,
    "byte_fallback": True,
    "input_sentence_size": 1_000_000,
    "max_sentence_length": 4192,
}


def _sentences(path: Path, max_bytes: int) -> Iterator[str]:
    """Text lines of an input: every side of TSV/JSONL pairs, every non-blank line of mono text."""
    fmt = base_suffix(path)
    with open_input(path) as handle:
        try:
            for raw in handle:
                if len(raw) > max_bytes or b"\x00" in raw:
                    continue
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    continue
                if not line:
                    continue
                if fmt in (".jsonl", ".json"):
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(obj, dict):
                        yield from (v.strip() for v in obj.values() if isinstance(v, str) and v.strip())
                elif fmt == ".tsv":
                    yield from (f.strip() for f in line.split("\t") if f.strip())
                else:
                    yield line
        except (EOFError, OSError) as exc:  # a broken compressed tail: train on what was readable
            print(f"train-spm: {path}: stopped reading ({exc.__class__.__name__})")


def train_spm(
    inputs: list[str],
    output: str,
    vocab_size: int,
    input_sentence_size: int | None = None,
    num_threads: int = 2,
    character_coverage: float = DEFAULTS["character_coverage"],
    seed: int = 1234,
    max_line_bytes: int = 1 << 16,
) -> Path:
    """Train ``OUTPUT.model``/``OUTPUT.vocab``; returns the model path."""
    import sentencepiece as spm

    if vocab_size < 8:
        raise DataPrepError(f"--vocab-size must be >= 8, got {vocab_size}")
    paths = [check_input(p) for p in inputs]
    out = Path(output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise describe_os_error(exc, f"cannot create {out.parent}") from None
    if not os.access(out.parent, os.W_OK):
        raise DataPrepError(f"output directory is not writable: {out.parent}")
    count = 0
    # Fixed scratch names (the model file records its training input path): same command, same bytes.
    tmp = Path(f"{out}.train-tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise describe_os_error(exc, f"cannot create {tmp}") from None
    try:
        text = tmp / "sentences.txt"
        try:
            with open(text, "w", encoding="utf-8") as handle:
                for path in paths:
                    for sentence in _sentences(path, max_line_bytes):
                        handle.write(sentence.replace("\n", " ") + "\n")
                        count += 1
        except OSError as exc:
            raise describe_os_error(exc, f"cannot write training text in {tmp}") from None
        if count == 0:
            raise DataPrepError("train-spm: the inputs hold no text")
        prefix = tmp / "model"
        spm.set_random_generator_seed(seed)
        try:
            spm.SentencePieceTrainer.Train(
                input=str(text),
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                model_type=DEFAULTS["model_type"],
                character_coverage=character_coverage,
                byte_fallback=DEFAULTS["byte_fallback"],
                input_sentence_size=input_sentence_size or DEFAULTS["input_sentence_size"],
                shuffle_input_sentence=True,
                max_sentence_length=DEFAULTS["max_sentence_length"],
                unk_id=0,
                bos_id=1,
                eos_id=2,
                pad_id=-1,
                num_threads=num_threads,
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise DataPrepError(f"train-spm failed: {str(exc).splitlines()[0]}") from None
        try:
            for suffix in (".model", ".vocab"):
                os.replace(f"{prefix}{suffix}", f"{out}{suffix}")
        except OSError as exc:
            raise describe_os_error(exc, f"cannot write {out}.model") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Path(f"{out}.model")
