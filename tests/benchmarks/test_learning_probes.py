"""The held-out pre-training batches of benchmarks/learning_probes.py have the loader's layout (one builder)."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks import learning_probes as probes
from deltalm.vocabulary import EOS_ID, Vocabulary
from pretrain.loader import model_batch

VOCAB = Vocabulary(spm_size=300)


class WordIds:
    """A stand-in for the SentencePiece encoder: one id per whitespace-separated word (stable, no model file)."""

    first_sentinel = VOCAB.first_sentinel

    def encode_batch(self, lines: list[str]) -> list[np.ndarray]:
        return [
            np.array([10 + sum(map(ord, w)) % 250 for w in line.split()], dtype=np.int32) for line in lines
        ]


def check_layout(batches: list[dict[str, torch.Tensor]]) -> None:
    assert batches
    for batch in batches:
        enc, tgt = batch["encoder_input_tokens"], batch["decoder_target_tokens"]
        expected = model_batch(enc.numpy(), tgt.numpy(), EOS_ID)
        assert list(batch) == list(expected)
        for key, value in expected.items():
            assert batch[key].dtype == value.dtype and torch.equal(batch[key], value), key
        assert (batch["decoder_input_tokens"][:, 0] == EOS_ID).all()


def test_span_corruption_batches_use_the_loaders_layout():
    lines = {"de": [f"satz {i} hat worte {i % 7} und mehr" for i in range(60)], "en": ["a b c d e f"] * 40}
    check_layout(probes.span_corruption_batches(WordIds(), lines, input_length=24, windows=20))


def test_translation_span_batches_use_the_loaders_layout():
    pairs = {"de": [(f"the {i} cat sat", f"die {i} katze sass") for i in range(60)]}
    check_layout(probes.translation_span_batches(WordIds(), pairs, input_length=24, windows=20))
