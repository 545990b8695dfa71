"""save_pretrained / from_pretrained: safetensors + config.json (+ SentencePiece), tied weight once, atomic."""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from safetensors.torch import load_file

import deltalm
from deltalm.checkpoints.pretrained import pretrained_vocabulary
from deltalm.file_io import CheckpointError
from deltalm.vocabulary import Vocabulary
from tests.deltalm.model.helpers import padded_batch, tiny_model


def test_round_trip_equal_outputs_and_tied_weight_stored_once(tmp_path):
    model = tiny_model(seed=3)
    out = deltalm.save_pretrained(model, tmp_path / "ckpt")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    stored = load_file(out / "model.safetensors")
    assert len(stored) == len(list(model.parameters()))
    assert sum(t.numel() for t in stored.values()) == model.num_parameters()
    back = deltalm.from_pretrained(out).eval()
    assert back.config == model.config
    for (n, a), (m, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert n == m and torch.equal(a, b)
    b = padded_batch()
    assert torch.equal(
        model(b["encoder_input_tokens"], b["decoder_input_tokens"]),
        back(b["encoder_input_tokens"], b["decoder_input_tokens"]),
    )
    assert back.embedding.embed_tokens.weight.requires_grad
    # overwrite in place: still one complete directory, no temp leftovers
    deltalm.save_pretrained(back, tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert deltalm.from_pretrained(tmp_path / "ckpt", dropout=0.3).config.dropout == 0.3


def train_tiny_spm(sample_corpus, directory):
    """A 120-piece SentencePiece model trained on the bundled English sample (well under a second)."""
    import sentencepiece as spm

    with gzip.open(sample_corpus / "mono" / "en.txt.gz", "rt", encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip()][:2000]
    text = directory / "train.txt"
    text.write_text("\n".join(lines), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(directory / "tiny"), vocab_size=120, minloglevel=2
    )
    return directory / "tiny.model"


def test_vocabulary_is_copied_and_restored(tmp_path, sample_corpus):
    spm_file = train_tiny_spm(sample_corpus, tmp_path)
    spm_files = [spm_file]
    vocab = Vocabulary.from_spm(spm_file, lang_tags=("de", "fr"))
    model = tiny_model(vocab_size=vocab.size)
    out = deltalm.save_pretrained(model, tmp_path / "ckpt", vocabulary=vocab)
    assert (out / "sentencepiece.model").read_bytes() == spm_files[0].read_bytes()
    restored = pretrained_vocabulary(out)
    assert restored is not None and restored.size == vocab.size and restored.lang_tags == vocab.lang_tags
    assert restored.spm_sha256 == vocab.spm_sha256
    assert pretrained_vocabulary(deltalm.save_pretrained(model, tmp_path / "novocab")) is None


def test_refusals(tmp_path):
    model = tiny_model()
    out = deltalm.save_pretrained(model, tmp_path / "ckpt")
    meta = json.loads((out / "config.json").read_text())
    meta["model"]["not_a_field"] = 1
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not_a_field"):
        deltalm.from_pretrained(out)
    meta["model"].pop("not_a_field")
    meta["model"]["ffn"] = 65
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"fc1.(weight|bias) has shape"):
        deltalm.from_pretrained(out)
    (out / "config.json").write_text("{bad json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        deltalm.from_pretrained(out)
    (out / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not a deltalm-pretrained config"):
        deltalm.from_pretrained(out)
    with pytest.raises(CheckpointError, match="not found"):
        deltalm.from_pretrained(tmp_path / "missing")
    good = deltalm.save_pretrained(model, tmp_path / "good")
    (good / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="safetensors"):
        deltalm.from_pretrained(good)
