"""Shared pytest setup: CPU DeepSpeed accelerator, gpu marker skipping, bundled-corpus paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = REPO / "data_prep" / "sample_corpus"


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


if not _cuda_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(scope="session")
def sample_corpus() -> Path:
    return SAMPLE_CORPUS


def subprocess_environment() -> dict[str, str]:
    """The environment for a command run as its own one-process job: CPU, the repository importable, and no
    rank/rendezvous variables (an in-process engine test exports MASTER_PORT etc. into this process)."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


SMOKE_DEMO_ARGS = ("-m", "deltalm.demo", "--budget", "smoke", "--run-dir")


@pytest.fixture(scope="session")
def smoke_demo(tmp_path_factory):
    """One ``python -m deltalm.demo --budget smoke --run-dir DIR`` per session (tests/demo, tests/docs share it;
    a test that changes the run works on a copy or only re-runs stages). Returns (DIR, the CompletedProcess)."""
    import subprocess
    import sys

    run_dir = tmp_path_factory.mktemp("smoke_demo") / "run"
    proc = subprocess.run(
        [sys.executable, *SMOKE_DEMO_ARGS, str(run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env=subprocess_environment(),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc
