"""Durable file writes and file hashes: the one I/O module of every stage.

Every write that a later reader trusts goes through here: the bytes land in a temporary name beside the
target, are fsynced, renamed over the target in one step, and the directory is fsynced, so a crash leaves
either the old complete file (or directory) or the new one, never a half-written file under the final name,
and no temporary file is left behind on an error. :class:`CheckpointError` is the one error for a file that
cannot be used or trusted (its message is one line naming the file, key or shape at fault).

Light on purpose (torch and safetensors are imported only by the tensor writers).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used or trusted; the message is one line naming it."""


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _atomic_file(path: str | Path, mode: str) -> Iterator:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably and atomically (temp file, fsync, rename, directory fsync)."""
    with _atomic_file(path, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` durably and atomically (temp file, fsync, rename, directory fsync)."""
    with _atomic_file(path, "w") as handle:
        handle.write(text)


def write_json_atomic(path: str | Path, obj: object, *, sort_keys: bool = True) -> None:
    """Write ``obj`` as indented JSON (one trailing newline), see :func:`write_text_atomic`."""
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def save_torch_atomic(obj: object, path: str | Path) -> None:
    """``torch.save`` durably and atomically, see :func:`write_text_atomic`."""
    import torch

    with _atomic_file(path, "wb") as handle:
        torch.save(obj, handle)


def save_safetensors_atomic(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file, durably and atomically (tensors made contiguous on the CPU first)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside ``target``; on success it replaces ``target`` in one rename.

    Every file written into it is fsynced before the rename. An existing ``target`` is moved aside first and
    removed after the rename, so a crash leaves either the old or the new complete directory (plus a ``.tmp-*``
    leftover), never a half-written one under the final name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{target} exists and is not a directory")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
        for item in tmp.rglob("*"):
            if item.is_file():
                with open(item, "rb") as handle:
                    os.fsync(handle.fileno())
        fsync_dir(tmp)
        old = None
        if target.exists():
            old = target.parent / f".old-{target.name}-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read into one reused buffer (no allocation per chunk)."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()
