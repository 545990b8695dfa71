"""SIGTERM/SIGUSR1 (SLURM preemption, ``scancel``): note the request; the trainer checkpoints and exits 0.

The handler only sets a flag; the trainer all-reduces it with the step's token count, so every rank stops at the
same optimizer step even when the signal reached only some of them.
"""

from __future__ import annotations

import signal


class PreemptionFlag:
    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous = {}

    def install(self) -> PreemptionFlag:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
