"""Rank discovery from each launcher's environment."""

from __future__ import annotations

import pytest

from deltalm.engine.distributed import LaunchError, _slurm_master, discover


def test_deepspeed_launcher_env():
    info = discover(
        {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1234"}
    )
    assert (info.rank, info.world_size, info.local_rank, info.master_addr, info.master_port) == (
        3,
        8,
        1,
        "n1",
        1234,
    )
    assert info.launcher == "deepspeed" and not info.is_main


def test_mpirun_env():
    env = {
        "OMPI_COMM_WORLD_RANK": "1",
        "OMPI_COMM_WORLD_SIZE": "2",
        "OMPI_COMM_WORLD_LOCAL_RANK": "1",
        "MASTER_ADDR": "h0",
    }
    info = discover(env)
    assert (info.rank, info.world_size, info.local_rank, info.master_addr, info.launcher) == (
        1,
        2,
        1,
        "h0",
        "mpirun",
    )


def test_srun_env_and_nodelist():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_NODELIST": "gpu[07-08]"}
    info = discover(env)
    assert (info.rank, info.world_size, info.local_rank, info.launcher) == (5, 16, 1, "srun")
    assert info.master_addr == "gpu07"
    assert _slurm_master("a1,b2") == "a1"


def test_single_process():
    info = discover({})
    assert (info.rank, info.world_size, info.launcher) == (0, 1, "single") and info.is_main


@pytest.mark.parametrize(
    "env",
    [
        {"RANK": "2", "WORLD_SIZE": "2"},
        {"RANK": "x", "WORLD_SIZE": "2"},
        {"SLURM_PROCID": "0", "SLURM_NTASKS": "0"},
    ],
)
def test_impossible_layouts_are_one_line_errors(env):
    with pytest.raises(LaunchError):
        discover(env)
