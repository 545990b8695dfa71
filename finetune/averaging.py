"""Checkpoint averaging: the element-wise mean of several checkpoints' weights (safetensors in and out).

Each tensor is accumulated in float64 in the order given and divided by N once, then cast back to the
tensor's own dtype, so the result is exactly ``(Σ_i w_i.double() / N).to(dtype)``: independent of the
machine and bit-identical between runs. Integer tensors (e.g. step counters) must agree across inputs and are
copied. Inputs must have identical key sets, shapes and dtypes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch


class AveragingError(ValueError):
    """Inputs that cannot be averaged; the message is one line."""


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise AveragingError(f"checkpoint not found: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises SafetensorError with long text
        raise AveragingError(f"{path}: not a safetensors file ({str(exc).splitlines()[0]})") from None


def average_state_dicts(state_dicts: Sequence[dict[str, torch.Tensor]], names: Sequence[str] = ()) -> dict:
    """The fp64-accumulated mean of ``state_dicts`` (see module docstring)."""
    if not state_dicts:
        raise AveragingError("nothing to average: no checkpoints given")
    names = list(names) or [f"#{i}" for i in range(len(state_dicts))]
    first = state_dicts[0]
    for name, sd in zip(names[1:], state_dicts[1:], strict=True):
        if set(sd) != set(first):
            diff = sorted(set(sd) ^ set(first))
            raise AveragingError(f"{name} has different tensors than {names[0]} (e.g. {diff[0]})")
        for key, tensor in sd.items():
            ref = first[key]
            if tensor.shape != ref.shape or tensor.dtype != ref.dtype:
                raise AveragingError(
                    f"{name}: {key} is {tuple(tensor.shape)} {tensor.dtype}, "
                    f"{names[0]} has {tuple(ref.shape)} {ref.dtype}"
                )
    n = len(state_dicts)
    out: dict[str, torch.Tensor] = {}
    for key, ref in first.items():
        if not ref.is_floating_point():
            for name, sd in zip(names, state_dicts, strict=True):
                if not torch.equal(sd[key], ref):
                    raise AveragingError(
                        f"{name}: integer tensor {key} differs from {names[0]}; cannot average"
                    )
            out[key] = ref.clone()
            continue
        acc = torch.zeros(ref.shape, dtype=torch.float64)
        for sd in state_dicts:
            acc += sd[key].to(torch.float64)
        out[key] = (acc / n).to(ref.dtype)
    return out


def average_checkpoints(paths: Sequence[str | Path], output: str | Path) -> dict:
    """Average safetensors files ``paths`` into ``output`` (written atomically); returns a summary."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    paths = [Path(p) for p in paths]
    state_dicts = [_load(p) for p in paths]
    averaged = average_state_dicts(state_dicts, [str(p) for p in paths])
    with safe_open(str(paths[0]), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
    metadata["averaged_from"] = json.dumps([str(p) for p in paths])
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    save_file({k: v.contiguous() for k, v in averaged.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, output)
    return {"output": str(output), "inputs": [str(p) for p in paths], "tensors": len(averaged)}
