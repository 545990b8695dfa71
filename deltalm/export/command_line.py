"""``python -m deltalm.export``: one committed checkpoint → one artifact (see deltalm/export/exporter.py).

Light at import: torch loads only once the arguments are good, so ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import sys

from deltalm.config_tree import ConfigError
from deltalm.export.formats import DTYPES, FORMATS
from deltalm.file_io import CheckpointError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deltalm.export",
        description="Export a committed DeltaLM checkpoint (any ZeRO stage/world size) to one artifact.",
    )
    parser.add_argument("--run-dir", required=True, help="run directory (or its checkpoints/ directory)")
    parser.add_argument("--out", required=True, help="output directory (a .pt file for --format official)")
    parser.add_argument("--format", choices=FORMATS, default="safetensors")
    parser.add_argument("--tag", default=None, help="checkpoint tag (default: the newest committed one)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="safetensors weight dtype")
    parser.add_argument("--spm", default=None, help="SentencePiece model (default: from the run's config)")
    parser.add_argument("--verify", action="store_true", help="reload the export and compare logits")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from deltalm.export.exporter import export_run

    def say(message: str) -> None:
        print(f"[export] {message}", file=sys.stderr, flush=True)

    try:
        result = export_run(
            args.run_dir,
            args.out,
            format=args.format,
            tag=args.tag,
            dtype=args.dtype,
            spm=args.spm,
            verify=args.verify,
            log=say,
        )
    except (CheckpointError, ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=1))
    if result.verify is not None and not result.verify["ok"]:
        print(f"error: verification failed: {result.verify['summary']}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
