from __future__ import annotations

import gzip
import json

from deltalm.shard_format import ShardReader, load_manifest
from deltalm.vocabulary import Vocabulary

from .conftest import SAMPLE, read_tree, run_cli

PAIRS = [("Open the file", "Datei öffnen"), ("Save as…", "Speichern unter …"), ("Quit", "Beenden")]


def rows(root, stream):
    out = []
    for shard in stream["shards"]:
        with ShardReader(root / shard["path"], expect_kind="parallel") as reader:
            assert reader.metadata["deltalm.src_lang"] == "en" and reader.metadata["deltalm.tgt_lang"] == "de"
            out += [(reader.src().row(i).copy(), reader.tgt().row(i).copy()) for i in range(reader.num_rows)]
    return out


def test_tsv_jsonl_and_aligned_files_give_the_same_rows(spm_model, tmp_path):
    tsv = tmp_path / "p.tsv.gz"
    tsv.write_bytes(gzip.compress("".join(f"{a}\t{b}\n" for a, b in PAIRS).encode()))
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"de": b, "en": a, "fr": "x"}, ensure_ascii=False) + "\n" for a, b in PAIRS)
    )
    src, tgt = tmp_path / "p.en", tmp_path / "p.de"
    src.write_text("".join(a + "\n" for a, _ in PAIRS))
    tgt.write_text("".join(b + "\n" for _, b in PAIRS))
    vocab = Vocabulary.from_spm(spm_model)
    results = []
    for name, inputs in [
        ("tsv", [tsv]),
        ("jsonl", [jsonl]),
        ("aligned", ["--src-file", src, "--tgt-file", tgt]),
    ]:
        out = tmp_path / name
        rc, stdout, err = run_cli("parallel", "--spm", spm_model, "--src-lang", "en", "--tgt-lang", "de",
                                  "--output", out, "--workers", "1", "--no-progress", *inputs)  # fmt: skip
        assert rc == 0, err
        stream = load_manifest(out)["streams"]["en-de"]
        got = rows(out, stream)
        assert [(vocab.decode(s), vocab.decode(t)) for s, t in got] == [
            (
                vocab.processor.Decode(vocab.processor.Encode(a)),
                vocab.processor.Decode(vocab.processor.Encode(b)),
            )
            for a, b in PAIRS
        ]
        assert stream["src_tokens"] == sum(len(s) for s, _ in got)
        assert stream["tgt_tokens"] == sum(len(t) for _, t in got)
        assert stream["tokens"] == stream["src_tokens"] + stream["tgt_tokens"]
        results.append([(s.tolist(), t.tolist()) for s, t in got])
    assert results[0] == results[1] == results[2]


def test_bundled_pairs_are_deterministic_across_workers(spm_model, tmp_path):
    trees = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        rc, _, err = run_cli("parallel", "--spm", spm_model, "--src-lang", "en", "--tgt-lang", "de", "--output",
                             out, "--workers", workers, "--shard-size", "64k", "--block-size", "32k", "--no-progress",
                             SAMPLE / "parallel" / "train.en-de.jsonl.gz")  # fmt: skip
        assert rc == 0, err
        tree = read_tree(out)
        tree["manifest.json"] = tree["manifest.json"].replace(str(out).encode(), b"OUT")
        trees.append(tree)
    assert trees[0] == trees[1]
    manifest = json.loads(trees[0]["manifest.json"])
    assert manifest["streams"]["en-de"]["rows"] == 8200 and manifest["streams"]["en-de"]["num_shards"] > 3
    assert set(manifest["languages"]) == {"en", "de"}


def test_parallel_user_errors(spm_model, tmp_path):
    rc, _, err = run_cli("parallel", "--spm", spm_model, "--src-lang", "en", "--tgt-lang", "de", "--output",
                         tmp_path / "o", tmp_path / "pairs.txt")  # fmt: skip
    assert rc == 2 and err.count("\n") == 1 and "input not found" in err
    (tmp_path / "pairs.txt").write_text("a\tb\n")
    rc, _, err = run_cli("parallel", "--spm", spm_model, "--src-lang", "en", "--tgt-lang", "de", "--output",
                         tmp_path / "o", tmp_path / "pairs.txt")  # fmt: skip
    assert rc == 2 and "--format" in err
    rc, _, err = run_cli("parallel", "--spm", spm_model, "--src-lang", "en", "--tgt-lang", "de", "--output",
                         tmp_path / "o", "--format", "tsv", tmp_path / "pairs.txt")  # fmt: skip
    assert rc == 0, err
