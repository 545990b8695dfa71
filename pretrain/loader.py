"""The pre-training loader: multilingual mixture of span-corruption and translation span-corruption batches,
rank-aware, exactly resumable.

Micro-batch k (the loader's counter) is a pure function of (seed, k, dp_rank, dp_world_size, manifests):

1. One generator seeded by (seed, k), identical on every rank, picks the objective of the *global* micro-batch
   (translation with probability ``translation_ratio``) and a stream for each of its
   ``micro_batch_size · dp_world_size`` examples (temperature mixture over token counts).
2. Each stream keeps a global window cursor: the examples of stream s take its next windows in order
   (see :mod:`pretrain.token_stream`), so across all ranks every window, hence every token of an epoch,
   is used exactly once. Rank r takes examples ``[r·B, (r+1)·B)`` of the global batch.
3. The rank's windows are span-corrupted with a generator seeded by (seed, k, rank).

Start-up reads only the ``manifest.json`` files (O(streams)); a stream's shard table is read at its first
window and a shard is mapped when a window first needs it, through one :class:`~pretrain.token_stream.ShardCache`
of at most ``data.max_open_shards`` mappings (no file descriptors). Page release (``data.release_pages_every``)
covers only the value ranges read since the last release.

The state (counter + window cursors) is the same on every rank, tiny, and reflects the batches handed out,
never the ones prefetched by the background thread. A state from another dataset (manifest fingerprint) or
with other corruption settings is refused, naming the difference.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from deltalm.config_tree import ConfigError
from deltalm.shard_format import ShardError, load_manifest, load_shard_columns, manifest_fingerprint
from deltalm.vocabulary import Vocabulary
from pretrain.data_config import PretrainDataConfig
from pretrain.mixture import StreamMixture
from pretrain.objectives import corrupted_lengths, corruption_lengths, span_corruption_batch
from pretrain.prefetch import Prefetcher
from pretrain.token_stream import ShardCache, ShardTable, TokenStream

log = logging.getLogger(__name__)

STATE_VERSION = 1
_TASK_STREAM = 0x7A5C  # generator-key tags keep the mixture and the noise draws independent
_NOISE_STREAM = 0x501E


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective: its streams' mixture and the corruption lengths."""

    name: str  # "span_corruption" | "translation_span_corruption"
    mixture: StreamMixture
    raw_length: int
    input_length: int
    target_length: int
    noise_density: float
    mean_span: float


@dataclass
class LoaderState:
    counter: int
    cursors: dict[str, int]

    def copy(self) -> LoaderState:
        return LoaderState(self.counter, dict(self.cursors))


@dataclass
class StreamSource:
    """One stream across the data directories: its record, totals and where its shard tables are."""

    name: str
    record: dict  # kind and languages (the first directory's record)
    rows: int
    tokens: int
    parts: list[tuple[str, dict]]  # (data directory, that directory's stream record)

    def shard_table(self, keep_sha256: bool = False) -> ShardTable:
        """The stream's shards, directory after directory (reads the tables: O(shards of this stream))."""
        parts = [(os.fspath(d), load_shard_columns(d, self.name, record)) for d, record in self.parts]
        return ShardTable(parts, keep_sha256)


def model_batch(inputs: np.ndarray, targets: np.ndarray, eos: int) -> dict[str, torch.Tensor]:
    """The docs/design.md#batches batch of span-corrupted rows; decoder input = ``eos`` + targets[:-1].

    ``inputs`` [B, S] and ``targets`` [B, T] (any integer dtype, e.g. the int32 of
    :func:`~pretrain.objectives.span_corruption_batch`) give ``encoder_input_tokens`` [B, S] and
    ``decoder_target_tokens`` [B, T] (int64), ``decoder_input_tokens`` [B, T] (int64, teacher forcing: ``eos``
    then the targets shifted right by one), an all-True bool ``encoder_padding_mask`` [B, S] and all-1.0 float32
    ``decoder_loss_weights`` [B, T]: every row is a full window, never padded.
    """
    enc = torch.from_numpy(inputs.astype(np.int64))
    tgt = torch.from_numpy(targets.astype(np.int64))
    dec = torch.empty_like(tgt)
    dec[:, 0] = eos
    dec[:, 1:] = tgt[:, :-1]
    return {
        "encoder_input_tokens": enc,
        "encoder_padding_mask": torch.ones(enc.shape, dtype=torch.bool),
        "decoder_input_tokens": dec,
        "decoder_target_tokens": tgt,
        "decoder_loss_weights": torch.ones(tgt.shape, dtype=torch.float32),
    }


