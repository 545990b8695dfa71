"""Fixtures for data_prep tests: one tiny SentencePiece model per session, an in-process CLI runner."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.cli import main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data_prep" / "sample_corpus"


@pytest.fixture(scope="session")
def sample() -> Path:
    return SAMPLE


def run_cli(*argv: str | Path) -> tuple[int, str, str]:
    """Run ``python -m data_prep ARGV`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code if isinstance(exc.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def run_subprocess(
    *argv: str | Path, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "data_prep", *[str(a) for a in argv]],
        env=full_env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory) -> Path:
    """A 512-piece unigram model trained through the CLI on a slice of the bundled corpus (~2 s)."""
    prefix = tmp_path_factory.mktemp("spm") / "tiny"
    rc, out, err = run_cli(
        "train-spm",
        "--vocab-size", "512",
        "--input-sentence-size", "8000",
        "--output", prefix,
        SAMPLE / "mono" / "en.txt.gz",
        SAMPLE / "mono" / "de.txt.gz",
        SAMPLE / "parallel" / "valid.en-de.jsonl.gz",
    )  # fmt: skip
    assert rc == 0, err
    return Path(f"{prefix}.model")


def read_tree(root: Path) -> dict[str, bytes]:
    """Every visible file under ``root`` (lock files excluded) → its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }
