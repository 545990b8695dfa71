"""From the ``task`` config section to tokenized examples and the trainer's batch source.

:class:`FinetuneBatches` is what :class:`deltalm.engine.trainer.Trainer` pulls micro-batches from: task
batches drawn per language pair with the dynamic temperature, optionally interleaved with zero-shot
span-corruption batches, collated into the batch contract. Its state (epoch/position of every pair, the
micro-batch counter) is saved in every committed checkpoint, so a resumed run continues with the next batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from deltalm.vocabulary import Vocabulary
from finetune.batching import BucketedBatches, PairSampler, collate
from finetune.config import DataFileConfig, TaskConfig
from finetune.readers import DataError, SkipReport, read_records
from finetune.tasks import TSV_COLUMNS, Example, TaskSpec, build_examples
from finetune.temperature import TemperatureSchedule
from finetune.zero_shot import ZeroShotMixer, mono_chunks


def task_vocabulary(
    task: TaskConfig, spm_model: str | None = None, saved_tags: tuple[str, ...] = ()
) -> Vocabulary:
    """The pre-trained vocabulary with a language tag for every target language of the task's files.

    Tags follow :meth:`TaskConfig.vocabulary_tags`: the initial model's ``saved_tags`` first (same ids), then
    new target languages.
    """
    path = spm_model or task.spm_model
    if not Path(path).is_file():
        raise DataError(f"task.spm_model: SentencePiece model not found: {path}")
    vocab = Vocabulary.from_spm(path, num_sentinels=task.num_sentinels)
    return vocab.with_lang_tags(task.vocabulary_tags(saved_tags))


def task_spec(task: TaskConfig, file: DataFileConfig) -> TaskSpec:
    return TaskSpec(
        task.name,
        file.src_lang,
        file.tgt_lang,
        tag_source=task.tag_source,
        max_source_length=task.max_source_length,
        max_target_length=task.max_target_length,
    )


def load_split(
    task: TaskConfig,
    files: list[DataFileConfig],
    vocab: Vocabulary,
    training: bool,
    limit: int = 0,
    keep_unscored: bool = False,
) -> tuple[dict[str, list[Example]], SkipReport]:
    """Examples per language pair (``src-tgt``) of ``files``; bad lines counted in the returned report.

    ``limit`` > 0 keeps the first ``limit`` examples of each file (validation during training).
    ``keep_unscored``: records with an empty source or reference stay, marked (see :func:`build_examples`).
    """
    report = SkipReport()
    out: dict[str, list[Example]] = {}
    for file in files:
        records = read_records(file.path, report, fmt=file.format, columns=TSV_COLUMNS[task.name])
        examples = build_examples(
            task_spec(task, file), records, vocab, report, training=training, keep_unscored=keep_unscored
        )
        if limit:
            examples = examples[:limit]
        if not examples:
            raise DataError(f"{file.path}: no usable examples ({report.summary().splitlines()[0]})")
        out.setdefault(file.pair, []).extend(examples)
    return out, report


def print_report(name: str, report: SkipReport) -> None:
    print(f"[finetune] {name}: {report.summary()}", file=sys.stderr, flush=True)


class FinetuneBatches:
    """The fine-tuning :class:`~deltalm.engine.trainer.BatchSource` (collated micro-batches, resumable)."""

    def __init__(
        self,
        task: TaskConfig,
        train: dict[str, list[Example]],
        vocab: Vocabulary,
        micro_batch_size: int,
        seed: int,
        dp_rank: int,
        dp_world_size: int,
        rise_micro_batches: int,
    ) -> None:
        pairs = {
            name: BucketedBatches(
                examples, micro_batch_size, seed=seed + i, dp_rank=dp_rank, dp_world_size=dp_world_size
            )
            for i, (name, examples) in enumerate(sorted(train.items()))
        }
        schedule = TemperatureSchedule(
            task.temperature_start, task.temperature_end, max(rise_micro_batches, 1)
        )
        self.source: PairSampler | ZeroShotMixer = PairSampler(pairs, schedule, seed=seed)
        self.mono_report: SkipReport | None = None
        if task.zero_shot_ratio > 0:
            self.mono_report = SkipReport()
            chunks = mono_chunks(
                [(m.path, m.lang) for m in task.zero_shot_mono],
                vocab,
                task.zero_shot_input_length,
                self.mono_report,
            )
            if len(chunks) < micro_batch_size * dp_world_size:
                raise DataError(f"task.zero_shot_mono: only {len(chunks)} text chunks, too few for one batch")
            tagged = any(task_spec(task, f).tagged for f in task.train)
            tag_ids = {lang: vocab.lang_tag_id(lang) for lang in vocab.lang_tags} if tagged else {}
            mono = BucketedBatches(
                chunks, micro_batch_size, seed=seed + 1000, dp_rank=dp_rank, dp_world_size=dp_world_size
            )
            self.source = ZeroShotMixer(
                self.source,
                mono,
                vocab,
                ratio=task.zero_shot_ratio,
                seed=seed,
                noise_density=task.zero_shot_noise_density,
                mean_span=task.zero_shot_mean_span,
                tag_ids=tag_ids,
            )
        self.last_kind = ""

    def next_batch(self) -> dict[str, torch.Tensor]:
        kind, examples = self.source.next_batch()
        self.last_kind = kind
        return collate(examples)

    def state_dict(self) -> dict:
        return {"source": self.source.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state["source"])
