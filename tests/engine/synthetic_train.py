"""Test driver: the engine's Trainer on a tiny DeltaLM and synthetic batches (any launcher, CPU).

    python tests/engine/synthetic_train.py --config C.yaml [--set key=value ...]

Fault injection for the tests (environment): DELTALM_TEST_KILL_AT_BATCH=N SIGKILLs this process when it
fetches its N-th micro-batch; DELTALM_TEST_KILL_IN_SAVE=S SIGKILLs it while checkpoint S is being committed
(DeepSpeed's files written, manifest not yet); DELTALM_TEST_HOLD_AT_BATCH=N:PATH blocks SIGTERM when it fetches
its N-th micro-batch, creates PATH and waits (up to 120 s) for a SIGTERM, then delivers it to the trainer's
handler, so a test can signal a run at a known step however fast the machine is.

Exit codes: 0 done (or stopped by a signal after its checkpoint), 2 bad config, 3 checkpoint error,
4 non-finite abort. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from deltalm.config_tree import ConfigError  # noqa: E402
from deltalm.engine.checkpoint import CheckpointError  # noqa: E402
from deltalm.engine.config import TrainingConfig, build_config  # noqa: E402
from deltalm.engine.distributed import discover, init_process_group, shutdown  # noqa: E402
from deltalm.engine.synthetic_batches import SyntheticBatches, SyntheticDataConfig  # noqa: E402
from deltalm.engine.trainer import NonfiniteAbort, Trainer  # noqa: E402


@dataclass
class SyntheticTrainConfig(TrainingConfig):
    data: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)


class KillingBatches(SyntheticBatches):
    def __init__(self, *args, kill_at: int, hold_at: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kill_at = kill_at
        self.hold_at, _, self.hold_marker = hold_at.partition(":")
        self.fetched = 0

    def next_batch(self):
        self.fetched += 1
        if self.fetched == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.hold_at and self.fetched == int(self.hold_at):
            self._hold_for_sigterm()
        return super().next_batch()

    def _hold_for_sigterm(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        Path(self.hold_marker).touch()
        received = signal.sigtimedwait({signal.SIGTERM}, 120)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        if received is not None:
            signal.raise_signal(signal.SIGTERM)  # through the trainer's own handler


def install_kill_in_save(step: int) -> None:
    import deltalm.engine.checkpoint as checkpoint

    original = checkpoint.write_json_atomic

    def write(path, obj):
        if Path(path).name == checkpoint.MANIFEST and obj.get("step") == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(path, obj)

    checkpoint.write_json_atomic = write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args(argv)
    try:
        config = build_config(SyntheticTrainConfig, {}, args.config, args.overrides)
        rank = discover()
        config.batch.accumulation(rank.world_size)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    init_process_group(rank, timeout_s=config.deepspeed.timeout_s)
    import torch

    from deltalm.model import DeltaLM

    torch.manual_seed(config.run.seed)
    model = DeltaLM(config.model)
    kill_at = int(os.environ.get("DELTALM_TEST_KILL_AT_BATCH", "0"))
    if os.environ.get("DELTALM_TEST_KILL_IN_SAVE"):
        install_kill_in_save(int(os.environ["DELTALM_TEST_KILL_IN_SAVE"]))
    batches = KillingBatches(
        config.data,
        config.model.vocab_size,
        micro_batch_size=config.batch.micro_batch_size,
        seed=config.run.seed,
        dp_rank=rank.rank,
        dp_world_size=rank.world_size,
        kill_at=kill_at,
        hold_at=os.environ.get("DELTALM_TEST_HOLD_AT_BATCH", ""),
    )
    try:
        result = Trainer(config, model, batches, rank).fit()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except NonfiniteAbort as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    finally:
        shutdown()
    if rank.is_main:
        print(f"done: step {result.step} ({result.stopped_by}), skipped {result.skipped_steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
