"""Synthetic micro-batches with the batch contract (docs/design.md#batches), for the engine benchmarks and tests.

Sample ``k`` is a pure function of ``(seed, k)``; the rank's ``j``-th micro-batch holds the samples of global
slot ``j * world + rank``. Two ranks with accumulation 1 therefore see exactly the samples of one rank with
accumulation 2, and the state (micro-batches consumed) converts between world sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deltalm.config_tree import ConfigError
from deltalm.vocabulary import EOS_ID, NUM_SPECIALS, PAD_ID


@dataclass
class SyntheticDataConfig:
    source_len: int = 32
    target_len: int = 8
    vocab_size: int = 0  # 0 = the model's vocab_size

    def validate(self) -> None:
        if self.source_len < 2 or self.target_len < 2:
            raise ConfigError("data.source_len and data.target_len must be >= 2")


class SyntheticBatches:
    def __init__(
        self,
        config: SyntheticDataConfig,
        vocab_size: int,
        *,
        micro_batch_size: int,
        seed: int,
        dp_rank: int,
        dp_world_size: int,
    ) -> None:
        self.config = config
        self.vocab_size = config.vocab_size or vocab_size
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.dp_rank = dp_rank
        self.dp_world_size = dp_world_size
        self.consumed = 0  # micro-batches this rank has produced

    def _sample(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, k])
        src = rng.integers(
            NUM_SPECIALS, self.vocab_size, rng.integers(self.config.source_len // 2, self.config.source_len)
        )
        tgt = rng.integers(
            NUM_SPECIALS, self.vocab_size, rng.integers(self.config.target_len // 2, self.config.target_len)
        )
        return src, tgt

    def next_batch(self) -> dict[str, torch.Tensor]:
        slot = self.consumed * self.dp_world_size + self.dp_rank
        self.consumed += 1
        b, s, t = self.micro_batch_size, self.config.source_len, self.config.target_len
        enc = np.full((b, s), PAD_ID, dtype=np.int64)
        dec_in = np.full((b, t), PAD_ID, dtype=np.int64)
        dec_out = np.full((b, t), PAD_ID, dtype=np.int64)
        for i in range(b):
            src, tgt = self._sample(slot * b + i)
            enc[i, : len(src)] = src
            enc[i, len(src)] = EOS_ID
            dec_in[i, 0] = EOS_ID
            dec_in[i, 1 : len(tgt) + 1] = tgt
            dec_out[i, : len(tgt)] = tgt
            dec_out[i, len(tgt)] = EOS_ID
        enc_t, dec_out_t = torch.from_numpy(enc), torch.from_numpy(dec_out)
        return {
            "encoder_input_tokens": enc_t,
            "encoder_padding_mask": enc_t.ne(PAD_ID),
            "decoder_input_tokens": torch.from_numpy(dec_in),
            "decoder_target_tokens": dec_out_t,
            "decoder_loss_weights": dec_out_t.ne(PAD_ID).long(),
        }

    def state_dict(self) -> dict:
        return {"consumed": self.consumed, "dp_world_size": self.dp_world_size}

    def load_state_dict(self, state: dict) -> None:
        slots = int(state["consumed"]) * int(state["dp_world_size"])
        if slots % self.dp_world_size:
            raise ValueError(
                f"cannot spread {slots} consumed micro-batch slots over {self.dp_world_size} ranks"
            )
        self.consumed = slots // self.dp_world_size
