"""Checkpoint averaging: the element-wise mean of several checkpoints' weights (safetensors in and out), and its
command line ``python -m finetune.averaging``.

Examples::

    python -m finetune.averaging --run-dir runs/finetune --last 5 --output runs/finetune/averaged.safetensors
    python -m finetune.averaging --output avg.safetensors a.safetensors b.safetensors c.safetensors

``--run-dir`` takes the newest ``--last`` files of ``<run-dir>/weights/step_*.safetensors`` (written by
``finetune/train.py`` at every checkpoint).

Each tensor is accumulated in float64 in the order given and divided by N once, then cast back to the
tensor's own dtype, so the result is exactly ``(Σ_i w_i.double() / N).to(dtype)``: independent of the
machine and bit-identical between runs. Integer tensors (e.g. step counters) must agree across inputs and are
copied. Inputs must have identical key sets, shapes and dtypes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only when averaging runs: --help and argument errors answer at once
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
    import torch

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

    from deltalm.file_io import save_safetensors_atomic

    paths = [Path(p) for p in paths]
    state_dicts = [_load(p) for p in paths]
    averaged = average_state_dicts(state_dicts, [str(p) for p in paths])
    with safe_open(str(paths[0]), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
    metadata["averaged_from"] = json.dumps([str(p) for p in paths])
    output = Path(output)
    save_safetensors_atomic(averaged, output, metadata=metadata)
    return {"output": str(output), "inputs": [str(p) for p in paths], "tensors": len(averaged)}


def weights_files(run_dir: str | Path) -> list[Path]:
    """``<run_dir>/weights/step_*.safetensors`` sorted by step (oldest first)."""
    folder = Path(run_dir) / "weights"
    files = []
    for path in folder.glob("step_*.safetensors"):
        try:
            files.append((int(path.stem.split("_", 1)[1]), path))
        except ValueError:
            continue
    return [p for _, p in sorted(files)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m finetune.averaging",
        description="Average the last N checkpoints' weights (safetensors in and out).",
    )
    parser.add_argument("inputs", nargs="*", help="safetensors files to average")
    parser.add_argument("--run-dir", help="a fine-tuning run directory (uses its weights/step_*.safetensors)")
    parser.add_argument("--last", type=int, default=5, help="how many of the newest checkpoints (default 5)")
    parser.add_argument("--output", required=True, help="output safetensors file")
    args = parser.parse_args(argv)
    try:
        if args.run_dir:
            if args.inputs:
                raise AveragingError("give either --run-dir or input files, not both")
            found = weights_files(args.run_dir)
            if not found:
                raise AveragingError(f"no weights/step_*.safetensors under {args.run_dir}")
            if args.last < 1:
                raise AveragingError(f"--last must be >= 1, got {args.last}")
            inputs = found[-args.last :]
            if len(inputs) < args.last:
                print(f"note: only {len(inputs)} checkpoints found, averaging those", file=sys.stderr)
        else:
            inputs = [Path(p) for p in args.inputs]
        summary = average_checkpoints(inputs, args.output)
    except AveragingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
