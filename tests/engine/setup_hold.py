"""Test driver: an entry point's ``main`` with its set-up held at a known point until a signal arrives.

    python tests/engine/setup_hold.py ENTRY POINT MARKER -- ARGS...

ENTRY is ``finetune`` or ``pretrain``; POINT is ``model`` (before the model is built) or ``engine`` (after the
DeepSpeed engine is built, before the first step). At the point the driver creates MARKER and sleeps (up to
120 s), so a test can signal the process inside set-up however fast or slow the machine is. POINT ``training``:
the process sends itself SIGTERM as soon as training has started (set-up over), and MARKER is not used.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def hold(marker: str) -> None:
    Path(marker).touch()
    time.sleep(120)


def main() -> int:
    entry, point, marker, sep, *argv = sys.argv[1:]
    assert sep == "--", sys.argv
    if entry == "finetune":
        import finetune.train as module

        model_builder = "initial_model"
    else:
        import pretrain.train as module

        model_builder = "build_model"
    if point == "training":
        import os
        import signal

        from deltalm.engine.preemption import PreemptionFlag

        original_started = PreemptionFlag.training_started

        def started_then_signalled(self):
            original_started(self)
            os.kill(os.getpid(), signal.SIGTERM)

        PreemptionFlag.training_started = started_then_signalled
    elif point == "model":
        original = getattr(module, model_builder)

        def held_builder(*args, **kwargs):
            hold(marker)
            return original(*args, **kwargs)

        setattr(module, model_builder, held_builder)
    else:
        from deltalm.engine.trainer import Trainer

        original_setup = Trainer.setup

        def held_setup(self):
            original_setup(self)
            hold(marker)

        Trainer.setup = held_setup
    return module.main(argv)


if __name__ == "__main__":
    sys.exit(main())
