"""SIGTERM/SIGUSR1 (SLURM preemption, ``scancel``, a launcher passing on Ctrl-C): end the run promptly and cleanly.

Two phases, one handler:

- **set-up** (from the entry point's first line until the DeepSpeed engine exists and the first step starts):
  there is nothing to checkpoint, so the handler raises :class:`Preempted` at once; the entry point prints one
  line and exits with ``128 + signal number`` (143 for SIGTERM, 138 for SIGUSR1: what a shell reports for a
  process the signal killed). Nothing new is written; the next start resumes from the newest committed
  checkpoint, if any.
- **training**: the handler only sets a flag; the trainer all-reduces it with the step's token count, so every
  rank stops at the same optimizer step even when the signal reached only some of them, checkpoints, and the
  entry point exits 0.

Signal handlers are process-wide, so is the installed flag: an entry point installs it first thing
(:func:`install_for_setup`), and the :class:`~deltalm.engine.trainer.Trainer` built later uses the same one
(:meth:`PreemptionFlag.for_process`).
"""

from __future__ import annotations

import signal


class Preempted(BaseException):  # a requested stop, not an error: no `except Exception` swallows it
    """A stop signal arrived during set-up; ``exit_code`` is ``128 + signal number``."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + int(signum)
        super().__init__(
            f"{self.signal_name} during set-up: stopped before the first training step; nothing new was saved "
            f"(exit {self.exit_code})"
        )


_INSTALLED: PreemptionFlag | None = None


class PreemptionFlag:
    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self.stop_now = False  # set-up phase: raise Preempted from the handler
        self._previous: dict = {}

    @classmethod
    def for_process(cls) -> PreemptionFlag:
        """The flag an entry point installed (:func:`install_for_setup`), else a new, not yet installed one."""
        return _INSTALLED if _INSTALLED is not None else cls()

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self, *, stop_now: bool = False) -> PreemptionFlag:
        """Handle SIGTERM/SIGUSR1 from now on; ``stop_now``: raise :class:`Preempted` (the set-up phase)."""
        global _INSTALLED
        self.stop_now = stop_now
        if not self._previous:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        _INSTALLED = self
        return self

    def training_started(self) -> None:
        """The engine exists: from now on a signal is a request to checkpoint at the next step boundary."""
        self.stop_now = False

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if self.stop_now:
            self.stop_now = False  # a second signal while unwinding only sets the flag
            raise Preempted(signum)

    def uninstall(self) -> None:
        global _INSTALLED
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if _INSTALLED is self:
            _INSTALLED = None


def install_for_setup() -> PreemptionFlag:
    """What an entry point calls first: a signal from now until training starts ends the process at once."""
    return PreemptionFlag.for_process().install(stop_now=True)
