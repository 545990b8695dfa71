"""pretrain/train.py before any process starts: presets, bad CLI/config/data → one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deltalm.engine.config import build_config
from pretrain.config import PRESETS, PretrainConfig

REPO = Path(__file__).resolve().parents[2]


def test_paper_preset_is_the_paper_run():
    paper = build_config(PretrainConfig, PRESETS, None, [], preset="paper")
    assert paper.optimizer.betas == (0.9, 0.999) and paper.optimizer.grad_clip == 1.0
    assert (paper.schedule.kind, paper.schedule.warmup_steps, paper.schedule.total_steps) == (
        "linear",
        10_000,
        600_000,
    )
    assert paper.batch.global_batch_size == 2048 and paper.data.input_length == 512
    assert paper.model.d_model == 768 and paper.model.encoder_layers == 12 and paper.model.decoder_blocks == 6
    assert paper.init.kind == "xlmr"


def test_tiny_preset_and_overrides(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("preset: tiny\nrun: {max_steps: 3}\n")
    tiny = build_config(PretrainConfig, PRESETS, str(config_file), ["model.d_model=32", "model.heads=2"])
    assert (tiny.run.max_steps, tiny.model.d_model, tiny.model.encoder_layers) == (3, 32, 2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "error: pretrain/train.py: unrecognized arguments: --bogus (see --help)"),
        (["--preset", "tiny", "--set", "run.nope=1"], "error: unknown config key run.nope"),
        (
            ["--preset", "tiny", "--set", "batch.global_batch_size=7"],
            "error: batch.global_batch_size (7) is not",
        ),
        (["--preset", "tiny", "--set", "data.data_dirs=[/nonexistent]"], "error: /nonexistent/manifest.json"),
        (["--preset", "tiny"], "error: data.data_dirs: at least one"),
        (["--config", "/nonexistent.yaml"], "error: config file not found: /nonexistent.yaml"),
        (
            ["--preset", "tiny", "--set", "init.kind=xlmr", "--set", "init.path=/nope"],
            "error: init.path: xlmr",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message):
    proc = subprocess.run(
        [sys.executable, "pretrain/train.py", *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr


def test_spm_model_must_match_the_manifest_tokenizer(tmp_path):
    from deltalm.config_tree import ConfigError
    from deltalm.vocabulary import Vocabulary, file_sha256
    from pretrain.train import check_spm_model

    model = tmp_path / "spm.model"
    model.write_bytes(b"pretend model bytes")
    check_spm_model(str(model), Vocabulary(spm_size=10, spm_sha256=file_sha256(model)), "DIR")
    with pytest.raises(ConfigError, match="not the tokenizer of DIR"):
        check_spm_model(str(model), Vocabulary(spm_size=10, spm_sha256="0" * 64), "DIR")
    with pytest.raises(ConfigError, match="not found"):
        check_spm_model(str(tmp_path / "missing.model"), Vocabulary(spm_size=10), "DIR")


def _two_dirs(tmp_path, edit) -> tuple[Path, Path]:
    import numpy as np

    from deltalm.vocabulary import Vocabulary
    from tests.pretrain.corpus import random_docs, write_dataset

    vocab = Vocabulary(spm_size=400)
    rng = np.random.default_rng(0)
    good = write_dataset(tmp_path / "good", vocab, mono={"de": random_docs(rng, 20, 5, 50, 4, 400)})
    other = write_dataset(tmp_path / "other", vocab, mono={"fr": random_docs(rng, 20, 5, 50, 4, 400)})
    edit(other)
    return good, other


def _replace_in(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: __import__("shutil").rmtree(d), "data.data_dirs: {other} is not a directory"),
        (
            lambda d: _replace_in(d / "manifest.json", '"spm_size": 400', '"spm_size": 401'),
            "{other}/manifest.json: tokenizer",
        ),
        (
            lambda d: _replace_in(d / "fr" / "shards.jsonl", '"rows":20', '"rows":21'),
            "{other}/fr/shards.jsonl",
        ),
        (lambda d: (d / "manifest.json").write_text("{"), "{other}/manifest.json: unreadable manifest"),
        (lambda d: (d / "fr" / "shard-00000.arrow").unlink(), "{other}/fr/shard-00000.arrow: listed in"),
        (
            lambda d: (d / "fr" / "shard-00000.arrow").write_bytes(b"short"),
            "{other}/fr/shard-00000.arrow: 5 bytes, the manifest says",
        ),
    ],
)
def test_every_data_dir_is_checked_before_start(tmp_path, edit, message):
    good, other = _two_dirs(tmp_path, edit)
    argv = ["--preset", "tiny", "--set", f"data.data_dirs=[{good},{other}]", "--set", "model.vocab_size=504"]
    argv += ["--set", f"run.run_dir={tmp_path / 'run'}"]
    proc = subprocess.run(
        [sys.executable, "pretrain/train.py", *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: " + message.format(other=other)), proc.stderr
    assert not (tmp_path / "run").exists()  # nothing started
