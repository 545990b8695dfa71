"""The command-line contract of every training entry point: arguments, one-line errors, exit codes.

``--config FILE`` (optional with ``--preset``), ``--preset NAME``, ``--set key=value`` (repeatable); the
``deepspeed`` launcher's ``--local_rank`` is accepted and ignored (ranks come from the environment).
Exit codes: 0 done or preempted after its checkpoint, 2 bad CLI/config/data, 3 untrustworthy checkpoint,
4 too many non-finite steps in a row, 128 + signal number (143 SIGTERM, 138 SIGUSR1) stopped by a signal during
set-up, before the first step (nothing new saved; see :mod:`deltalm.engine.preemption`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from deltalm.engine.preemption import Preempted

EXIT_BAD_CONFIG = 2
EXIT_CHECKPOINT = 3
EXIT_NONFINITE = 4


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage block first
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)


def engine_argument_parser(prog: str, presets: list[str]) -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=prog, description="Train DeltaLM on the DeepSpeed engine (docs/engine.md).")
    parser.add_argument("--config", help="YAML config (the training config tree); optional with --preset")
    parser.add_argument(
        "--preset", choices=presets, help="start from a preset in code; the file and --set override"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="override a config key",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def fail(exc: BaseException, code: int) -> int:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    return code


def stopped(exc: Preempted) -> int:
    """One line for a run stopped by a signal during set-up; its exit code (128 + signal number)."""
    print(f"stopped: {exc}", file=sys.stderr, flush=True)
    return exc.exit_code


def run_guarded(body: Callable[[], int]) -> int:
    """Run the training body, mapping the engine's expected failures to one line and an exit code."""
    from deltalm.config_tree import ConfigError
    from deltalm.engine.checkpoint import CheckpointError
    from deltalm.engine.trainer import NonfiniteAbort

    try:
        return body()
    except Preempted as exc:
        return stopped(exc)
    except ConfigError as exc:
        return fail(exc, EXIT_BAD_CONFIG)
    except CheckpointError as exc:
        return fail(exc, EXIT_CHECKPOINT)
    except NonfiniteAbort as exc:
        return fail(exc, EXIT_NONFINITE)
