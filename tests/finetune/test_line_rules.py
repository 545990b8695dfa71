"""Fine-tuning readers and evaluate on real-world text: BOM, CRLF, Unicode separators, empty references."""

from __future__ import annotations

import json

import pytest
import torch

import deltalm
from deltalm.text_lines import split_lines
from finetune.config import DataFileConfig, TaskConfig
from finetune.evaluate import evaluate
from finetune.metrics import score_all
from finetune.readers import SkipReport, read_records
from finetune.zero_shot import read_documents

PAIRS = [
    ("Open the file", "Datei öffnen"),
    ("Save as\u2028now", "Speichern\x0cunter\x85jetzt"),
    ("Quit", "Beenden"),
]


def write(path, text: str, bom: bool, newline: str) -> None:
    path.write_bytes((("\ufeff" if bom else "") + text.replace("\n", newline)).encode("utf-8"))


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_every_reader_reads_bom_and_crlf_files_like_plain_ones(tmp_path, bom, newline):
    write(
        tmp_path / "d.jsonl", "".join(json.dumps({"en": a, "de": b}) + "\n" for a, b in PAIRS), bom, newline
    )
    write(tmp_path / "d.tsv", "".join(f"{a}\t{b}\n" for a, b in PAIRS), bom, newline)
    write(tmp_path / "x.src", "".join(a + "\n" for a, _ in PAIRS), bom, newline)
    write(tmp_path / "x.tgt", "".join(b + "\n" for _, b in PAIRS), bom, newline)
    for path, keys in [
        ("d.jsonl", ("en", "de")),
        ("d.tsv", ("source", "target")),
        ("x", ("source", "target")),
    ]:
        report = SkipReport()
        records = read_records(tmp_path / path, report)
        assert [(r.fields[keys[0]], r.fields[keys[1]]) for r in records] == PAIRS, path
        assert report.counts == {} and report.read == 3, (path, report.counts)


def test_zero_shot_documents_with_crlf_and_whitespace_separators(tmp_path):
    plain = "a one\na two\n\nb one\n\nc\u2028one\n"
    expected = ["a one a two", "b one", "c\u2028one"]
    for i, text in enumerate(
        [plain, plain.replace("\n", "\r\n"), plain.replace("\n\n", "\n \t\n"), "\ufeff" + plain]
    ):
        (tmp_path / f"{i}.txt").write_bytes(text.encode())
        assert read_documents(tmp_path / f"{i}.txt") == expected, text


def test_bom_reference_gives_bleu_100_for_perfect_hypotheses(tmp_path):
    refs = ["Die Datei wurde gespeichert.", "Das Programm wird beendet.", "Öffnen Sie die Datei erneut."]
    (tmp_path / "t.src").write_text("".join(f"source {i}\n" for i in range(3)), encoding="utf-8")
    (tmp_path / "t.tgt").write_bytes(("\ufeff" + "\r\n".join(refs) + "\r\n").encode())
    records = read_records(tmp_path / "t", SkipReport())
    read = [r.fields["target"] for r in records]
    assert read == refs
    assert score_all(refs, read, metrics=["bleu"], lang="de").scores["bleu"] == pytest.approx(100.0)


def test_evaluate_writes_one_hypothesis_per_test_line(tmp_path, spm_model, capsys):
    vocab = deltalm.Vocabulary.from_spm(spm_model, num_sentinels=16).with_lang_tags(["de"])
    torch.manual_seed(0)
    config = deltalm.DeltaLMConfig.preset(
        "tiny", vocab_size=vocab.size, d_model=32, heads=2, ffn=64, encoder_layers=1, decoder_blocks=1
    )
    model = tmp_path / "model"
    deltalm.save_pretrained(deltalm.DeltaLM(config), model, vocab)
    sources = ["Open the file", "Save", "Quit now", "", "Print it"]
    targets = [
        "Datei öffnen",
        "",
        "Jetzt beenden",
        "Leer",
        "Drucken",
    ]  # line 2: empty reference, 4: empty source
    # line 6: undecodable source (the reader skips it; its hypothesis line stays, empty)
    (tmp_path / "t.src").write_bytes(("\n".join(sources) + "\n").encode() + b"caf\xe9\n")
    (tmp_path / "t.tgt").write_text("\n".join(targets) + "\nCafe\n", encoding="utf-8")
    task = TaskConfig(
        name="translation",
        test=[DataFileConfig(path=str(tmp_path / "t"), src_lang="en", tgt_lang="de")],
        max_len_a=0.0,
        max_len_b=3,
        beam_size=2,
    )
    results = evaluate(str(model), task, str(tmp_path / "eval"))
    hyps = split_lines((tmp_path / "eval" / "hypotheses.en-de.txt").read_text(encoding="utf-8"))
    assert len(hyps) == 6 and hyps[3] == "" and hyps[5] == ""
    row = results["results"][0]
    assert row["n"] == 3 and row["lines"] == 6
    assert row["unscored"] == {"empty_reference": 1, "empty_source": 1, "unreadable": 1}
    printed = capsys.readouterr().out
    assert "1 line(s) with an empty reference: hypothesis written, not scored" in printed
