"""``python -m finetune.average``: average the last N checkpoints' weights (safetensors in and out).

Examples::

    python -m finetune.average --run-dir runs/finetune --last 5 --output runs/finetune/averaged.safetensors
    python -m finetune.average --output avg.safetensors a.safetensors b.safetensors c.safetensors

``--run-dir`` takes the newest ``--last`` files of ``<run-dir>/weights/step_*.safetensors`` (written by
``finetune/train.py`` at every checkpoint). The mean is exact (see finetune/averaging.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from finetune.averaging import AveragingError, average_checkpoints


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
    parser = argparse.ArgumentParser(prog="python -m finetune.average", description=__doc__.splitlines()[0])
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
