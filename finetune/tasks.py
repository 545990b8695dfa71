"""The fine-tuning tasks: how a record becomes (source ids, target ids, reference text).

Sequences follow the vocabulary contract (DESIGN.md §3): source ``[tag] X </s>``, target ``Y </s>``.

- ``translation``: fields named by the language codes (``{"en": ..., "de": ...}``) or ``source``/``target``.
  The target-language tag (``__de__``) is prepended to the source (the official multilingual recipe).
- ``summarization``: ``document``/``summary`` (or ``source``/``target``); inputs truncated at 512 tokens.
- ``question_generation``: ``passage``, ``answer`` → ``question``; the source is ``passage [S] answer`` where
  **[S] is ``</s>`` (id 2)**, the separator XLM-R itself uses between segments, so no new token is needed.
  ``source``/``target`` records may carry a literal ``[S]`` (or ``[SEP]``) in the source text instead.
- ``data_to_text``: ``triples`` (a list of ``[subject, predicate, object]`` lists or ``"s | p | o"`` strings)
  → ``text``; triples are linearized as ``subject | predicate | object`` joined by `` ; `` (underscores become
  spaces, camelCase predicates are split: ``birthPlace`` → ``birth place``). ``source``/``target`` records are
  taken as already linearized.
- cross-lingual variants: any task whose target language differs from the source language gets the
  target-language tag prepended, exactly like translation.

Lines that cannot be used are counted by reason in the :class:`~finetune.readers.SkipReport`; truncated
sources are counted as ``truncated_source`` (kept, not skipped).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deltalm.vocabulary import EOS_ID, Vocabulary
from finetune.readers import Record, SkipReport

QG_SEPARATOR_ID = EOS_ID  # the "[S]" of "passage [S] answer"
_SEPARATOR_MARKERS = re.compile(r"\s*\[(?:S|SEP)\]\s*")
TASK_NAMES = ("translation", "summarization", "question_generation", "data_to_text")
DEFAULT_MAX_SOURCE = {
    "translation": 256,
    "summarization": 512,
    "question_generation": 256,
    "data_to_text": 256,
}
TSV_COLUMNS = {
    "translation": ("source", "target"),
    "summarization": ("source", "target"),
    "question_generation": ("passage", "answer", "question"),
    "data_to_text": ("source", "target"),
}
GENERATION_TASKS = ("summarization", "question_generation", "data_to_text")


class TaskError(ValueError):
    """A record (or task setup) that does not fit the task; the message is one line."""


@dataclass(frozen=True)
class Example:
    """One tokenized example: ``source`` ends with ``</s>``; ``target`` is ``Y </s>``."""

    source: np.ndarray
    target: np.ndarray
    reference: str
    src_lang: str
    tgt_lang: str
    origin: str
    unscored: str = ""  # evaluation only: "empty_reference" / "empty_source" (a hypothesis line, no score)


def _text(record: Record, *names: str) -> str:
    for name in names:
        if name in record.fields:
            value = record.fields[name]
            if not isinstance(value, str):
                raise TaskError(f"bad_field_type:{name} is {type(value).__name__}, expected text")
            return value.strip()
    raise TaskError(f"missing_field:needs one of {', '.join(names)}")


def _split_camel(word: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", word).lower()


def linearize_triples(triples: Sequence) -> str:
    """``[[s, p, o], ...]`` (or ``["s | p | o", ...]``) → ``"s | p | o ; s | p | o"``."""
    if not isinstance(triples, (list, tuple)) or not triples:
        raise TaskError("bad_triples:expected a non-empty list of triples")
    parts = []
    for triple in triples:
        if isinstance(triple, str):
            triple = [x.strip() for x in triple.split("|")]
        if (
            not isinstance(triple, (list, tuple))
            or len(triple) != 3
            or not all(isinstance(x, str) for x in triple)
        ):
            raise TaskError(f"bad_triples:{triple!r} is not a (subject, predicate, object) triple")
        subject, predicate, obj = (x.replace("_", " ").strip() for x in triple)
        parts.append(f"{subject} | {_split_camel(predicate)} | {obj}")
    return " ; ".join(parts)


def source_segments(task: str, record: Record, src_lang: str) -> list[str]:
    """The source text segments of ``record`` (joined by the [S] separator id for question generation)."""
    if task == "translation":
        return [_text(record, src_lang, "source")] if src_lang else [_text(record, "source")]
    if task == "summarization":
        return [_text(record, "document", "source")]
    if task == "question_generation":
        if "passage" in record.fields:
            return [_text(record, "passage"), _text(record, "answer")]
        parts = _SEPARATOR_MARKERS.split(_text(record, "source"))
        if len(parts) != 2:
            raise TaskError("missing_separator:source needs exactly one [S] between passage and answer")
        return [p.strip() for p in parts]
    if task == "data_to_text":
        if "triples" in record.fields:
            return [linearize_triples(record.fields["triples"])]
        return [_text(record, "source")]
    raise TaskError(f"unknown task {task!r} (known: {', '.join(TASK_NAMES)})")


def target_text(task: str, record: Record, tgt_lang: str) -> str:
    names = {
        "translation": (tgt_lang, "target") if tgt_lang else ("target",),
        "summarization": ("summary", "target"),
        "question_generation": ("question", "target"),
        "data_to_text": ("text", "target"),
    }[task]
    return _text(record, *names)


@dataclass(frozen=True)
class TaskSpec:
    """What :func:`build_examples` needs to know about one data file's task and languages."""

    task: str
    src_lang: str = ""
    tgt_lang: str = ""
    tag_source: bool | None = None  # None: translation and cross-lingual variants are tagged
    max_source_length: int | None = None  # None: the task default (512 summarization, 256 otherwise)
    max_target_length: int = 256

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise TaskError(f"unknown task {self.task!r} (known: {', '.join(TASK_NAMES)})")
        if self.tagged and not self.tgt_lang:
            raise TaskError(f"{self.task}: a target-language tag needs tgt_lang")

    @property
    def tagged(self) -> bool:
        if self.tag_source is not None:
            return self.tag_source
        cross_lingual = bool(self.tgt_lang) and bool(self.src_lang) and self.src_lang != self.tgt_lang
        return self.task == "translation" or cross_lingual

    @property
    def source_limit(self) -> int:
        return self.max_source_length or DEFAULT_MAX_SOURCE[self.task]


