"""The loader on a real data_prep dataset (bundled sample corpus, tiny SentencePiece model): the contract
between the two stages, checked end to end."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

from deltalm.shard_format import ShardReader, load_manifest
from deltalm.vocabulary import Vocabulary
from pretrain.data_config import PretrainDataConfig
from pretrain.loader import PretrainLoader
from tests.pretrain.corpus import reconstruct

SAMPLE = Path(__file__).resolve().parents[2] / "data_prep" / "sample_corpus"


def _data_prep(*argv) -> None:
    from data_prep.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    assert rc == 0, err.getvalue()[-2000:]


@pytest.mark.slow
def test_loader_reads_data_prep_shards(tmp_path):
    prefix = tmp_path / "spm"
    _data_prep(
        "train-spm", "--vocab-size", "512", "--input-sentence-size", "8000", "--num-threads", "1",
        "--output", prefix, SAMPLE / "mono" / "en.txt.gz", SAMPLE / "mono" / "de.txt.gz",
    )  # fmt: skip
    spm = f"{prefix}.model"
    data = tmp_path / "data"
    for lang in ("en", "de"):
        _data_prep("mono", "--lang", lang, "--spm", spm, "--output", data, "--workers", "1", "--no-progress",
                   SAMPLE / "mono" / f"{lang}.txt.gz")  # fmt: skip
    pairs = sorted((SAMPLE / "parallel").glob("*.en-de.jsonl.gz"))[0]
    _data_prep("parallel", "--src-lang", "en", "--tgt-lang", "de", "--spm", spm, "--output", data,
               "--workers", "1", "--no-progress", pairs)  # fmt: skip

    vocab = Vocabulary.from_spm(spm)
    config = PretrainDataConfig.from_dict(
        {"data_dirs": [str(data)], "input_length": 64, "translation_input_length": 48, "verify_sha256": True}
    )
    loader = PretrainLoader(config, vocab, micro_batch_size=4, seed=0)
    assert set(loader.streams) == {"en", "de", "en-de"}

    # Every document (and pair side) as stored by data_prep, read independently of the loader.
    manifest = load_manifest(data)
    stored: set[tuple[int, ...]] = set()
    for stream in manifest["streams"].values():
        for shard in stream["shards"]:
            with ShardReader(data / shard["path"]) as reader:
                for column in reader.columns.values():
                    stored.update(tuple(column.row(i).tolist()) for i in range(len(column)))

    kinds = set()
    for _ in range(12):
        batch = loader.next_batch()
        enc = batch["encoder_input_tokens"].numpy()
        kinds.add(enc.shape[1])
        assert enc.max() < vocab.pretrain_size and (enc[:, -1] == vocab.eos).all()
        for e, t in zip(enc, batch["decoder_target_tokens"].numpy(), strict=True):
            window = reconstruct(e, t, vocab.first_sentinel)
            ends = np.nonzero(window == vocab.eos)[0]
            # Every piece lying wholly inside the window is a stored document or pair side, unchanged.
            for a, b in zip(ends[:-1], ends[1:], strict=True):
                assert tuple(window[a + 1 : b].tolist()) in stored
            assert len(vocab.decode(window)) > 0
    assert kinds == {64, 48}  # both objectives ran
    loader.close()
