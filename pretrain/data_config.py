"""``PretrainDataConfig``: the ``data`` section of the training config tree (pre-training batches).

One knob, one place: the objectives' densities and span lengths, the input lengths, the mixture
(temperature, translation ratio, directions) and the loader's prefetch depth and shard verification all
live here. The micro-batch size, seed and data-parallel rank/world are not data knobs: the engine passes
them to :class:`pretrain.loader.PretrainLoader`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from deltalm.config_tree import ConfigError, from_dict


@dataclass
class PretrainDataConfig:
    """What the pre-training loader reads and how it turns tokens into span-corruption batches.

    - ``data_dirs``: data_prep dataset directories (each with ``manifest.json``); streams with the same
      name in several directories are one stream (shards concatenated in the order given). May be empty
      in a config template; the loader refuses to start without one.
    - ``translation_ratio``: fraction of micro-batches made from parallel streams (translation span
      corruption); the rest come from monolingual streams (span corruption). Each micro-batch holds a
      single task, so no batch is ever padded.
    - ``temperature``: language sampling p_l ∝ n_l^(1/T) over the manifests' token counts, applied
      separately to the monolingual languages and to the parallel pairs.
    - ``input_length``: encoder length of span-corruption examples (512 → 568 raw tokens, 114 targets).
    - ``translation_input_length``: encoder length of translation span-corruption examples. With noise
      0.5 and span 3 a 512-token input needs 128 sentinels, more than the vocabulary's 100; 256 needs 64.
    - ``translation_directions``: ``both`` uses every pair as ``src </s> tgt`` and as ``tgt </s> src``
      (an epoch holds both); ``forward`` only as ``src </s> tgt``.
    - ``drop_sentinels``: targets without sentinels (the variant mixed into zero-shot fine-tuning).
    - ``prefetch``: micro-batches a background thread prepares ahead (0: no thread).
    - ``release_pages_every``: every this many micro-batches the loader drops the pages it read since the
      last release from its RSS (only those ranges, in only the shards read; they stay in the page cache and
      fault back in when read again). Without it the process's file-backed RSS climbs towards the part of
      the corpus touched so far (reclaimable page cache, not loader memory); 1 (default) keeps it near zero
      for a few percent of throughput. 0: never.
    - ``max_open_shards``: the most shards one loader keeps mapped at once (least recently used unmapped
      first). A stream reads one shard at a time, so a value above the number of streams (languages plus
      pairs) avoids reopening; an open shard holds one memory mapping and no file descriptor. Default 128.
    - ``spm_model``: optional path of the SentencePiece model the shards were made with; checked against the
      manifest's tokenizer sha256 at start and recorded in the run's config so export finds it.
    - ``verify_sha256``: hash every shard at open (slow on big corpora); size, rows, tokens and schema
      metadata are always checked against the manifest.
    """

    data_dirs: list[str] = field(default_factory=list)
    translation_ratio: float = 0.5
    temperature: float = 3.33
    input_length: int = 512
    noise_density: float = 0.15
    mean_span: float = 3.0
    translation_input_length: int = 256
    translation_noise_density: float = 0.5
    translation_mean_span: float = 3.0
    translation_directions: Literal["both", "forward"] = "both"
    drop_sentinels: bool = False
    prefetch: int = 4
    release_pages_every: int = 1
    max_open_shards: int = 128
    verify_sha256: bool = False
    spm_model: str = ""

    def objective_lengths(self) -> dict[str, tuple[int, int, int]]:
        """``{key: (encoder length, decoder length, noise spans)}`` of the batches each objective makes
        (``input_length`` for span corruption, ``translation_input_length`` for translation span corruption),
        the raw window chosen as T5 does (:func:`pretrain.objectives.corruption_lengths`)."""
        from pretrain.objectives import corrupted_lengths, corruption_lengths

        out = {}
        for key, density, span in (
            ("input_length", self.noise_density, self.mean_span),
            ("translation_input_length", self.translation_noise_density, self.translation_mean_span),
        ):
            if (key == "input_length" and self.translation_ratio == 1.0) or (
                key == "translation_input_length" and self.translation_ratio == 0.0
            ):
                continue  # that objective never runs
            raw, _ = corruption_lengths(getattr(self, key), density, span)
            inputs, targets, spans = corrupted_lengths(raw, density, span)
            out[key] = (inputs, targets - spans if self.drop_sentinels else targets, spans)
        return out

    def check_lengths(self, limit: int, table: str) -> None:
        """Refuse (one line) an objective whose encoder or decoder length exceeds ``limit`` positions."""
        for key, (inputs, targets, _spans) in self.objective_lengths().items():
            value = getattr(self, key)
            if inputs > limit:
                raise ConfigError(
                    f"data.{key}={value} exceeds the model's position table ({limit} tokens, {table}); "
                    f"set data.{key}<={limit}"
                )
            if targets > limit:
                raise ConfigError(
                    f"data.{key}={value} makes {targets}-token targets, more than the model's position table "
                    f"({limit} tokens, {table}); lower data.{key} or its noise density"
                )

    def check_sentinels(self, num_sentinels: int) -> None:
        """Refuse (one line) an objective needing more noise spans than the vocabulary has sentinels."""
        for key, (_inputs, _targets, spans) in self.objective_lengths().items():
            if spans > num_sentinels:
                raise ConfigError(
                    f"data.{key}={getattr(self, key)}: {spans} noise spans need more sentinels than the "
                    f"vocabulary's {num_sentinels}; lower it"
                )

    @classmethod
    def from_dict(cls, data: dict, prefix: str = "data") -> PretrainDataConfig:
        config = from_dict(cls, data, prefix=prefix)
        config.validate()
        return config

    def validate(self) -> None:
        """Range checks; each failure is a one-line :class:`ConfigError` naming the key."""
        if not 0.0 <= self.translation_ratio <= 1.0:
            raise ConfigError(f"data.translation_ratio: {self.translation_ratio} is not in [0, 1]")
        if not self.temperature > 0.0:
            raise ConfigError(f"data.temperature: {self.temperature} must be > 0")
        for key in ("noise_density", "translation_noise_density"):
            value = getattr(self, key)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"data.{key}: {value} is not in (0, 1)")
        for key in ("mean_span", "translation_mean_span"):
            value = getattr(self, key)
            if not value >= 1.0:
                raise ConfigError(f"data.{key}: {value} must be >= 1")
        for key in ("input_length", "translation_input_length"):
            value = getattr(self, key)
            if value < 4:
                raise ConfigError(f"data.{key}: {value} must be >= 4")
        if self.release_pages_every < 0:
            raise ConfigError(f"data.release_pages_every: {self.release_pages_every} must be >= 0")
        if self.max_open_shards < 1:
            raise ConfigError(f"data.max_open_shards: {self.max_open_shards} must be >= 1")
        if self.prefetch < 0:
            raise ConfigError(f"data.prefetch: {self.prefetch} must be >= 0")
        if any(not d for d in self.data_dirs):
            raise ConfigError("data.data_dirs: an entry is empty")
