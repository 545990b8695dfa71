"""Safe checkpoint reads shared by the adapters: weights-only torch files and safetensors (writes and the error
type: :mod:`deltalm.file_io`)."""

from __future__ import annotations

from pathlib import Path

import torch

from deltalm.file_io import CheckpointError, atomic_directory, save_torch_atomic

__all__ = [
    "CheckpointError",
    "atomic_directory",
    "read_safetensors",
    "read_torch_weights",
    "save_torch_atomic",
]


def read_torch_weights(path: str | Path) -> object:
    """``torch.load`` with ``weights_only=True`` (never unpickles arbitrary objects), on CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (not a zip), ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a weights-only torch checkpoint ({first})") from None


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})"
        ) from None
