"""The one command-line contract of both training entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ENTRY_POINTS = {"pretrain/train.py": "docs/pretrain_data.md", "finetune/train.py": "docs/finetune.md"}


def run(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MKL_CBWR")}
    return subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_help_names_the_config_docs_without_loading_torch(entry):
    proc = run(entry, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = " ".join(proc.stdout.split())
    assert ENTRY_POINTS[entry] in text and "docs/engine.md" in text and "--preset" in text
    assert "| torch\n" not in proc.stderr  # -X importtime lists every module loaded


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_bad_command_line_and_config_are_one_line_exit_2(entry, tmp_path):
    proc = run(entry, "--bogus")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "usage:" not in proc.stderr
    proc = run(entry, "--config", str(tmp_path / "missing.yaml"))
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 2 and errors == [f"error: config file not found: {tmp_path / 'missing.yaml'}"]


def test_only_rank_zero_prints_and_the_error_file_gets_the_line(tmp_path, capsys, monkeypatch):
    from deltalm.engine.cli import ERROR_FILE_ENV, fail

    error_file = tmp_path / "err"
    monkeypatch.setenv(ERROR_FILE_ENV, str(error_file))
    monkeypatch.setenv("RANK", "1")
    assert fail(ValueError("bad key\nmore"), 2) == 2
    assert capsys.readouterr().err == "" and not error_file.exists()
    monkeypatch.setenv("RANK", "0")
    assert fail(ValueError("bad key\nmore"), 2) == 2
    assert capsys.readouterr().err == "error: bad key\n" and error_file.read_text() == "error: bad key\n"


def test_mkl_pinned_before_torch(monkeypatch):
    from deltalm.engine.cli import pin_cpu_math

    monkeypatch.delenv("MKL_CBWR", raising=False)
    pin_cpu_math()
    assert os.environ["MKL_CBWR"] == "AUTO,STRICT"