def read_manifests(data_dirs: list[str]) -> tuple[dict[str, StreamSource], list[str], dict]:
    """Streams of every directory (same name = one stream, shards in directory order), fingerprints and
    tokenizer. Reads only the ``manifest.json`` files: O(streams), whatever the number of shards."""
    streams: dict[str, StreamSource] = {}
    fingerprints, tokenizer = [], None
    for directory in data_dirs:
        manifest = load_manifest(directory, shards=False)
        fingerprints.append(manifest_fingerprint(manifest))
        tok = manifest.get("tokenizer") or {}
        if tokenizer is None:
            tokenizer = tok
        elif tok != tokenizer:
            raise ShardError(f"{directory}/manifest.json: tokenizer {tok} differs from {data_dirs[0]}'s")
        for name, stream in sorted(manifest.get("streams", {}).items()):
            if stream.get("kind") not in ("mono", "parallel"):
                raise ShardError(f"{directory}/manifest.json: stream {name} has kind {stream.get('kind')!r}")
            try:
                rows, tokens = int(stream["rows"]), int(stream["tokens"])
            except (KeyError, TypeError, ValueError):
                raise ShardError(
                    f"{directory}/manifest.json: stream {name} lacks rows/tokens totals"
                ) from None
            source = streams.setdefault(name, StreamSource(name, stream, 0, 0, []))
            if source.record["kind"] != stream["kind"]:
                raise ShardError(
                    f"{directory}/manifest.json: stream {name} is {stream['kind']} here, "
                    f"{source.record['kind']} in an earlier data_dirs entry"
                )
            source.rows += rows
            source.tokens += tokens
            source.parts.append((directory, stream))
    return streams, fingerprints, tokenizer or {}


