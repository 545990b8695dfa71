"""The generation benchmark's --quick run: equality checks against Hugging Face BART hold, numbers are sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from benchmarks import generation as bench  # noqa: E402


def test_quick_benchmark_checks_pass(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    report = json.loads(out.read_text())["quick"]
    assert report["encoder_max_abs_diff"] < 1e-4
    assert report["greedy_identical"] == report["greedy_sentences"] == bench.QUICK.batch
    for name in ("ours", "hf"):
        assert report[name]["wall_s"] > 0 and report[name]["tokens_per_s"] > 0
    assert report["bart_decoder_layers"] == bench.matched_bart_layers(bench.QUICK)
    assert "speedup (HF / ours)" in capsys.readouterr().out


def test_matched_bart_layers_follow_matmul_work() -> None:
    # ffn = 4d: a DeltaLM block is 22 d^2 of matmuls per token, a BART layer 14 d^2
    assert bench.matched_bart_layers(bench.SETTINGS["wide"]) == round(3 * 22 / 14)
    assert bench.matched_bart_layers(bench.SETTINGS["small"]) == round(2 * 22 / 14)


def test_bad_option_is_a_clear_error(capsys: pytest.CaptureFixture) -> None:
    assert bench.main(["--quick", "--beam-size", "0"]) == 2
    assert "--beam-size must be >= 1" in capsys.readouterr().err
