"""Kill-and-rerun: a SIGKILLed run, rerun with the same command, equals an uninterrupted run byte for byte."""

from __future__ import annotations

import shutil
import signal

import pytest

from data_prep.manifest import committed_stream
from data_prep.shard_writer import KILL_HOOK_ENV
from deltalm.shard_format import SHARD_TABLE_NAME, load_manifest

from .conftest import SAMPLE, read_tree, run_subprocess


@pytest.mark.slow
@pytest.mark.parametrize("workers, kill_after", [(1, 3), (2, 7)])
def test_sigkill_then_rerun_is_byte_identical(spm_model, tmp_path, workers, kill_after):
    broken = tmp_path / "bad.txt"  # bad input before and after the kill point: counts must survive resume
    broken.write_bytes(b"ok\n\n\xff bad\n\n" + b"tail doc\n")
    args = ["mono", "--spm", spm_model, "--lang", "de", "--output", "out", "--workers", str(workers),
            "--shard-size", "8k", "--block-size", "16k", SAMPLE / "mono" / "de.txt.gz", broken,
            SAMPLE / "mono" / "en.txt.gz"]  # fmt: skip
    done = run_subprocess(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    reference = read_tree(tmp_path / "out")
    assert len(load_manifest(tmp_path / "out")["streams"]["de"]["shards"]) > kill_after + 3
    shutil.rmtree(tmp_path / "out")

    killed = run_subprocess(*args, cwd=tmp_path, env={KILL_HOOK_ENV: str(kill_after)})
    assert killed.returncode == -signal.SIGKILL
    # The manifest is published at the command's checkpoints only; the journal holds the progress since.
    assert load_manifest(tmp_path / "out")["streams"]["de"]["num_shards"] == 0
    partial = committed_stream(tmp_path / "out", "de")
    assert len(partial["shards"]) == kill_after - 1  # the last shard file was renamed but never listed
    with open(tmp_path / "out" / "de" / SHARD_TABLE_NAME, "ab") as table:  # a kill inside the table append
        table.write(b'{"bytes":1,"path":"de/shard-9')
    assert (tmp_path / "out" / "de" / f"shard-{kill_after - 1:05d}.arrow").exists()
    assert not partial["inputs"][0]["done"] and partial["inputs"][0]["resume"]["skip_rows"] > 0

    rerun = run_subprocess(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert read_tree(tmp_path / "out") == reference
    again = run_subprocess(*args, cwd=tmp_path)  # finished: nothing to do
    assert "0 new shard(s)" in again.stdout and read_tree(tmp_path / "out") == reference
