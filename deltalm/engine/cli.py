"""The command-line contract of every training entry point: arguments, one-line errors, exit codes.

``--config FILE`` (optional with ``--preset``), ``--preset NAME``, ``--set key=value`` (repeatable), plus what
an entry point adds (fine-tuning's ``--task``); the ``deepspeed`` launcher's ``--local_rank`` is accepted and
ignored (ranks come from the environment). ``--help`` names the pages that document the config keys.

Exit codes: 0 done or preempted after its checkpoint, 2 bad CLI/config/data, 3 untrustworthy checkpoint,
4 too many non-finite steps in a row, 128 + signal number (143 SIGTERM, 138 SIGUSR1) stopped by a signal during
set-up, before the first step (nothing new saved; see :mod:`deltalm.engine.preemption`). An error is one line on
stderr, printed by rank 0 only (every rank meets
the same config error; the launcher would print it once per rank). When ``DELTALM_ERROR_FILE`` names a file
(``launch.sh`` sets it), rank 0 also writes the line there, so that the launcher can repeat it as the last thing
the user sees, after its own logging.

This module is light (no torch): ``--help`` and a config error answer without loading the training stack. An
entry point calls :func:`pin_cpu_math` before torch is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping

from deltalm.engine.preemption import Preempted

EXIT_BAD_CONFIG = 2
EXIT_CHECKPOINT = 3
EXIT_NONFINITE = 4
ERROR_FILE_ENV = "DELTALM_ERROR_FILE"
_RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID")


def pin_cpu_math() -> None:
    """MKL's results depend on memory alignment unless pinned: bit-exact resume on CPU needs this before torch
    loads. A user's own ``MKL_CBWR`` wins."""
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage block first
        fail(f"{self.prog}: {message} (see --help)", EXIT_BAD_CONFIG)
        sys.exit(EXIT_BAD_CONFIG)


def engine_argument_parser(
    prog: str, presets: list[str], *, description: str, config_docs: str
) -> argparse.ArgumentParser:
    """The shared arguments; ``config_docs`` names the pages documenting the keys (shown by ``--help``)."""
    parser = _OneLineParser(
        prog=prog,
        description=description,
        epilog=f"Config keys and their defaults: {config_docs}. Exit codes: 0 done or preempted after its "
        "checkpoint, 2 bad command line/config/data, 3 untrustworthy checkpoint, 4 too many non-finite steps.",
    )
    parser.add_argument("--config", help="YAML config (the training config tree); optional with --preset")
    parser.add_argument(
        "--preset",
        choices=presets or None,
        help="start from a preset in code; the file and --set override"
        + ("" if presets else " (this entry point has none)"),
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="override a config key (dotted, value parsed as YAML; repeatable)",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def launcher_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's global rank as its launcher set it (0 when started alone or unreadable)."""
    env = os.environ if env is None else env
    for name in _RANK_VARIABLES:
        if name in env:
            try:
                return int(env[name])
            except ValueError:
                return 0
    return 0


def fail(exc: BaseException | str, code: int) -> int:
    """Report ``exc`` as one line (rank 0 only) and return ``code``."""
    if launcher_rank() != 0:
        return code
    line = f"error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    print(line, file=sys.stderr, flush=True)
    path = os.environ.get(ERROR_FILE_ENV)
    if path:
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError:
            pass
    return code


def stopped(exc: Preempted) -> int:
    """One line for a run stopped by a signal during set-up; its exit code (128 + signal number)."""
    print(f"stopped: {exc}", file=sys.stderr, flush=True)
    return exc.exit_code


def run_guarded(body: Callable[[], int], bad_input: tuple[type[BaseException], ...] = ()) -> int:
    """Run the training body, mapping the engine's expected failures to one line and an exit code.

    ``bad_input``: the entry point's own error classes for bad data or settings (exit 2, like a ConfigError).
    """
    from deltalm.config_tree import ConfigError
    from deltalm.engine.distributed import LaunchError
    from deltalm.engine.trainer import NonfiniteAbort
    from deltalm.file_io import CheckpointError

    try:
        return body()
    except Preempted as exc:
        return stopped(exc)
    except (ConfigError, LaunchError, *bad_input) as exc:
        return fail(exc, EXIT_BAD_CONFIG)
    except CheckpointError as exc:
        return fail(exc, EXIT_CHECKPOINT)
    except NonfiniteAbort as exc:
        return fail(exc, EXIT_NONFINITE)
