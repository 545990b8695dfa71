"""A training entry point run under ``setup_hold.py`` (a real subprocess), signalled with SIGTERM while its
set-up is held (shared by the pre-training and fine-tuning preemption tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO, subprocess_environment

DRIVER = Path(__file__).resolve().parent / "setup_hold.py"


@dataclass(frozen=True)
class SignalledRun:
    returncode: int
    stderr: str
    seconds: float  # from the signal to the process's exit


def sigterm_during_setup(entry: str, point: str, marker: Path, argv: list[str], **env: str) -> SignalledRun:
    """Start ``setup_hold.py ENTRY POINT MARKER -- ARGV`` (``env`` on top of the one-process job environment),
    wait (up to 180 s) for the held set-up to create ``marker``, send SIGTERM and wait (up to 120 s) for the exit.
    Fails the test with the run's stderr if the marker never appears."""
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), entry, point, str(marker), "--", *argv],
        cwd=REPO,
        env={**subprocess_environment(), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()[1][-3000:]
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return SignalledRun(proc.returncode, err, time.perf_counter() - sent)
