"""``FinetuneConfig``: the engine's shared sections (deltalm/engine/config.py) plus the ``task`` section.

Fine-tuning defaults differ from pre-training only where the paper says so: Adam β=(0.9, 0.98), lr 3e-4,
4,000 warm-up steps on the inverse-sqrt schedule (``schedule.kind: linear`` also works), gradient clipping
1.0, dropout 0.1 (the model default). Every task knob lives in ``task`` and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from deltalm.config_tree import ConfigError
from deltalm.engine.config import OptimizerConfig, RunConfig, ScheduleConfig, TrainingConfig, build_config
from deltalm.engine.model_init import position_limit
from finetune.tasks import DEFAULT_MAX_SOURCE, GENERATION_TASKS, TASK_NAMES
from finetune.zero_shot import MIN_CHUNK

BEST_METRICS = ("auto", "loss", "bleu", "rouge1", "rouge2", "rougeL", "meteor")


@dataclass
class DataFileConfig:
    """One data file: JSONL, TSV or aligned ``.src``/``.tgt`` (prefix), with its languages."""

    path: str = ""
    src_lang: str = ""
    tgt_lang: str = ""
    format: Literal["auto", "jsonl", "tsv", "aligned"] = "auto"

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("task data file: path must not be empty")

    @property
    def pair(self) -> str:
        return f"{self.src_lang or 'src'}-{self.tgt_lang or 'tgt'}"


@dataclass
class MonoFileConfig:
    """Monolingual text in CC100 layout (one paragraph a line, blank line between documents)."""

    path: str = ""
    lang: str = ""

    def validate(self) -> None:
        if not self.path or not self.lang:
            raise ConfigError("task.zero_shot_mono entries need both path and lang")


@dataclass
class TaskConfig:
    """What to fine-tune on and how to validate and generate.

    - ``spm_model``: the SentencePiece model of the pre-trained vocabulary; language tags of every
      ``tgt_lang`` are appended to it (deltalm.vocabulary.Vocabulary.with_lang_tags), growing the embedding.
    - ``temperature_*``: dynamic sampling over the ``train`` files (language pairs), rising over
      ``temperature_rise_steps`` (0 = the whole run).
    - ``zero_shot_ratio``: fraction of optimizer steps on span corruption (sentinels dropped from targets)
      over ``zero_shot_mono``; 0.5 is the paper's zero-shot recipe, 0 disables it.
    - ``max_len_a``/``max_len_b``: generation length ``a·source_len + b``; the default (-1) is 1.2·x+10 for
      translation and 0·x+80 for generation tasks.
    - ``bleu_tokenize``: sacreBLEU tokenizer; ``auto`` = sacreBLEU's choice for each target language (``zh``,
      ``ja-mecab``, ``ko-mecab``, else ``13a``); a name (``13a``, ``intl``, ``char``, ...) applies to every pair.
    - ``lang_tags``: the vocabulary's language tags in id order. Empty = resolved when the run starts (the
      initial model's saved tags keep their ids, then new target languages in first-seen order) and recorded
      in the run's ``config.yaml``; every target language must be listed when set.
    - ``best_metric``: ``auto`` = BLEU for translation, question generation and data-to-text, ROUGE-L for
      summarization; ``loss`` ranks by validation loss (no generation during training).
    """

    name: Literal["translation", "summarization", "question_generation", "data_to_text"] = "translation"
    spm_model: str = ""
    num_sentinels: int = 100
    train: list[DataFileConfig] = field(default_factory=list)
    valid: list[DataFileConfig] = field(default_factory=list)
    test: list[DataFileConfig] = field(default_factory=list)
    tag_source: bool | None = None
    max_source_length: int | None = None
    max_target_length: int = 256
    temperature_start: float = 1.0
    temperature_end: float = 5.0
    temperature_rise_steps: int = 0
    zero_shot_ratio: float = 0.0
    zero_shot_mono: list[MonoFileConfig] = field(default_factory=list)
    zero_shot_input_length: int = 128
    zero_shot_noise_density: float = 0.15
    zero_shot_mean_span: float = 3.0
    label_smoothing: float = 0.1
    validate_every: int = 500
    valid_max_examples: int = 0  # 0 = all
    best_metric: str = "auto"
    beam_size: int = 5
    max_len_a: float = -1.0
    max_len_b: int = -1
    min_len: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    eval_batch_size: int = 16
    bleu_tokenize: str = "auto"
    average_last: int = 5
    lang_tags: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.name not in TASK_NAMES:
            raise ConfigError(f"task.name: {self.name!r} is not one of {list(TASK_NAMES)}")
        if self.best_metric not in BEST_METRICS:
            raise ConfigError(f"task.best_metric: {self.best_metric!r} is not one of {list(BEST_METRICS)}")
        metric = self.resolved_best_metric
        if metric not in ("loss", "bleu") and self.name == "translation":
            raise ConfigError(f"task.best_metric: translation is scored with BLEU only, not {metric}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"task.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.zero_shot_ratio < 1.0:
            raise ConfigError(f"task.zero_shot_ratio must be in [0, 1), got {self.zero_shot_ratio}")
        if self.zero_shot_ratio > 0 and not self.zero_shot_mono:
            raise ConfigError("task.zero_shot_ratio > 0 needs task.zero_shot_mono files")
        if self.temperature_start <= 0 or self.temperature_end <= 0:
            raise ConfigError("task.temperature_start and task.temperature_end must be > 0")
        for name in ("beam_size", "eval_batch_size", "max_target_length", "average_last"):
            if getattr(self, name) < 1:
                raise ConfigError(f"task.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_source_length is not None and self.max_source_length < 3:
            raise ConfigError(f"task.max_source_length must be >= 3, got {self.max_source_length}")
        self.check_bleu_tokenizers(self.scored_files())
        if len(set(self.lang_tags)) != len(self.lang_tags) or not all(self.lang_tags):
            raise ConfigError(f"task.lang_tags: tags must be non-empty and distinct, got {self.lang_tags}")
        missing = [lang for lang in self.languages() if self.lang_tags and lang not in self.lang_tags]
        if missing:
            raise ConfigError(
                f"task.lang_tags {self.lang_tags} has no tag for target language {missing[0]!r}"
            )
        if self.num_sentinels < 1:
            raise ConfigError(f"task.num_sentinels must be >= 1, got {self.num_sentinels}")
        if self.zero_shot_input_length < MIN_CHUNK:
            raise ConfigError(
                f"task.zero_shot_input_length must be >= {MIN_CHUNK}, got {self.zero_shot_input_length}"
            )
        if not 0.0 < self.zero_shot_noise_density < 1.0:
            raise ConfigError(
                f"task.zero_shot_noise_density must be in (0, 1), got {self.zero_shot_noise_density}"
            )
        if not self.zero_shot_mean_span >= 1.0:
            raise ConfigError(f"task.zero_shot_mean_span must be >= 1, got {self.zero_shot_mean_span}")
        if (self.max_len_a < 0) != (self.max_len_b < 0) or min(self.max_len_a, self.max_len_b) < -1:
            raise ConfigError(
                f"task.max_len_a and task.max_len_b: set both >= 0 or leave both -1 (the task's default), "
                f"got {self.max_len_a} and {self.max_len_b}"
            )
        for name in ("min_len", "no_repeat_ngram_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"task.{name} must be >= 0, got {getattr(self, name)}")
        if not math.isfinite(self.length_penalty):
            raise ConfigError(f"task.length_penalty must be finite, got {self.length_penalty}")
        for name in ("validate_every", "temperature_rise_steps", "valid_max_examples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"task.{name} must be >= 0, got {getattr(self, name)}")

    # ------------------------------------------------------------------ derived
    @property
    def metrics(self) -> tuple[str, ...]:
        return ("bleu",) if self.name == "translation" else ("bleu", "rouge", "meteor")

    @property
    def resolved_best_metric(self) -> str:
        if self.best_metric != "auto":
            return self.best_metric
        return "rougeL" if self.name == "summarization" else "bleu"

    @property
    def length_rule(self) -> tuple[float, int]:
        """(a, b) of the generation length limit a·x + b."""
        if self.max_len_a >= 0 and self.max_len_b >= 0:
            return self.max_len_a, self.max_len_b
        return (0.0, 80) if self.name in GENERATION_TASKS else (1.2, 10)

    def check_lengths(self, limit: int, table: str) -> None:
        """Refuse (one line) length limits the model's position table (``limit`` tokens) cannot hold: the
        source and target limits, and the zero-shot span-corruption inputs (with a tag) and targets."""
        from pretrain.objectives import corrupted_lengths

        source = self.max_source_length or DEFAULT_MAX_SOURCE[self.name]
        lengths = [("max_source_length", source, source), ("max_target_length", self.max_target_length, None)]
        if self.zero_shot_ratio > 0:
            inputs, targets, spans = corrupted_lengths(
                self.zero_shot_input_length, self.zero_shot_noise_density, self.zero_shot_mean_span
            )
            if spans > self.num_sentinels:
                raise ConfigError(
                    f"task.zero_shot_input_length={self.zero_shot_input_length}: {spans} noise spans need more "
                    f"sentinels than task.num_sentinels={self.num_sentinels}; lower it"
                )
            lengths += [
                ("zero_shot_input_length", self.zero_shot_input_length, inputs + 1),
                ("zero_shot_input_length", self.zero_shot_input_length, targets - spans),
            ]
        for key, value, tokens in lengths:
            tokens = value if tokens is None else tokens
            if tokens > limit:
                made = "" if tokens == value else f" makes {tokens}-token sequences and"
                raise ConfigError(
                    f"task.{key}={value}{made} exceeds the model's position table ({limit} tokens, {table}); "
                    f"lower task.{key}"
                )

    def scored_files(self) -> list[DataFileConfig]:
        """Files BLEU is computed on: ``test``, and ``valid`` unless validation ranks by loss."""
        return [*([] if self.resolved_best_metric == "loss" else self.valid), *self.test]

    def check_bleu_tokenizers(self, files: list[DataFileConfig]) -> None:
        """Refuse (ConfigError) a BLEU tokenizer that is unknown or whose package is missing, per target language."""
        from finetune.metrics import BLEU_TOKENIZE_AUTO, bleu_tokenizer_for, check_bleu_tokenizer

        if self.bleu_tokenize != BLEU_TOKENIZE_AUTO:
            where = "task.bleu_tokenize"
            try:
                check_bleu_tokenizer(self.bleu_tokenize, where)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        for f in files:
            name = bleu_tokenizer_for(f.tgt_lang, self.bleu_tokenize)
            try:
                check_bleu_tokenizer(name, f"BLEU for target {f.tgt_lang!r} ({f.path})")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

    def vocabulary_tags(self, saved: tuple[str, ...] | list[str] = ()) -> list[str]:
        """Language tags of the task vocabulary in id order: ``lang_tags`` when set, else the initial model's
        ``saved`` tags (each keeps its id) followed by the new target languages in first-seen order."""
        tags = list(self.lang_tags or saved)
        return tags + [lang for lang in self.languages() if lang not in tags]

    def languages(self) -> list[str]:
        """Target languages needing a tag (in first-seen order)."""
        langs: list[str] = []
        for f in [*self.train, *self.valid, *self.test]:
            if f.tgt_lang and f.tgt_lang not in langs:
                langs.append(f.tgt_lang)
        return langs


def _finetune_defaults() -> tuple[RunConfig, OptimizerConfig, ScheduleConfig]:
    return (
        RunConfig(run_dir="runs/finetune"),
        OptimizerConfig(lr=3e-4, betas=(0.9, 0.98), weight_decay=0.0, grad_clip=1.0),
        ScheduleConfig(kind="inverse_sqrt", warmup_steps=4000),
    )


@dataclass
class FinetuneConfig(TrainingConfig):
    run: RunConfig = field(default_factory=lambda: _finetune_defaults()[0])
    optimizer: OptimizerConfig = field(default_factory=lambda: _finetune_defaults()[1])
    schedule: ScheduleConfig = field(default_factory=lambda: _finetune_defaults()[2])
    task: TaskConfig = field(default_factory=TaskConfig)

    def validate(self) -> None:
        super().validate()
        if not self.task.spm_model:
            raise ConfigError("task.spm_model is required (the pre-trained vocabulary's SentencePiece model)")
        if not self.task.train:
            raise ConfigError("task.train: at least one training data file is required")
        limit = position_limit(self.model, self.init)  # None: checked on the loaded model (finetune.train)
        if limit is not None:
            self.task.check_lengths(*limit)
        if self.deepspeed.zero_stage == 3:
            raise ConfigError(
                "deepspeed.zero_stage 3 is not supported for fine-tuning (validation and weight export need "
                "whole parameters on every rank); use ZeRO 0-2"
            )


def load_finetune_config(path: str | None, overrides: list[str], task: str | None = None) -> FinetuneConfig:
    """YAML + ``--set`` overrides → validated :class:`FinetuneConfig`; ``task`` (``--task``) sets task.name."""
    if task is not None:
        overrides = [f"task.name={task}", *overrides]
    return build_config(FinetuneConfig, {}, path, overrides)
