"""Length-bucketed, resumable batches of tokenized examples, in the batch contract (docs/design.md#batches).

Training order is a pure function of ``(seed, epoch)``: the examples are shuffled, cut into buckets of
``bucket_factor × batch_size``, each bucket sorted by length and cut into batches, and the batches shuffled.
Data-parallel ranks take interleaved batches of the same global order (rank ``r`` of ``W`` takes batches
``g·W + r``), so the ranks never overlap and every rank sees equally many batches; a trailing group of fewer
than ``W`` batches is left for the next epoch's reshuffle. The state is ``(epoch, group)``, so a run resumed
from :meth:`BucketedBatches.state_dict` continues with the very next batch.

:class:`PairSampler` draws, for every step, which language pair the step's batch comes from with the dynamic
temperature (finetune/temperature_schedule.py); the draw depends only on ``(seed, step)``, identical on all ranks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from deltalm.vocabulary import EOS_ID, PAD_ID
from finetune.tasks import Example
from finetune.temperature_schedule import TemperatureSchedule


def collate(
    examples: Sequence[Example], pad_id: int = PAD_ID, eos_id: int = EOS_ID
) -> dict[str, torch.Tensor]:
    """Pad examples into the batch contract.

    ``decoder_input_tokens`` is ``</s> Y`` (the target shifted right, fairseq convention);
    ``encoder_padding_mask`` is True on real tokens (the model's convention); ``decoder_loss_weights`` is 1 on real target tokens.
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    b = len(examples)
    src_len = max(len(e.source) for e in examples)
    tgt_len = max(len(e.target) for e in examples)
    enc = np.full((b, src_len), pad_id, dtype=np.int64)
    dec_in = np.full((b, tgt_len), pad_id, dtype=np.int64)
    dec_tgt = np.full((b, tgt_len), pad_id, dtype=np.int64)
    weights = np.zeros((b, tgt_len), dtype=np.int64)
    for i, e in enumerate(examples):
        enc[i, : len(e.source)] = e.source
        n = len(e.target)
        dec_tgt[i, :n] = e.target
        dec_in[i, 0] = eos_id
        dec_in[i, 1:n] = e.target[: n - 1]
        weights[i, :n] = 1
    encoder_input = torch.from_numpy(enc)
    return {
        "encoder_input_tokens": encoder_input,
        "encoder_padding_mask": encoder_input.ne(pad_id),
        "decoder_input_tokens": torch.from_numpy(dec_in),
        "decoder_target_tokens": torch.from_numpy(dec_tgt),
        "decoder_loss_weights": torch.from_numpy(weights),
    }


def _lengths(examples: Sequence[Example]) -> np.ndarray:
    return np.array([max(len(e.source), len(e.target)) for e in examples], dtype=np.int64)


class BucketedBatches:
    """Endless, shuffled, length-bucketed training batches of one example list for one data-parallel rank."""

    def __init__(
        self,
        examples: Sequence[Example],
        batch_size: int,
        seed: int = 0,
        dp_rank: int = 0,
        dp_world_size: int = 1,
        bucket_factor: int = 50,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= dp_rank < dp_world_size:
            raise ValueError(f"dp_rank {dp_rank} must be in [0, {dp_world_size})")
        if len(examples) < batch_size * dp_world_size:
            raise ValueError(
                f"{len(examples)} examples cannot fill one batch of {batch_size} on each of {dp_world_size} ranks"
            )
        self.examples = list(examples)
        self.batch_size = batch_size
        self.seed = seed
        self.dp_rank = dp_rank
        self.dp_world_size = dp_world_size
        self.bucket_factor = bucket_factor
        self._lengths = _lengths(self.examples)
        self.epoch = 0
        self.group = 0
        self._order: list[np.ndarray] | None = None

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The global batch order (example indices) of ``epoch``, before rank interleaving."""
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.examples))
        bucket = self.batch_size * self.bucket_factor
        batches = []
        for start in range(0, len(perm), bucket):
            chunk = perm[start : start + bucket]
            chunk = chunk[np.argsort(self._lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        return [batches[i] for i in rng.permutation(len(batches))]

    def _groups_per_epoch(self, order: list[np.ndarray]) -> int:
        return len(order) // self.dp_world_size

    def next_batch(self) -> list[Example]:
        """This rank's next batch (advancing the shared position)."""
        while True:
            if self._order is None:
                self._order = self.epoch_batches(self.epoch)
            if self.group < self._groups_per_epoch(self._order):
                break
            self.epoch += 1
            self.group = 0
            self._order = None
        indices = self._order[self.group * self.dp_world_size + self.dp_rank]
        self.group += 1
        return [self.examples[i] for i in indices]

    def __iter__(self) -> Iterator[list[Example]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "group": self.group,
            "seed": self.seed,
            "num_examples": len(self.examples),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["num_examples"] != len(self.examples) or state["seed"] != self.seed:
            raise ValueError(
                f"batch state is for {state['num_examples']} examples with seed {state['seed']}, "
                f"not {len(self.examples)} with seed {self.seed}"
            )
        self.epoch, self.group, self._order = int(state["epoch"]), int(state["group"]), None


class PairSampler:
    """Per step, picks a language pair with the dynamic temperature, then that pair's next batch."""

    def __init__(
        self,
        batches: dict[str, BucketedBatches],
        schedule: TemperatureSchedule,
        seed: int = 0,
    ) -> None:
        if not batches:
            raise ValueError("PairSampler needs at least one language pair")
        self.names = sorted(batches)
        self.batches = batches
        self.sizes = [len(batches[n].examples) for n in self.names]
        self.schedule = schedule
        self.seed = seed
        self.step = 0

    def choose(self, step: int) -> str:
        """The pair of ``step`` (a pure function of seed and step)."""
        if len(self.names) == 1:
            return self.names[0]
        probs = self.schedule.probabilities(self.sizes, step)
        u = np.random.default_rng([self.seed, step, 7]).random()
        return self.names[min(int(np.searchsorted(np.cumsum(probs), u, side="right")), len(self.names) - 1)]

    def next_batch(self) -> tuple[str, list[Example]]:
        name = self.choose(self.step)
        self.step += 1
        return name, self.batches[name].next_batch()

    def state_dict(self) -> dict:
        return {"step": self.step, "pairs": {n: self.batches[n].state_dict() for n in self.names}}

    def load_state_dict(self, state: dict) -> None:
        if sorted(state["pairs"]) != self.names:
            raise ValueError(f"sampler state has pairs {sorted(state['pairs'])}, this run has {self.names}")
        self.step = int(state["step"])
        for n in self.names:
            self.batches[n].load_state_dict(state["pairs"][n])


def eval_batches(
    examples: Sequence[Example], batch_size: int, dp_rank: int = 0, dp_world_size: int = 1
) -> list[list[int]]:
    """Indices of evaluation batches for this rank: sorted by length (less padding), rank ``r`` takes ``r::W``."""
    order = np.argsort(-_lengths(examples), kind="stable")
    batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return batches[dp_rank::dp_world_size]
