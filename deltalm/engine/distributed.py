"""Rank discovery and process-group start-up.

One process can be started by the ``deepspeed`` launcher (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR set),
``mpirun`` (OMPI_COMM_WORLD_*; the master address is agreed on through mpi4py), ``srun`` (SLURM_PROCID/
SLURM_NTASKS/SLURM_LOCALID, master = first host of SLURM_NODELIST through ``scontrol`` when present), or plainly
(a single process). :func:`discover` reads the environment only; :func:`init_process_group` exports the torch
variables and starts DeepSpeed's comm with a short timeout so a dead or hung rank ends the job in seconds.
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # deepspeed | mpirun | srun | single

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class LaunchError(RuntimeError):
    """The environment names an impossible rank layout; the message is one line."""


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise LaunchError(f"environment variable {key}={env[key]!r} is not an integer") from None


def _slurm_master(nodelist: str) -> str:
    """First host of a SLURM node list (``scontrol show hostnames`` when available, else a simple parse)."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            pass
    head = nodelist.split(",")[0]
    if "[" in head:  # node[01-04] -> node01
        prefix, rest = head.split("[", 1)
        return prefix + rest.split("-")[0].split(",")[0].rstrip("]")
    return head


def _mpi_master(default: str) -> str:
    """Under mpirun without MASTER_ADDR: rank 0's hostname, broadcast through mpi4py."""
    try:
        from mpi4py import MPI
    except ImportError:
        return default
    return MPI.COMM_WORLD.bcast(socket.gethostname() if MPI.COMM_WORLD.Get_rank() == 0 else None, root=0)


def discover(env: Mapping[str, str] | None = None) -> RankInfo:
    """Rank, world size, local rank and rendezvous address of this process, from its launcher's environment."""
    env = os.environ if env is None else env
    port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else DEFAULT_PORT
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
        info = RankInfo(rank, world, local, env.get("MASTER_ADDR", "127.0.0.1"), port, "deepspeed")
    elif "OMPI_COMM_WORLD_RANK" in env:
        rank, world = _int(env, "OMPI_COMM_WORLD_RANK"), _int(env, "OMPI_COMM_WORLD_SIZE")
        local = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK") if "OMPI_COMM_WORLD_LOCAL_RANK" in env else rank
        addr = env.get("MASTER_ADDR") or (_mpi_master("127.0.0.1") if world > 1 else "127.0.0.1")
        info = RankInfo(rank, world, local, addr, port, "mpirun")
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rank, world = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        addr = env.get("MASTER_ADDR") or _slurm_master(env.get("SLURM_NODELIST", "127.0.0.1"))
        info = RankInfo(rank, world, local, addr, port, "srun")
    else:
        info = RankInfo(0, 1, 0, env.get("MASTER_ADDR", "127.0.0.1"), port, "single")
    if info.world_size < 1 or not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise LaunchError(
            f"impossible rank layout from {info.launcher}: rank {info.rank} of {info.world_size}"
        )
    return info


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_process_group(info: RankInfo, *, timeout_s: int, cpu_shm_comm: bool = False) -> None:
    """Export the torch rendezvous variables and start DeepSpeed comm (gloo on CPU, nccl on GPU)."""
    port = info.master_port
    if info.launcher == "single" and "MASTER_PORT" not in os.environ:
        port = _free_port()  # several single-process runs on one machine must not collide
    os.environ.update(
        RANK=str(info.rank),
        WORLD_SIZE=str(info.world_size),
        LOCAL_RANK=str(info.local_rank),
        MASTER_ADDR=info.master_addr,
        MASTER_PORT=str(port),
    )
    import importlib

    import deepspeed

    # ``import deepspeed.comm.torch as m`` would bind the real torch (deepspeed.comm re-exports it): look it up.
    ds_torch_comm = importlib.import_module("deepspeed.comm.torch")

    if not cpu_shm_comm:
        # DeepSpeed's CPU accelerator JIT-compiles a shared-memory allreduce on first start (~60 s); the gloo
        # path gives the same results, so tests and CI skip the build unless asked for.
        ds_torch_comm.build_shm_op = lambda: None
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        get_accelerator().set_device(info.local_rank)  # NCCL collectives before deepspeed.initialize need it
    deepspeed.init_distributed(
        dist_backend=None, timeout=datetime.timedelta(seconds=timeout_s), auto_mpi_discovery=False
    )


def collective_device():
    """The device collectives run on: the rank's accelerator (NCCL needs it), else the CPU (gloo)."""
    import torch
    from deepspeed.accelerator import get_accelerator

    name = get_accelerator().device_name()
    return torch.device("cpu") if name == "cpu" else torch.device(get_accelerator().current_device_name())


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
