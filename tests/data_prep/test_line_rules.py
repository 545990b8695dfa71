"""Real-world text layouts: CRLF, whitespace-only separators, byte-order marks, Unicode line separators, empty
inputs. Each reads like the same text written plainly (see deltalm/text_lines.py and docs/data_prep.md)."""

from __future__ import annotations

import gzip
import json

import pytest

from deltalm.shard_format import ShardReader, load_manifest

from .conftest import run_cli

DOCS = [(f"Document {i} first paragraph here.", f"And its second one, no. {i}.") for i in range(40)]


def cc100(separator: str = "\n", newline: str = "\n") -> bytes:
    text = separator.join(f"{a}\n{b}\n" for a, b in DOCS)
    return text.replace("\n", newline).encode()


def mono(tmp_path, spm_model, data: bytes, *extra, name="in.txt"):
    path = tmp_path / name
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    out = tmp_path / f"ds-{name}"
    rc, stdout, err = run_cli("mono", "--spm", spm_model, "--lang", "xx", "--output", out, "--workers", "1",
                              "--no-progress", "--max-doc-bytes", "1k", "--block-size", "1k", *extra, path)  # fmt: skip
    return rc, err, out


def tokens(out, kind="mono", stream="xx"):
    manifest = load_manifest(out)
    rows = []
    for shard in manifest["streams"][stream]["shards"]:
        with ShardReader(out / shard["path"], expect_kind=kind) as reader:
            if kind == "mono":
                rows += [reader.tokens().row(i).tolist() for i in range(reader.num_rows)]
            else:
                rows += [
                    (reader.src().row(i).tolist(), reader.tgt().row(i).tolist())
                    for i in range(reader.num_rows)
                ]
    return rows


@pytest.mark.parametrize(
    "name,data",
    [
        ("crlf", cc100(newline="\r\n")),
        ("space_separator", cc100(separator=" \n")),
        ("tab_crlf_separator", cc100(separator="\t\n", newline="\r\n")),
        ("ideographic_space_separator", cc100(separator="\u3000\n")),
        ("bom", b"\xef\xbb\xbf" + cc100()),
        ("bom_crlf_gz", b"\xef\xbb\xbf" + cc100(newline="\r\n")),
    ],
)
def test_mono_layouts_give_the_rows_of_plain_lf_text(spm_model, tmp_path, name, data):
    rc, err, plain = mono(tmp_path, spm_model, cc100(), name="plain.txt")
    assert rc == 0, err
    rc, err, out = mono(
        tmp_path, spm_model, data, name=f"{name}.txt" + (".gz" if name.endswith("gz") else "")
    )
    assert rc == 0, err
    stream = load_manifest(out)["streams"]["xx"]
    assert stream["rows"] == 40 and stream["skipped"] == {}, (stream["rows"], stream["skipped"])
    assert tokens(out) == tokens(plain)


def test_crlf_file_larger_than_a_block_with_several_workers(spm_model, tmp_path):
    data = b"\r\n".join([cc100(newline="\r\n")] * 50)  # 2000 documents, ~120 blocks of 1k
    rc, err, out = mono(tmp_path, spm_model, data, "--workers", "2")
    assert rc == 0, err
    assert load_manifest(out)["streams"]["xx"]["rows"] == 2000


def test_unicode_line_separators_stay_inside_the_paragraph(spm_model, tmp_path):
    data = "one\u2028two\x0cthree\x85four\x0bfive\rsix\n\nnext\n".encode()
    rc, err, out = mono(tmp_path, spm_model, data)
    assert rc == 0, err
    assert load_manifest(out)["streams"]["xx"]["rows"] == 2


@pytest.mark.parametrize("data", [b"", b"\n\n \n", b"\xff\xfe\xfd\n\xc3\x28\n"])
def test_an_input_without_rows_is_an_error_unless_allowed(spm_model, tmp_path, data):
    rc, err, out = mono(tmp_path, spm_model, data)
    assert rc == 2 and err.count("\n") == 1 and "no rows" in err and "--allow-empty" in err, err
    entry = load_manifest(out)["streams"]["xx"]["inputs"][0]
    assert entry["done"] is False and entry["rows"] == 0
    if data.startswith(b"\xff"):
        assert "2 invalid_utf8" in err
    rc, err, out = mono(tmp_path, spm_model, data, "--allow-empty")
    assert rc == 0, err
    assert load_manifest(out)["streams"]["xx"]["inputs"][0]["done"] is True
    assert "xx: skipped: " in err


def parallel(tmp_path, spm_model, *inputs, out_name="ds"):
    out = tmp_path / out_name
    rc, _, err = run_cli("parallel", "--spm", spm_model, "--src-lang", "en", "--tgt-lang", "de", "--output", out,
                         "--workers", "1", "--no-progress", *inputs)  # fmt: skip
    return rc, err, out


PAIRS = [("Open the file", "Datei öffnen"), ("Save as\u2028now", "Speichern\x0cunter"), ("Quit", "Beenden")]


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_parallel_readers_bom_and_crlf(spm_model, tmp_path, bom, newline):
    lead = "\ufeff" if bom else ""
    tsv = tmp_path / "p.tsv"
    tsv.write_text(lead + "".join(f"{a}\t{b}{newline}" for a, b in PAIRS), newline="")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        lead + "".join(json.dumps({"en": a, "de": b}, ensure_ascii=False) + newline for a, b in PAIRS),
        newline="",
    )
    src, tgt = tmp_path / "p.en", tmp_path / "p.de"
    src.write_text(lead + "".join(a + newline for a, _ in PAIRS), newline="")
    tgt.write_text(lead + "".join(b + newline for _, b in PAIRS), newline="")
    plain = tmp_path / "plain.tsv"
    plain.write_text("".join(f"{a}\t{b}\n" for a, b in PAIRS))
    rc, err, expected = parallel(tmp_path, spm_model, plain, out_name="plain")
    assert rc == 0, err
    for name, inputs in [
        ("tsv", [tsv]),
        ("jsonl", [jsonl]),
        ("aligned", ["--src-file", src, "--tgt-file", tgt]),
    ]:
        rc, err, out = parallel(tmp_path, spm_model, *inputs, out_name=name)
        assert rc == 0, (name, err)
        stream = load_manifest(out)["streams"]["en-de"]
        assert stream["rows"] == 3 and stream["skipped"] == {}, (name, stream["skipped"])
        assert tokens(out, "parallel", "en-de") == tokens(expected, "parallel", "en-de"), name


def test_parallel_input_without_rows_is_an_error_unless_allowed(spm_model, tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_bytes(b"\xef\xbb\xbf\r\n \r\n")
    good = tmp_path / "g.tsv"
    good.write_text("Quit\tBeenden\n")
    rc, err, out = parallel(tmp_path, spm_model, good, empty)
    assert rc == 2 and f"error: {empty}: no rows (2 empty_line)" in err, err
    inputs = load_manifest(out)["streams"]["en-de"]["inputs"]
    assert [(i["done"], i["rows"]) for i in inputs] == [(True, 1), (False, 0)]
    rc, err, out = parallel(tmp_path, spm_model, "--allow-empty", good, empty)
    assert rc == 0, err
    assert "en-de: skipped: 2 empty_line" in err and "already done" in err