def build_examples(
    spec: TaskSpec,
    records: Sequence[Record],
    vocab: Vocabulary,
    report: SkipReport,
    training: bool = True,
    keep_unscored: bool = False,
) -> list[Example]:
    """Tokenize ``records`` for ``spec``; unusable records are counted in ``report`` by reason.

    Sources longer than the limit are truncated (counted as ``truncated_source``). Targets longer than
    ``max_target_length`` are skipped when ``training`` (``target_too_long``) and truncated otherwise (the
    reference text is kept whole for scoring).

    ``keep_unscored`` (evaluation: one hypothesis per test line) keeps a record with an empty target or source
    as an example marked ``unscored`` (``empty_reference``: generated but left out of scoring;
    ``empty_source``: an empty hypothesis) instead of skipping it.
    """
    prefix = [vocab.lang_tag_id(spec.tgt_lang)] if spec.tagged else []
    kept: list[tuple[Record, list[str], str, str]] = []
    for record in records:
        try:
            segments = source_segments(spec.task, record, spec.src_lang)
            target = target_text(spec.task, record, spec.tgt_lang)
        except TaskError as exc:
            reason, _, detail = str(exc).partition(":")
            report.add(reason, record.origin, detail)
            continue
        unscored = ""
        if not all(segments):
            if not keep_unscored:
                report.add("empty_source", record.origin)
                continue
            unscored = "empty_source"
        elif not target:
            if not keep_unscored:
                report.add("empty_target", record.origin)
                continue
            unscored = "empty_reference"
        kept.append((record, segments, target, unscored))
    if not kept:
        return []
    n_seg = len(kept[0][1])
    flat = [seg for _, segments, _, _ in kept for seg in segments] + [t for _, _, t, _ in kept]
    encoded = vocab.encode_batch(flat)
    src_encoded, tgt_encoded = encoded[: len(kept) * n_seg], encoded[len(kept) * n_seg :]
    examples = []
    src_budget = spec.source_limit - len(prefix) - 1
    for i, (record, _, target, unscored) in enumerate(kept):
        segs = src_encoded[i * n_seg : (i + 1) * n_seg]
        body: list[int] = []
        for j, seg in enumerate(segs):
            if j:
                body.append(QG_SEPARATOR_ID)
            body.extend(int(x) for x in seg)
        if len(body) > src_budget:
            # the message counts what the limit counts: the whole source (language tag and </s> included)
            full = len(prefix) + len(body) + 1
            report.add("truncated_source", record.origin, f"{full} > {spec.source_limit} tokens")
            body = body[:src_budget]
        tgt = tgt_encoded[i]
        if len(tgt) + 1 > spec.max_target_length:
            if training:
                report.add(
                    "target_too_long", record.origin, f"{len(tgt) + 1} > {spec.max_target_length} tokens"
                )
                continue
            report.add("truncated_target", record.origin)
            tgt = tgt[: spec.max_target_length - 1]
        examples.append(
            Example(
                source=np.asarray(prefix + body + [EOS_ID], dtype=np.int32),
                target=np.append(tgt, np.int32(EOS_ID)).astype(np.int32),
                reference=target,
                src_lang=spec.src_lang,
                tgt_lang=spec.tgt_lang,
                origin=record.origin,
                unscored=unscored,
            )
        )
    return examples
