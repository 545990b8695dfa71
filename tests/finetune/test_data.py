"""Readers, tasks and bad-line accounting."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from deltalm.vocabulary import EOS_ID
from finetune.readers import DataError, SkipReport, read_records
from finetune.tasks import QG_SEPARATOR_ID, TaskSpec, build_examples, linearize_triples


def test_jsonl_bad_lines_counted_with_locations(tmp_path, vocab):
    path = tmp_path / "train.jsonl.gz"
    lines = [
        json.dumps({"en": "Open file", "de": "Datei öffnen"}).encode(),
        b"{not json",
        b"[1, 2]",
        json.dumps({"en": "Save", "de": ""}).encode(),
        json.dumps({"en": "Quit"}).encode(),
        b"\xff\xfe bad bytes",
        b"",
        json.dumps({"en": "Print", "de": 7}).encode(),
        json.dumps({"en": "Close", "de": "Schließen"}).encode(),
    ]
    with gzip.open(path, "wb") as handle:
        handle.write(b"\n".join(lines) + b"\n")
    report = SkipReport()
    records = read_records(path, report)
    assert len(records) == 5
    assert report.counts == {"invalid_json": 1, "not_an_object": 1, "invalid_utf8": 1}
    assert report.samples["invalid_json"][0].startswith(f"{path}:2")
    assert report.samples["invalid_utf8"][0].startswith(f"{path}:6")
    examples = build_examples(
        TaskSpec("translation", "en", "de"), records, vocab.with_lang_tags(["de"]), report
    )
    assert [e.origin for e in examples] == [f"{path}:1", f"{path}:9"]
    assert report.counts["empty_target"] == 1 and report.counts["missing_field"] == 1
    assert report.counts["bad_field_type"] == 1
    assert report.read == 8 and report.skipped == 6
    assert "invalid_json: 1" in report.summary()


def test_tsv_and_aligned(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("a\tb\nonly one column\nc\td\te\nf\tg\n", encoding="utf-8")
    report = SkipReport()
    recs = read_records(tsv, report)
    assert [r.fields for r in recs] == [{"source": "a", "target": "b"}, {"source": "f", "target": "g"}]
    assert report.counts == {"wrong_column_count": 2}
    (tmp_path / "x.src").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "x.tgt").write_text("eins\nzwei\n", encoding="utf-8")
    report = SkipReport()
    recs = read_records(tmp_path / "x", report)
    assert [r.fields["target"] for r in recs] == ["eins", "zwei"]
    assert report.counts == {"unaligned_line": 1}
    assert report.samples["unaligned_line"][0].startswith(f"{tmp_path / 'x.src'}:3")
    with pytest.raises(DataError, match="not found"):
        read_records(tmp_path / "missing.jsonl", SkipReport())


def test_translation_prepends_target_tag(vocab):
    from finetune.readers import Record

    v = vocab.with_lang_tags(["de", "fr"])
    rec = Record({"en": "Open the file", "fr": "Ouvrir le fichier"}, "x:1")
    (ex,) = build_examples(TaskSpec("translation", "en", "fr"), [rec], v, SkipReport())
    assert ex.source[0] == v.lang_tag_id("fr") and ex.source[-1] == EOS_ID
    assert ex.source[1:-1].tolist() == v.encode("Open the file").tolist()
    assert ex.target.tolist() == [*v.encode("Ouvrir le fichier").tolist(), EOS_ID]
    assert ex.reference == "Ouvrir le fichier"


def test_question_generation_separator_and_summarization_truncation(vocab):
    from finetune.readers import Record

    rec = Record({"passage": "The file is saved", "answer": "saved", "question": "What happens?"}, "q:1")
    (ex,) = build_examples(TaskSpec("question_generation"), [rec], vocab, SkipReport())
    expected = [
        *vocab.encode("The file is saved").tolist(),
        QG_SEPARATOR_ID,
        *vocab.encode("saved").tolist(),
        EOS_ID,
    ]
    assert ex.source.tolist() == expected
    rec2 = Record({"source": "The file is saved [S] saved", "target": "What happens?"}, "q:2")
    (ex2,) = build_examples(TaskSpec("question_generation"), [rec2], vocab, SkipReport())
    assert ex2.source.tolist() == expected
    long_doc = Record({"document": "open file " * 600, "summary": "open"}, "s:1")
    report = SkipReport()
    (ex3,) = build_examples(TaskSpec("summarization"), [long_doc], vocab, report)
    assert len(ex3.source) == 512 and ex3.source[-1] == EOS_ID
    assert report.counts == {"truncated_source": 1} and report.skipped == 0
    # the message compares what the limit counts: the whole source (with </s>) against the limit itself
    full_length = len(vocab.encode("open file " * 600)) + 1
    assert report.samples["truncated_source"] == [f"s:1: {full_length} > 512 tokens"]
    long_target = Record({"source": "a", "target": "word " * 400}, "t:1")
    report = SkipReport()
    assert build_examples(TaskSpec("summarization"), [long_target], vocab, report) == []
    assert report.counts == {"target_too_long": 1}
    (ex4,) = build_examples(TaskSpec("summarization"), [long_target], vocab, SkipReport(), training=False)
    assert len(ex4.target) == 256 and ex4.reference.startswith("word")


def test_data_to_text_linearization(vocab):
    from finetune.readers import Record

    triples = [["Alan_Bean", "birthPlace", "Wheeler, Texas"], "Alan_Bean | occupation | Test pilot"]
    assert (
        linearize_triples(triples)
        == "Alan Bean | birth place | Wheeler, Texas ; Alan Bean | occupation | Test pilot"
    )
    report = SkipReport()
    recs = [
        Record({"triples": triples, "text": "Alan Bean was born in Wheeler."}, "d:1"),
        Record({"triples": [["a", "b"]], "text": "x"}, "d:2"),
    ]
    examples = build_examples(TaskSpec("data_to_text"), recs, vocab, report)
    assert len(examples) == 1 and report.counts == {"bad_triples": 1}
    assert np.array_equal(examples[0].source[:-1], vocab.encode(linearize_triples(triples)))


def test_cross_lingual_variant_is_tagged(vocab):
    v = vocab.with_lang_tags(["de"])
    assert TaskSpec("summarization", "en", "de").tagged
    assert not TaskSpec("summarization", "en", "en").tagged
    from finetune.readers import Record

    (ex,) = build_examples(
        TaskSpec("summarization", "en", "de"),
        [Record({"source": "a b", "target": "c"}, "1")],
        v,
        SkipReport(),
    )
    assert ex.source[0] == v.lang_tag_id("de")
