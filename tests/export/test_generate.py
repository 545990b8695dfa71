"""The generate CLI on a tiny model exported from a real engine run (and on a tagged multilingual model)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import deltalm
from deltalm.generate import GenerateOptions, length_batches, load_model, source_ids, translate
from deltalm.vocabulary import Vocabulary
from tests.export import fixtures

REPO = fixtures.REPO
LINES = [
    "Open the file",
    "",
    "The quick brown fox jumps over the lazy dog and keeps running",
    "Save",
    "Cannot read the configuration file %s",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, spm) -> Path:
    """A tiny random model with a tagged vocabulary (de, fr), saved the way fine-tuning exports it."""
    vocab = Vocabulary.from_spm(spm).with_lang_tags(["de", "fr"])
    torch.manual_seed(0)
    config = deltalm.DeltaLMConfig.preset(
        "tiny", vocab_size=vocab.size, d_model=32, heads=2, ffn=64, encoder_layers=1, decoder_blocks=1
    )
    out = tmp_path_factory.mktemp("model") / "model"
    deltalm.save_pretrained(deltalm.DeltaLM(config), out, vocab)
    return out


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "deltalm.generate", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_length_batches_sort_and_skip_empty():
    assert length_batches([3, 0, 5, 3, 1], 2) == [[2, 0], [3, 4]]
    assert length_batches([0, 0], 4) == []


def test_source_gets_target_tag_and_eos(model_dir):
    model, vocab = load_model(model_dir, torch.device("cpu"))
    ids = source_ids(["Open the file", ""], vocab, "fr", model.config.max_source_length)
    assert ids[0][0] == vocab.lang_tag_id("fr") and ids[0][-1] == 2
    assert list(ids[0][1:-1]) == vocab.encode("Open the file").tolist()
    assert len(ids[1]) == 0
    long = source_ids(["word " * 2000], vocab, "de", 20)[0]
    assert len(long) == 20 and long[-1] == 2


def test_batched_equals_one_by_one(model_dir):
    model, vocab = load_model(model_dir, torch.device("cpu"))
    # a random model never ends early: a short length rule keeps the test fast
    options = GenerateOptions(beam=3, batch_size=4, max_len_a=0.0, max_len_b=4)
    batched = translate(model, vocab, LINES, tgt_lang="de", options=options)
    one = dataclasses.replace(options, batch_size=1)
    single = [translate(model, vocab, [line], tgt_lang="de", options=one)[0] for line in LINES]
    assert batched == single
    assert batched[1] == "" and len(batched) == len(LINES)


def test_cli_stdin_stdout_and_files(model_dir, tmp_path, capsys):
    short = ["--beam", "2", "--max-len-a", "0", "--max-len-b", "4"]
    proc = run_cli("--model", str(model_dir), "--tgt-lang", "de", *short, stdin="\n".join(LINES) + "\n")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert len(out) == len(LINES) and out[1] == ""
    assert "[generate] 4/4 sentences" in proc.stderr
    model, vocab = load_model(model_dir, torch.device("cpu"))
    options = GenerateOptions(beam=2, max_len_a=0.0, max_len_b=4)
    expected = translate(model, vocab, LINES, tgt_lang="de", options=options)
    assert out == expected
    # files instead of stdin/stdout, in process (same code path as the command line)
    from deltalm.generate import main

    src = tmp_path / "in.txt"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    hyp = tmp_path / "out" / "hyp.txt"
    args = [
        "--model",
        str(model_dir),
        "--tgt-lang",
        "de",
        *short,
        "--input",
        str(src),
        "--output",
        str(hyp),
        "--quiet",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert hyp.read_text(encoding="utf-8").splitlines() == expected


def test_cli_errors_are_one_line(model_dir, tmp_path, capsys, monkeypatch):
    """In-process ``main`` (the CLI's code path; one interpreter start is enough for the tests above)."""
    import io

    from deltalm.generate import main

    cases = [
        (["--model", str(tmp_path / "nope")], "model directory not found"),
        (["--model", str(tmp_path / "empty")], "no config.json"),
        (["--model", str(bad_input := tmp_path / "a_file")], "not a directory"),
        (["--model", str(model_dir), "--tgt-lang", "xx"], "no tag for it"),
        (["--model", str(model_dir), "--beam", "0"], "--beam must be >= 1"),
        (["--model", str(model_dir)], "the model has language tags (de, fr); give --tgt-lang"),
        (
            ["--model", str(model_dir), "--tgt-lang", "de", "--input", str(tmp_path / "missing.txt")],
            "cannot read",
        ),
    ]
    (tmp_path / "empty").mkdir()
    bad_input.write_text("x")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    cases.append(
        (["--model", str(model_dir), "--tgt-lang", "de", "--input", str(bad), "--quiet"], "not UTF-8")
    )
    for args, message in cases:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"Open\n")))
        assert main(args) == 2
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last and "Traceback" not in err, err


def test_n_lines_in_n_lines_out_whatever_the_line_content(model_dir, tmp_path, monkeypatch, capsys):
    """Only "\\n" ends a line: U+2028, form feed, NEL and a lone CR are text; CRLF and a BOM are accepted."""
    import io

    from deltalm.generate import main
    from deltalm.text_lines import split_lines

    lines = ["a\u2028b", "form\x0cfeed", "next\x85line", "lone\rcr", "", "plain"]
    data = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8")
    src, hyp = tmp_path / "in.txt", tmp_path / "hyp.txt"
    src.write_bytes(data)
    short = ["--beam", "2", "--max-len-a", "0", "--max-len-b", "4", "--quiet", "--tgt-lang", "de"]
    assert main(["--model", str(model_dir), *short, "--input", str(src), "--output", str(hyp)]) == 0
    out = split_lines(hyp.read_text(encoding="utf-8"))
    model, vocab = load_model(model_dir, torch.device("cpu"))
    expected = translate(
        model, vocab, lines, tgt_lang="de", options=GenerateOptions(beam=2, max_len_a=0.0, max_len_b=4)
    )
    assert len(out) == len(lines) and out == expected and out[4] == ""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["--model", str(model_dir), *short, "--output", str(tmp_path / "stdin.txt")]) == 0
    assert split_lines((tmp_path / "stdin.txt").read_text(encoding="utf-8")) == expected
    capsys.readouterr()
