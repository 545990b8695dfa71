from __future__ import annotations

import gzip

import pytest

from deltalm.shard_format import load_manifest

from .conftest import run_cli

GOOD = b"A good first paragraph.\nAnd its second line.\n"


def mono(tmp_path, spm_model, path, *extra):
    out = tmp_path / "ds"
    rc, stdout, err = run_cli("mono", "--spm", spm_model, "--lang", "xx", "--output", out, "--workers", "1",
                              "--no-progress", *extra, path)  # fmt: skip
    return rc, err, (load_manifest(out)["streams"]["xx"] if rc == 0 else None)


def test_each_bad_mono_input_is_counted_with_its_line(spm_model, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(
        GOOD  # lines 1-2: document 1
        + b"\n"  # 3
        + b"ok line\n\xff\xfe not utf-8\n"  # 4-5: invalid UTF-8 (the line is dropped, "ok line" kept)
        + b"\n"  # 6
        + b"has a \x00 NUL byte\n"  # 7
        + b"\n\n"  # 8-9: line 9 is an empty document
        + b"x" * (10 << 20)
        + b"\n"  # 10: a 10 MB line
        + b"\n"  # 11
        + b"Last document.\n"  # 12
    )
    rc, err, stream = mono(tmp_path, spm_model, path)
    assert rc == 0, err
    assert stream["rows"] == 3
    assert stream["skipped"] == {"empty_document": 1, "invalid_utf8": 1, "line_too_long": 1, "nul_byte": 1}
    assert "skipped: 1 empty_document, 1 invalid_utf8, 1 line_too_long, 1 nul_byte" in err
    assert stream["skip_samples"] == [
        f"{path}:5: invalid_utf8",
        f"{path}:7: nul_byte",
        f"{path}:9: empty_document",
        f"{path}:10: line_too_long",
    ]


@pytest.mark.parametrize("block_size", ["1k", "1M"])  # dropped by the reader (crossing a block) / by a worker
def test_document_longer_than_the_limit_is_dropped(spm_model, tmp_path, block_size):
    path = tmp_path / "long.txt"
    path.write_bytes(GOOD + b"\n" + b"word " * 1000 + b"\n" + b"more\n" * 3000 + b"\n" + GOOD)
    rc, err, stream = mono(tmp_path, spm_model, path, "--max-doc-bytes", "4k", "--block-size", block_size)
    assert rc == 0, err
    assert stream["rows"] == 2 and stream["skipped"] == {"document_too_long": 1}
    assert stream["skip_samples"] == [f"{path}:4: document_too_long"]


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_broken_gzip_member_keeps_what_came_before(spm_model, tmp_path, damage):
    first = gzip.compress(GOOD + b"\n" + b"Second document.\n\n", mtime=0)
    second = bytearray(gzip.compress(b"lost document\n" * 2000, mtime=0))
    if damage == "truncated":
        second = second[: len(second) // 2]
    else:
        second[20:40] = b"\xff" * 20
    path = tmp_path / "broken.txt.gz"
    path.write_bytes(first + bytes(second))
    rc, err, stream = mono(tmp_path, spm_model, path)
    assert rc == 0, err
    assert stream["rows"] == 2
    assert stream["skipped"] == {"broken_compression": 1}
    assert stream["skip_samples"][0].startswith(f"{path}:")


def test_on_error_fail_stops_with_one_line(spm_model, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(GOOD + b"\nbad \xff byte\n")
    rc, err, _ = mono(tmp_path, spm_model, path, "--on-error", "fail")
    assert rc == 2 and err.count("\n") == 1
    assert f"{path}:4: invalid_utf8" in err


def parallel(tmp_path, spm_model, *inputs, extra=()):
    out = tmp_path / "ds"
    rc, _, err = run_cli("parallel", "--spm", spm_model, "--src-lang", "en", "--tgt-lang", "de", "--output", out,
                         "--workers", "1", "--no-progress", *extra, *inputs)  # fmt: skip
    return rc, err, (load_manifest(out)["streams"]["en-de"] if rc == 0 else None)


def test_bad_tsv_lines(spm_model, tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(
        b"hello\thallo\n"  # 1
        b"no tab here\n"  # 2
        b"a\tb\tc\n"  # 3
        b"   \tleer\n"  # 4
        b"\n"  # 5
        b"bad \xc3\x28\tutf8\n"  # 6
        b"good\tgut\r\n"  # 7
        + b"y" * (2 << 20)
        + b"\tlong\n"  # 8
        + b"end\tEnde"  # 9 (no final newline)
    )
    rc, err, stream = parallel(tmp_path, spm_model, path)
    assert rc == 0, err
    assert stream["rows"] == 3
    assert stream["skipped"] == {"empty_line": 1, "empty_side": 1, "invalid_utf8": 1, "line_too_long": 1,
                                 "tsv_extra_field": 1, "tsv_no_tab": 1}  # fmt: skip
    assert f"{path}:2: tsv_no_tab" in stream["skip_samples"]
    assert f"{path}:8: line_too_long" in stream["skip_samples"]


def test_bad_jsonl_lines(spm_model, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        '{"en": "Open file", "de": "Datei öffnen"}\n'
        '{"en": "only english"}\n'
        '{"en": "Close", "fr": "Fermer"}\n'
        "not json\n"
        '["en", "de"]\n'
        '{"en": 1, "de": "eins"}\n'
        '{"en": "Save", "de": "Speichern"}\n'
    )
    rc, err, stream = parallel(tmp_path, spm_model, path)
    assert rc == 0, err
    assert stream["rows"] == 2
    assert stream["skipped"] == {"bad_json": 3, "missing_lang_key": 2}
    assert stream["skip_samples"][:2] == [f"{path}:2: missing_lang_key", f"{path}:3: missing_lang_key"]


def test_unaligned_files(spm_model, tmp_path):
    src, tgt = tmp_path / "a.en", tmp_path / "a.de"
    src.write_text("one\ntwo\nthree\n")
    tgt.write_text("eins\nzwei\n")
    rc, err, stream = parallel(tmp_path, spm_model, extra=("--src-file", src, "--tgt-file", tgt))
    assert rc == 0, err
    assert stream["rows"] == 2 and stream["skipped"] == {"unaligned": 1}
    assert stream["skip_samples"] == [f"{tgt}:3: unaligned"]
