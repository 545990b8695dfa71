"""Fine-tuning test fixtures: a tiny SentencePiece model and tiny data files cut from the bundled corpus."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from deltalm.vocabulary import Vocabulary

PARALLEL = Path(__file__).resolve().parents[2] / "data_prep" / "sample_corpus" / "parallel"


def read_pairs(name: str, n: int) -> list[dict]:
    with gzip.open(PARALLEL / name, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(n), handle, strict=False)]


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory) -> Path:
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("spm")
    text = root / "text.txt"
    with open(text, "w", encoding="utf-8") as handle:
        for name in ("train.en-de.jsonl.gz", "train.en-fr.jsonl.gz"):
            for pair in read_pairs(name, 1500):
                for value in pair.values():
                    handle.write(value.replace("\n", " ") + "\n")
    spm.SentencePieceTrainer.Train(
        input=str(text),
        model_prefix=str(root / "spm"),
        vocab_size=400,
        character_coverage=1.0,
        model_type="unigram",
        num_threads=1,
        minloglevel=2,
    )
    return root / "spm.model"


@pytest.fixture(scope="session")
def vocab(spm_model) -> Vocabulary:
    return Vocabulary.from_spm(spm_model, num_sentinels=16)
