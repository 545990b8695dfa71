"""deltalm/file_io.py: durable, atomic writes and the one CheckpointError."""

from __future__ import annotations

import json

import pytest
import torch

from deltalm import file_io
from deltalm.file_io import (
    CheckpointError,
    atomic_directory,
    file_sha256,
    save_safetensors_atomic,
    save_torch_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_text_and_json_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    write_text_atomic(path, "one\n")
    write_text_atomic(path, "two\n")
    assert path.read_text() == "two\n" and [p.name for p in path.parent.iterdir()] == ["a.txt"]
    write_json_atomic(tmp_path / "b.json", {"z": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "b.json").read_text()) == {"z": 1, "a": [1, 2]}
    write_json_atomic(tmp_path / "c.json", {"z": 1, "a": 2}, sort_keys=False)
    assert (tmp_path / "c.json").read_text().index('"z"') < (tmp_path / "c.json").read_text().index('"a"')


def test_a_failed_write_keeps_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    write_text_atomic(path, "old\n")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(file_io.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_tensor_writes_and_directories(tmp_path):
    from safetensors.torch import load_file

    tensors = {"w": torch.arange(6.0).view(2, 3)}
    save_safetensors_atomic(tensors, tmp_path / "w.safetensors", metadata={"step": "3"})
    assert torch.equal(load_file(str(tmp_path / "w.safetensors"))["w"], tensors["w"])
    save_torch_atomic({"x": 1}, tmp_path / "x.pt")
    assert torch.load(tmp_path / "x.pt", weights_only=True) == {"x": 1}
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "f").write_text("1")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "d") as tmp:
        (tmp / "f").write_text("2")
        raise RuntimeError("interrupted")
    assert (tmp_path / "d" / "f").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "w.safetensors", "x.pt"]
    assert len(file_sha256(tmp_path / "x.pt")) == 64


def test_one_checkpoint_error_class():
    from deltalm.checkpoints import weights_files
    from deltalm.engine import checkpoint

    assert checkpoint.CheckpointError is weights_files.CheckpointError is CheckpointError
    assert issubclass(CheckpointError, ValueError)
