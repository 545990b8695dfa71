from __future__ import annotations

import gzip
import lzma

import numpy as np
import pyarrow as pa
import pytest
import zstandard

from data_prep.manifest import committed_stream
from deltalm.shard_format import ShardReader, load_manifest
from deltalm.vocabulary import Vocabulary

from .conftest import SAMPLE, read_tree, run_cli


def documents(path) -> list[list[str]]:
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    docs, cur = [], []
    for line in text.split("\n"):
        if line.strip():
            cur.append(line)
        elif cur:
            docs.append(cur)
            cur = []
    if cur:
        docs.append(cur)
    return docs


def build(out, spm_model, *extra, lang="de", inputs=(SAMPLE / "mono" / "de.txt.gz",)):
    rc, stdout, err = run_cli("mono", "--spm", spm_model, "--lang", lang, "--output", out, "--no-progress",
                              "--shard-size", "16k", *extra, *inputs)  # fmt: skip
    assert rc == 0, err
    return stdout


def test_mono_rows_decode_back_to_the_documents(spm_model, tmp_path):
    build(tmp_path / "ds", spm_model, "--workers", "1")
    manifest = load_manifest(tmp_path / "ds")
    stream = manifest["streams"]["de"]
    docs = documents(SAMPLE / "mono" / "de.txt.gz")
    assert stream["rows"] == len(docs) and len(stream["shards"]) > 3
    vocab = Vocabulary.from_spm(spm_model)
    proc = vocab.processor
    rows = []
    for shard in stream["shards"]:
        with ShardReader(tmp_path / "ds" / shard["path"], expect_kind="mono") as reader:
            assert reader.metadata["deltalm.lang"] == "de"
            assert reader.num_rows == shard["rows"]
            rows += [reader.tokens().row(i).copy() for i in range(reader.num_rows)]
    assert len(rows) == len(docs)
    for doc, ids in zip(docs, rows, strict=True):
        assert ids.dtype == np.int32 and ids.min() >= 4 and ids.max() <= vocab.spm_size  # no EOS, no specials
        assert vocab.decode(ids) == proc.Decode(proc.Encode(" ".join(doc)))  # paragraphs joined by a space
    assert sum(len(r) for r in rows) == stream["tokens"] == manifest["languages"]["de"]["tokens"]
    assert manifest["tokenizer"] == vocab.fingerprint()


def test_output_is_independent_of_workers_block_size_and_io_mode(spm_model, tmp_path):
    build(tmp_path / "ds", spm_model, "--workers", "1")
    one = read_tree(tmp_path / "ds")
    build(tmp_path / "ds2", spm_model, "--workers", "2", "--block-size", "8k", "--buffered-io")
    two = read_tree(tmp_path / "ds2")
    assert one.keys() == two.keys()
    for name in one:
        if name == "manifest.json":  # the only difference: the --output path in the recorded command
            a = one[name].decode().replace(str(tmp_path / "ds"), "OUT")
            b = two[name].decode().replace(str(tmp_path / "ds2"), "OUT")
            assert a == b
        else:
            assert one[name] == two[name], name


def test_rerun_of_a_finished_command_does_nothing(spm_model, tmp_path):
    build(tmp_path / "ds", spm_model, "--workers", "1")
    before = read_tree(tmp_path / "ds")
    stdout = build(tmp_path / "ds", spm_model, "--workers", "2")
    assert "1 already done; 0 new shard(s)" in stdout
    assert read_tree(tmp_path / "ds") == before


def test_languages_and_inputs_accumulate_in_one_directory(spm_model, tmp_path):
    out = tmp_path / "ds"
    plain = tmp_path / "en.txt"
    plain.write_bytes(gzip.decompress((SAMPLE / "mono" / "en.txt.gz").read_bytes()))
    xz, zst = tmp_path / "en.txt.xz", tmp_path / "extra.txt.zst"
    xz.write_bytes(lzma.compress(b"first doc line\nsecond line\n\nanother document\n"))
    zst.write_bytes(zstandard.ZstdCompressor().compress(b"zstd document\n"))
    build(out, spm_model, "--workers", "1")
    build(out, spm_model, "--workers", "1", lang="en", inputs=(plain,))
    build(out, spm_model, "--workers", "1", lang="en", inputs=(plain, xz, zst))  # plain already done
    manifest = load_manifest(out)
    assert sorted(manifest["streams"]) == ["de", "en"]
    en = manifest["streams"]["en"]
    assert [e["path"] for e in en["inputs"]] == [str(plain), str(xz), str(zst)]
    assert all(e["done"] for e in en["inputs"])
    assert [e["rows"] for e in en["inputs"]][1:] == [2, 1]
    assert en["rows"] == sum(e["rows"] for e in en["inputs"]) == sum(s["rows"] for s in en["shards"])
    assert [s["path"] for s in en["shards"]] == [f"en/shard-{i:05d}.arrow" for i in range(len(en["shards"]))]
    assert len(manifest["commands"]) == 3
    rc, out_text, err = run_cli("verify", out)
    assert rc == 0, err


