"""Fine-tuning entry point on the shared DeepSpeed engine (the command-line contract of deltalm/engine/cli.py).

Examples::

    deepspeed --num_gpus 2 finetune/train.py --task translation --config configs/finetune_mt.yaml
    DS_ACCELERATOR=cpu python finetune/train.py --task summarization --config cfg.yaml --set run.max_steps=100
    python finetune/train.py --preset paper --set task.spm_model=... --set task.train=[...]

The config is :class:`finetune.config.FinetuneConfig` (the engine's sections + ``task``); the run itself is
:func:`finetune.trainer.run`. Exit codes: 0 done (or preempted after its checkpoint), 2 bad command line,
config or data, 3 untrustworthy checkpoint, 4 too many non-finite steps, 128 + signal number stopped by a signal
during set-up (nothing new saved). Errors are one line from rank 0.
"""

from __future__ import annotations

import sys

from deltalm.engine.cli import (  # noqa: E402  (light: no torch before the config is known to be good)
    EXIT_BAD_CONFIG,
    engine_argument_parser,
    fail,
    pin_cpu_math,
    run_guarded,
)

pin_cpu_math()

TASKS = ["translation", "summarization", "question_generation", "data_to_text"]
CONFIG_DOCS = "docs/finetune.md (task), docs/engine.md (run, model, init, optimizer, schedule, batch, ...)"


def read_config(argv: list[str] | None):
    from finetune.config import PRESETS

    parser = engine_argument_parser(
        "finetune/train.py",
        presets=sorted(PRESETS),
        description="Fine-tune DeltaLM on a task (translation, summarization, question generation, data-to-text).",
        config_docs=CONFIG_DOCS,
    )
    parser.add_argument("--task", choices=TASKS, help="sets task.name")
    args = parser.parse_args(argv)
    from finetune.config import load_finetune_config

    return load_finetune_config(args.config, args.overrides, args.task, preset=args.preset)


def main(argv: list[str] | None = None) -> int:
    from deltalm.engine.preemption import install_for_setup

    preemption = install_for_setup()  # first: a stop signal from here until the first step ends the run
    try:
        return _main(argv)
    finally:
        preemption.uninstall()


def _main(argv: list[str] | None) -> int:
    from deltalm.config_tree import ConfigError
    from deltalm.engine.cli import stopped
    from deltalm.engine.preemption import Preempted

    try:
        config = read_config(argv)
    except ConfigError as exc:
        return fail(exc, EXIT_BAD_CONFIG)
    except Preempted as exc:
        return stopped(exc)
    import torch.distributed as dist

    from deltalm.engine.distributed import shutdown
    from finetune.averaging import AveragingError
    from finetune.readers import DataError
    from finetune.tasks import TaskError
    from finetune.trainer import run

    summary: dict = {}

    def body() -> int:
        summary.update(run(config))
        return 0

    started_here = not (dist.is_available() and dist.is_initialized())
    try:
        code = run_guarded(body, bad_input=(DataError, TaskError, AveragingError))
    finally:
        if started_here:  # tear down only the process group this call started
            shutdown()
    if code == 0:
        import json

        print(json.dumps(summary, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