class PretrainLoader:
    """Span-corruption batches (docs/design.md#batches contract) for one data-parallel rank; see the module docstring."""

    def __init__(
        self,
        config: PretrainDataConfig,
        vocab: Vocabulary,
        *,
        micro_batch_size: int,
        seed: int,
        dp_rank: int = 0,
        dp_world_size: int = 1,
    ):
        config.validate()
        if not config.data_dirs:
            raise ConfigError("data.data_dirs: at least one data_prep dataset directory is required")
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        if not 0 <= dp_rank < dp_world_size:
            raise ValueError(f"dp_rank {dp_rank} is not in [0, dp_world_size={dp_world_size})")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self._prefetcher: Prefetcher | None = None
        self.streams: dict[str, TokenStream] = {}
        self.config, self.vocab = config, vocab
        self.micro_batch_size, self.seed = micro_batch_size, seed
        self.dp_rank, self.dp_world_size = dp_rank, dp_world_size

        self.cache = ShardCache(config.max_open_shards, config.verify_sha256)
        manifests, fingerprints, tokenizer = read_manifests(config.data_dirs)
        self.fingerprint = (
            fingerprints[0]
            if len(fingerprints) == 1
            else hashlib.sha256(json.dumps(fingerprints).encode()).hexdigest()
        )
        self._check_tokenizer(tokenizer)
        self.objectives: dict[str, ObjectiveSpec] = {}
        counts = {"mono": {}, "parallel": {}}
        for name, source in manifests.items():
            counts[source.record["kind"]][name] = source.tokens
        want = {"mono": config.translation_ratio < 1.0, "parallel": config.translation_ratio > 0.0}
        c = config
        settings = {
            "mono": ("span_corruption", c.input_length, c.noise_density, c.mean_span, "input_length"),
            "parallel": (
                "translation_span_corruption",
                c.translation_input_length,
                c.translation_noise_density,
                c.translation_mean_span,
                "translation_input_length",
            ),
        }
        try:
            for kind, setting in settings.items():
                if want[kind]:
                    self._open_objective(kind, *setting, manifests, counts[kind])
        except (ShardError, ConfigError):
            self.close()
            raise
        self._state = LoaderState(0, {name: 0 for name in sorted(self.streams)})

    def _open_objective(
        self,
        kind: str,
        objective_name: str,
        input_length: int,
        density: float,
        span: float,
        key: str,
        manifests: dict[str, StreamSource],
        counts: dict[str, int],
    ) -> None:
        """Set up one objective: its mixture over the ``kind`` streams, their lengths, their shards."""
        config, vocab = self.config, self.vocab
        if not any(counts.values()):
            other = "1" if kind == "mono" else "0"
            raise ConfigError(
                f"data.translation_ratio={config.translation_ratio} needs {kind} streams, "
                f"but {', '.join(config.data_dirs)} have none with tokens (set it to {other})"
            )
        raw, _ = corruption_lengths(input_length, density, span)
        real_in, real_tgt, spans = corrupted_lengths(raw, density, span)
        if spans > vocab.num_sentinels:
            raise ConfigError(
                f"data.{key}={input_length}: {spans} noise spans need more sentinels than the "
                f"vocabulary's {vocab.num_sentinels}; lower it"
            )
        mixture = StreamMixture.from_counts(counts, config.temperature)
        self.objectives[kind] = ObjectiveSpec(objective_name, mixture, raw, real_in, real_tgt, density, span)
        both = config.translation_directions == "both"
        for name in mixture.names:
            source = manifests[name]
            self.streams[name] = TokenStream(
                name,
                kind,
                source.record,
                functools.partial(source.shard_table, config.verify_sha256),
                source.rows,
                source.tokens,
                raw,
                self.seed,
                vocab.eos,
                self.cache,
                both_directions=both,
            )
        if self.dp_rank == 0:
            log.info(
                "%s: %d streams, raw %d -> inputs %d / targets %d, sampling (T=%s):\n%s",
                objective_name,
                len(mixture.names),
                raw,
                real_in,
                real_tgt,
                config.temperature,
                mixture.describe(counts),
            )

    def _check_tokenizer(self, tokenizer: dict) -> None:
        mine = self.vocab.fingerprint()
        for key in ("vocab_size", "num_sentinels", "spm_sha256"):
            theirs, ours = tokenizer.get(key), mine.get(key)
            if theirs is not None and ours is not None and theirs != ours:
                raise ShardError(f"dataset tokenizer {key}={theirs} does not match the vocabulary's {ours}")

    # ------------------------------------------------------------------ batches
    def _settings(self) -> dict:
        """What must match for a saved state to resume exactly (besides seed and manifests)."""
        c = self.config
        return {
            "translation_ratio": c.translation_ratio,
            "temperature": c.temperature,
            "input_length": c.input_length,
            "noise_density": c.noise_density,
            "mean_span": c.mean_span,
            "translation_input_length": c.translation_input_length,
            "translation_noise_density": c.translation_noise_density,
            "translation_mean_span": c.translation_mean_span,
            "translation_directions": c.translation_directions,
            "drop_sentinels": c.drop_sentinels,
        }

    def produce(self, state: LoaderState) -> tuple[dict[str, torch.Tensor], LoaderState]:
        """The micro-batch at ``state`` and the state after it (pure: ``state`` is not modified)."""
        tokens, objective, new_state = self.produce_windows(state)
        rng = np.random.default_rng([self.seed, state.counter, self.dp_rank, _NOISE_STREAM])
        inputs, targets = span_corruption_batch(
            tokens,
            rng,
            objective.noise_density,
            objective.mean_span,
            first_sentinel=self.vocab.first_sentinel,
            eos=self.vocab.eos,
            drop_sentinels=self.config.drop_sentinels,
        )
        every = self.config.release_pages_every
        if every and new_state.counter % every == 0:
            self.cache.release_pages()
        return model_batch(inputs, targets, self.vocab.eos), new_state

    def produce_windows(self, state: LoaderState) -> tuple[np.ndarray, ObjectiveSpec, LoaderState]:
        """The rank's raw windows [B, raw] of micro-batch ``state.counter``, its objective, and the next state."""
        rng = np.random.default_rng([self.seed, state.counter, _TASK_STREAM])
        if len(self.objectives) == 2:
            objective = self.objectives[
                "parallel" if rng.random() < self.config.translation_ratio else "mono"
            ]
        else:
            objective = next(iter(self.objectives.values()))
        B, world = self.micro_batch_size, self.dp_world_size
        picks = objective.mixture.sample(rng, B * world)
        cursors = dict(state.cursors)
        window = np.empty(B * world, dtype=np.int64)
        for i in np.unique(picks):
            sel = np.nonzero(picks == i)[0]
            name = objective.mixture.names[i]
            window[sel] = cursors[name] + np.arange(len(sel))
            cursors[name] += len(sel)
        mine = slice(self.dp_rank * B, (self.dp_rank + 1) * B)
        my_picks, my_windows = picks[mine], window[mine]
        out = np.empty((B, objective.raw_length), dtype=np.int32)
        for i in np.unique(my_picks):
            sel = np.nonzero(my_picks == i)[0]
            out[sel] = self.streams[objective.mixture.names[i]].windows(my_windows[sel])
        return out, objective, LoaderState(state.counter + 1, cursors)

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The next micro-batch of this rank (from the prefetch thread when ``data.prefetch`` > 0)."""
        if self.config.prefetch == 0:
            batch, self._state = self.produce(self._state)
            return batch
        if self._prefetcher is None:
            self._prefetcher = Prefetcher(self.produce, self._state.copy(), self.config.prefetch)
        try:
            batch, self._state = self._prefetcher.get()
        except BaseException:
            self._stop_prefetch()  # a later call starts afresh from the last handed-out state
            raise
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.next_batch()

    # ------------------------------------------------------------------ state
    @property
    def counter(self) -> int:
        """Micro-batches handed out so far."""
        return self._state.counter

    def state_dict(self) -> dict:
        """JSON-able state after the batches handed out (identical on every rank)."""
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "counter": self._state.counter,
            "cursors": dict(self._state.cursors),
            "settings": self._settings(),
            "micro_batch_size": self.micro_batch_size,
            "dp_world_size": self.dp_world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`; refuses another dataset, seed or corruption setting."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(
                f"not a pretrain loader state (version {state.get('version') if isinstance(state, dict) else None!r})"
            )
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"loader state is for dataset fingerprint {state.get('fingerprint')}, "
                f"but {', '.join(self.config.data_dirs)} has {self.fingerprint}"
            )
        if state.get("seed") != self.seed:
            raise ValueError(
                f"loader state was saved with seed {state.get('seed')}, this run uses {self.seed}"
            )
        saved = state.get("settings", {})
        for key, value in self._settings().items():
            if saved.get(key) != value:
                raise ValueError(f"loader state has data.{key}={saved.get(key)!r}, this run has {value!r}")
        cursors = {str(k): int(v) for k, v in state.get("cursors", {}).items()}
        if set(cursors) != set(self.streams):
            raise ValueError(f"loader state streams {sorted(cursors)} differ from {sorted(self.streams)}")
        for key in ("micro_batch_size", "dp_world_size"):
            if state.get(key) != getattr(self, key):
                log.warning(
                    "loader resumes with %s=%s (saved with %s): no window repeats, but batches differ from the "
                    "original run",
                    key,
                    getattr(self, key),
                    state.get(key),
                )
        self._stop_prefetch()
        self._state = LoaderState(int(state["counter"]), cursors)

    # ------------------------------------------------------------------ lifetime
    def _stop_prefetch(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

    def close(self) -> None:
        self._stop_prefetch()
        for stream in self.streams.values():
            stream.close()
        self.streams = {}
        if hasattr(self, "cache"):
            self.cache.close()

    def __enter__(self) -> PretrainLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._stop_prefetch()
