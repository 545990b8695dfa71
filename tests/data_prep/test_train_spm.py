from __future__ import annotations

import gzip
import re

import sentencepiece as spm

from deltalm.vocabulary import EOS_ID, UNK_ID, Vocabulary

from .conftest import SAMPLE, run_cli, run_subprocess


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
    """Another process, the same pieces: the sample is drawn with a seeded RNG, not SentencePiece's shuffle
    (which differs from process to process with the same seed). The inputs hold more sentences than the sample."""
    inputs = [
        SAMPLE / "mono" / "en.txt.gz",
        SAMPLE / "mono" / "de.txt.gz",
        SAMPLE / "parallel" / "valid.en-de.jsonl.gz",
    ]
    for name in ("again", "third"):
        done = run_subprocess(
            "train-spm", "--vocab-size", "512", "--input-sentence-size", "8000", "--output", tmp_path / name, *inputs
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (tmp_path / f"{name}.vocab").read_bytes() == spm_model.with_suffix(".vocab").read_bytes()
        assert not (tmp_path / f"{name}.train-tmp").exists()
    assert "(8,000 sampled for training)" in done.stdout


def test_missing_input_is_one_line(tmp_path):
    rc, _, err = run_cli(
        "train-spm", "--vocab-size", "100", "--output", tmp_path / "m", tmp_path / "nope.txt"
    )
    assert rc == 2
    assert err.strip().count("\n") == 0 and "input not found" in err


def zh_paragraphs(path, size=4400):
    """CC100-style Chinese: paragraphs of about 4.4 KB (over SentencePiece's 4,192-byte default), a blank line
    between documents."""
    text = gzip.decompress((SAMPLE / "mono" / "zh.txt.gz").read_bytes()).decode()
    lines = [x for x in text.split("\n") if x]
    paragraphs, current = [], ""
    for line in lines:
        current += line
        if len(current.encode()) > size:
            paragraphs.append(current)
            current = ""
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return len(paragraphs)


def share(stdout: str, label: str) -> float:
    line = next(x for x in stdout.splitlines() if "byte-fallback pieces per input" in x)
    return float(re.search(rf"\b{label} ([0-9.]+)%", line).group(1)) / 100


def test_long_paragraphs_enter_the_vocabulary_and_shares_are_reported(tmp_path):
    zh = tmp_path / "zh.txt"
    n = zh_paragraphs(zh)
    argv = ["train-spm", "--vocab-size", "2000", SAMPLE / "mono" / "en.txt.gz", zh]
    rc, out, err = run_cli(*argv[:3], "--output", tmp_path / "m", *argv[3:])
    assert rc == 0, err
    assert "skipped: none" in out
    assert share(out, "zh") < 0.02 and share(out, "en") < 0.05  # SentencePiece's default limit: 95% for zh
    rc, out, err = run_cli(*argv[:3], "--output", tmp_path / "m4k", "--max-line-bytes", "4k", *argv[3:])
    assert rc == 0, err
    assert f"skipped: {n} line_too_long" in out and "zh" not in out.splitlines()[-1]  # no zh text trained on


def test_bom_crlf_and_bad_lines_in_training_text(tmp_path):
    text = tmp_path / "xx.txt"
    text.write_bytes(
        b"\xef\xbb\xbfalpha beta\r\ngamma \xff delta\r\n\r\nepsilon\x00\r\n" + b"zeta eta theta\r\n" * 50
    )
    rc, out, err = run_cli("train-spm", "--vocab-size", "268", "--output", tmp_path / "m", text)
    assert rc == 0, err
    assert "train-spm: 51 sentences (51 sampled for training); skipped: 1 invalid_utf8, 1 nul_byte" in out
    proc = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    assert all("\ufeff" not in proc.IdToPiece(i) and "\r" not in proc.IdToPiece(i) for i in range(268))


def test_decode_shows_unk_the_way_sentencepiece_does(spm_model):
    vocab = Vocabulary.from_spm(spm_model)
    proc = spm.SentencePieceProcessor(model_file=str(spm_model))
    ids = [*vocab.encode("open"), UNK_ID, *vocab.encode("file"), EOS_ID]
    pieces = [*proc.Encode("open"), proc.unk_id(), *proc.Encode("file")]
    assert vocab.decode(ids) == proc.Decode(pieces) == "open ⁇  file"  # SentencePiece's " ⁇ " + "▁file"
    assert vocab.decode([0, 1, UNK_ID, 2, vocab.mask]) == " ⁇ "
