"""Test driver: ``python -m data_prep ARGS``, SIGKILLed right after its N-th shard file is renamed into place.

    python tests/data_prep/killing_run.py N data_prep-arguments...

The kill lands between the shard's rename and the manifest update that lists it: the window a resume must
handle. Test-only; the product has no such hook.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data_prep import shard_writer  # noqa: E402
from data_prep.cli import main  # noqa: E402


def kill_after_shards(limit: int) -> None:
    original = shard_writer.ShardWriter._write

    def write(self, rows_into_block: int):
        info = original(self, rows_into_block)
        if self._written >= limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return info

    shard_writer.ShardWriter._write = write


if __name__ == "__main__":
    kill_after_shards(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
