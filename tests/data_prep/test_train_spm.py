from __future__ import annotations

import sentencepiece as spm

from deltalm.vocabulary import EOS_ID, UNK_ID, Vocabulary

from .conftest import SAMPLE, run_cli


def test_model_fits_the_vocabulary_contract(spm_model):
    proc = spm.SentencePieceProcessor(model_file=str(spm_model))
    assert proc.GetPieceSize() == 512
    assert [proc.IdToPiece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert proc.pad_id() == -1
    assert proc.IsUnknown(0) and proc.IsControl(1) and proc.IsControl(2)
    # byte_fallback: characters outside the training text still round-trip (no <unk>)
    ids = Vocabulary.from_spm(spm_model).encode("Grüße ☃ ok")
    assert UNK_ID not in ids.tolist() and EOS_ID not in ids.tolist()
    assert proc.Decode((ids - 1).tolist()) == "Grüße ☃ ok"


def test_same_command_same_model(spm_model, tmp_path):
    rc, _, err = run_cli(
        "train-spm", "--vocab-size", "512", "--input-sentence-size", "8000", "--output", tmp_path / "again",
        SAMPLE / "mono" / "en.txt.gz", SAMPLE / "mono" / "de.txt.gz", SAMPLE / "parallel" / "valid.en-de.jsonl.gz",
    )  # fmt: skip
    assert rc == 0, err
    assert (tmp_path / "again.vocab").read_bytes() == spm_model.with_suffix(".vocab").read_bytes()
    assert not (tmp_path / "again.train-tmp").exists()


def test_missing_input_is_one_line(tmp_path):
    rc, _, err = run_cli(
        "train-spm", "--vocab-size", "100", "--output", tmp_path / "m", tmp_path / "nope.txt"
    )
    assert rc == 2
    assert err.strip().count("\n") == 0 and "input not found" in err