def test_opening_a_shard_maps_it_without_reading(spm_model, tmp_path):
    build(tmp_path / "ds", spm_model, "--workers", "1", "--shard-size", "1M")
    shard = tmp_path / "ds" / load_manifest(tmp_path / "ds")["streams"]["de"]["shards"][0]["path"]
    with pa.ipc.open_file(pa.memory_map(str(shard))) as f:
        assert f.num_record_batches == 1  # one batch: the reader's numpy views are zero-copy
    before = pa.total_allocated_bytes()
    with ShardReader(shard) as reader:
        values = reader.tokens().values
        assert not values.flags.owndata and not values.flags.writeable  # a view on the read-only mapping
        total = int(sum(int(reader.tokens().row(i).sum()) for i in range(reader.num_rows)))
        assert pa.total_allocated_bytes() == before
    assert total > 0


def test_tokenizer_mismatch_is_refused(spm_model, tmp_path, sample):
    build(tmp_path / "ds", spm_model, "--workers", "1")
    other = tmp_path / "other"
    rc, _, err = run_cli("train-spm", "--vocab-size", "400", "--input-sentence-size", "2000", "--output", other,
                         sample / "mono" / "en.txt.gz")  # fmt: skip
    assert rc == 0, err
    before = read_tree(tmp_path / "ds")
    rc, _, err = run_cli("mono", "--spm", f"{other}.model", "--lang", "en", "--output", tmp_path / "ds",
                         sample / "mono" / "en.txt.gz")  # fmt: skip
    assert rc == 2 and err.count("\n") == 1 and "tokenizer mismatch" in err
    assert read_tree(tmp_path / "ds") == before


@pytest.mark.parametrize(
    "case, expect",
    [("missing_input", "input not found"), ("missing_spm", "SentencePiece model not found"),
     ("output_is_file", "not a directory"), ("bad_shard_size", "--shard-size")],
)  # fmt: skip
def test_user_errors_are_one_line(spm_model, tmp_path, case, expect):
    args = {"spm": spm_model, "out": tmp_path / "ds", "input": SAMPLE / "mono" / "de.txt.gz", "extra": []}
    if case == "missing_input":
        args["input"] = tmp_path / "missing.txt.gz"
    elif case == "missing_spm":
        args["spm"] = tmp_path / "missing.model"
    elif case == "output_is_file":
        args["out"] = tmp_path / "file"
        args["out"].write_text("x")
    else:
        args["extra"] = ["--shard-size", "10"]
    rc, _, err = run_cli("mono", "--spm", args["spm"], "--lang", "de", "--output", args["out"], *args["extra"],
                         args["input"])  # fmt: skip
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and expect in err, err
    assert not list(tmp_path.rglob("shard-*.arrow"))


def test_full_disk_leaves_no_partial_shard(spm_model, tmp_path, monkeypatch):
    import errno
    import os

    import data_prep.shard_writer as shard_writer

    calls = {"n": 0}
    real_fsync = os.fsync

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(shard_writer.os, "fsync", failing_fsync)
    rc, _, err = run_cli("mono", "--spm", spm_model, "--lang", "de", "--output", tmp_path / "ds", "--workers", "1",
                         "--no-progress", "--shard-size", "16k", SAMPLE / "mono" / "de.txt.gz")  # fmt: skip
    assert rc == 2 and err.count("\n") == 1 and "no space left on device" in err, err
    listed = {s["path"] for s in committed_stream(tmp_path / "ds", "de")["shards"]}
    on_disk = {str(p.relative_to(tmp_path / "ds")) for p in (tmp_path / "ds").rglob("*.arrow*")}
    assert on_disk == listed  # no temp file left, nothing unlisted
    monkeypatch.undo()
    build(tmp_path / "ds", spm_model, "--workers", "1")  # rerun finishes
    rc, _, err = run_cli("verify", tmp_path / "ds")
    assert rc == 0, err


def test_a_second_writer_of_the_same_stream_is_refused(spm_model, tmp_path):
    import fcntl

    out = tmp_path / "ds"
    out.mkdir()
    with open(out / ".de.lock", "w") as held:  # what a running `mono --lang de` holds
        fcntl.flock(held, fcntl.LOCK_EX)
        rc, _, err = run_cli("mono", "--spm", spm_model, "--lang", "de", "--output", out, "--no-progress",
                             SAMPLE / "mono" / "de.txt.gz")  # fmt: skip
        assert rc == 2 and err.count("\n") == 1 and "another data_prep process" in err
        build(
            out, spm_model, "--workers", "1", lang="en", inputs=(SAMPLE / "mono" / "en.txt.gz",)
        )  # other stream: fine
    assert sorted(load_manifest(out)["streams"]) == ["en"]
