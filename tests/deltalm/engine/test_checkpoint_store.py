"""The commit protocol of CheckpointStore with a stand-in engine (no DeepSpeed, no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deltalm.engine.checkpoint import COMMITTED, LATEST, CheckpointStore, tag_for
from deltalm.file_io import CheckpointError


class FakeEngine:
    """Writes one file per save the way DeepSpeed does (``<dir>/<tag>/...``); loads nothing."""

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        assert save_latest is False
        folder = Path(save_dir) / tag
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"module": {"w": torch.arange(1000.0)}, **client_state}, folder / "mp_rank_00_model_states.pt"
        )


def saved(tmp_path: Path, steps=(2, 4, 6), keep_last: int = 2) -> CheckpointStore:
    store = CheckpointStore(tmp_path / "ckpt", keep_last=keep_last, rank=0, world_size=1)
    for step in steps:
        store.save(
            FakeEngine(), step, client_state={"step": step}, rank_state={"loader": {"n": step}}, meta={}
        )
    return store


def test_commit_latest_and_pruning(tmp_path):
    store = saved(tmp_path)
    assert store.committed_tags() == [tag_for(4), tag_for(6)]
    assert (store.directory / LATEST).read_text().strip() == tag_for(6)
    manifest = store.verify(tag_for(6))
    assert set(manifest["files"]) == {"mp_rank_00_model_states.pt", "rank_state_00000.pt"}
    assert manifest["step"] == 6 and manifest["world_size"] == 1


def test_uncommitted_newer_folder_is_ignored(tmp_path):
    store = saved(tmp_path)
    torn = store.directory / tag_for(8)
    torn.mkdir()
    (torn / "mp_rank_00_model_states.pt").write_bytes(b"half")
    assert store.resume_tag() == tag_for(6)
    (store.directory / LATEST).unlink()  # killed between COMMITTED and latest: newest committed still wins
    assert store.resume_tag() == tag_for(6)


def test_empty_latest_is_an_error(tmp_path):
    store = saved(tmp_path)
    (store.directory / LATEST).write_text("")
    with pytest.raises(CheckpointError, match=r"latest is empty"):
        store.resume_tag()


def test_latest_naming_uncommitted_tag_is_an_error(tmp_path):
    store = saved(tmp_path)
    (store.directory / tag_for(6) / COMMITTED).unlink()
    with pytest.raises(CheckpointError, match="is not a committed checkpoint"):
        store.resume_tag()


def test_truncated_file_is_named(tmp_path):
    store = saved(tmp_path)
    target = store.directory / tag_for(6) / "mp_rank_00_model_states.pt"
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(CheckpointError) as info:
        store.verify(tag_for(6))
    assert str(target) in str(info.value) and "truncated" in str(info.value)


def test_flipped_byte_is_named(tmp_path):
    store = saved(tmp_path)
    target = store.directory / tag_for(6) / "rank_state_00000.pt"
    data = bytearray(target.read_bytes())
    data[-20] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        store.verify(tag_for(6))
    assert str(target) in str(info.value) and "sha256" in str(info.value)


def test_altered_manifest_is_detected(tmp_path):
    store = saved(tmp_path)
    manifest = store.directory / tag_for(6) / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"step": 6', '"step": 7'))
    with pytest.raises(CheckpointError, match="does not match its COMMITTED marker"):
        store.verify(tag_for(6))
