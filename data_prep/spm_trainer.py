"""``train-spm``: a SentencePiece model whose ids fit the vocabulary contract (pieces 0,1,2 = <unk>,<s>,</s>;
no pad piece), trained on mono (CC100 layout), TSV or JSONL inputs, plain or compressed."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deltalm.text_lines import iter_byte_lines

from .errors import DataPrepError, describe_os_error
from .readers import base_suffix, check_input, open_input

DEFAULTS = {
    "model_type": "unigram",
    "character_coverage": 0.9995,
    "byte_fallback": True,
    "input_sentence_size": 1_000_000,
}
SHARE_SAMPLE = 20_000  # sentences per input label encoded after training for the byte-fallback share


@dataclass
class SpmSummary:
    """What ``train-spm`` did: sentences written, lines skipped by reason, byte-piece share per input label."""

    model: Path
    sentences: int = 0
    sampled: int = 0  # sentences SentencePiece trained on (a seeded uniform sample when there are more)
    skipped: dict[str, int] = field(default_factory=dict)
    byte_share: dict[str, tuple[float, int]] = field(default_factory=dict)  # label → (share, tokens encoded)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _label(path: Path) -> str:
    """A mono input's language label: the file name up to its first dot (CC100's ``zh.txt.xz`` → ``zh``)."""
    return path.name.split(".")[0] or path.name


def _sentences(path: Path, max_bytes: int, summary: SpmSummary) -> Iterator[tuple[str, str]]:
    """(label, sentence) for the text of an input: every side of TSV/JSONL pairs (labelled by JSONL key / TSV
    column), every non-blank line of mono text. Lines follow :mod:`deltalm.text_lines`; a line over ``max_bytes``
    or with invalid UTF-8 / a NUL byte is skipped and counted."""
    fmt = base_suffix(path)
    with open_input(path) as handle:
        try:
            for raw in iter_byte_lines(handle):
                if len(raw) > max_bytes:
                    summary.skip("line_too_long")
                    continue
                if b"\x00" in raw:
                    summary.skip("nul_byte")
                    continue
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    summary.skip("invalid_utf8")
                    continue
                if not line:
                    continue
                if fmt in (".jsonl", ".json"):
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        obj = None
                    if not isinstance(obj, dict):
                        summary.skip("bad_json")
                        continue
                    yield from ((k, v.strip()) for k, v in obj.items() if isinstance(v, str) and v.strip())
                elif fmt == ".tsv":
                    fields = line.split("\t")
                    yield from (
                        (f"{path.name}[{i + 1}]", f.strip()) for i, f in enumerate(fields) if f.strip()
                    )
                else:
                    yield _label(path), line
        except (EOFError, OSError) as exc:  # a broken compressed tail: train on what was readable
            summary.skip("broken_compression")
            print(f"train-spm: {path}: stopped reading ({exc.__class__.__name__})", file=sys.stderr)


def byte_piece_share(processor, sentences: list[str]) -> tuple[float, int]:
    """(share of byte-fallback pieces among the tokens of ``sentences``, number of tokens)."""
    total = byte = 0
    for pieces in processor.Encode(sentences, out_type=int):
        total += len(pieces)
        byte += sum(1 for p in pieces if processor.IsByte(p))
    return (byte / total if total else 0.0), total


def train_spm(
    inputs: list[str],
    output: str,
    vocab_size: int,
    input_sentence_size: int | None = None,
    num_threads: int = 2,
    character_coverage: float = DEFAULTS["character_coverage"],
    seed: int = 1234,
    max_line_bytes: int = 1 << 20,
) -> SpmSummary:
    """Train ``OUTPUT.model``/``OUTPUT.vocab``.

    Lines up to ``max_line_bytes`` (data_prep's own line limit; SentencePiece's limit is raised to it, so the
    trainer drops nothing silently) are training text; longer ones are counted in the summary's ``skipped``.
    When the inputs hold more than ``input_sentence_size`` sentences, a uniform sample of that many is drawn
    here (reservoir sampling, ``random.Random(seed)``) and written in input order; SentencePiece's own shuffle is
    off because it is not reproducible across processes (measured: two processes with the same seed trained
    different pieces). Same inputs and seed, same pieces.
    After training, the share of byte-fallback pieces is measured per input label on up to 20,000 sentences.
    """
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
    summary = SpmSummary(Path(f"{out}.model"))
    samples: dict[str, list[str]] = {}
    # Fixed scratch names (the model file records its training input path): same command, same bytes.
    tmp = Path(f"{out}.train-tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise describe_os_error(exc, f"cannot create {tmp}") from None
    try:
        text = tmp / "sentences.txt"
        capacity = input_sentence_size or DEFAULTS["input_sentence_size"]
        reservoir: list[tuple[int, str]] = []  # (input position, sentence); Algorithm R
        rng = random.Random(seed)
        for path in paths:
            for label, sentence in _sentences(path, max_line_bytes, summary):
                position = summary.sentences
                summary.sentences += 1
                if position < capacity:
                    reservoir.append((position, sentence))
                else:
                    slot = rng.randrange(position + 1)
                    if slot < capacity:
                        reservoir[slot] = (position, sentence)
                bucket = samples.setdefault(label, [])
                if len(bucket) < SHARE_SAMPLE:
                    bucket.append(sentence)
        if summary.sentences == 0:
            raise DataPrepError("train-spm: the inputs hold no text")
        reservoir.sort()
        summary.sampled = len(reservoir)
        try:
            with open(text, "w", encoding="utf-8", newline="\n") as handle:
                handle.writelines(sentence.replace("\n", " ") + "\n" for _, sentence in reservoir)
        except OSError as exc:
            raise describe_os_error(exc, f"cannot write training text in {tmp}") from None
        del reservoir
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
                input_sentence_size=0,  # every line of the file: the sample drawn above
                shuffle_input_sentence=False,
                max_sentence_length=max_line_bytes + 1,  # every line written passed our own limit
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
    processor = spm.SentencePieceProcessor(model_file=str(summary.model))
    summary.byte_share = {label: byte_piece_share(processor, s) for label, s in sorted(samples.items())}
    return summary
