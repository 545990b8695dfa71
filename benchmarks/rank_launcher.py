"""Start N CPU ranks of a script the way the deepspeed launcher does (RANK/WORLD_SIZE/MASTER_* in the
environment, gloo on ``DS_ACCELERATOR=cpu``), for benchmarks and tests that need a multi-rank engine run on one
machine without the launcher."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the rendezvous port of one launch)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """This process's environment without other launchers' rank variables, plus rank ``rank`` of ``world``."""
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


def start(world: int, script: Path, args: list[str], extra_env: dict | None = None) -> list[subprocess.Popen]:
    """``world`` processes of ``python script args...`` (cwd: the repository root), output captured."""
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
    """(exit code, stdout, stderr) of each rank; a rank still running after ``timeout`` seconds is killed."""
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
    world: int, script: Path, args: list[str], timeout: float = 240, extra_env: dict | None = None
) -> list[tuple[int, str, str]]:
    """:func:`start` then :func:`wait`."""
    return wait(start(world, script, args, extra_env), timeout)
