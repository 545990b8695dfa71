"""Run one demo stage command: its whole output goes to the stage's log file, its progress lines to the console.

A long stage must never look hung. The commands print their own progress lines (the trainer's
``step N/M | loss ... | eta ...`` line at ``run.log_every`` and every ``logging.progress_every_s`` seconds, the
encoder's ``[encoder] step ...``, the evaluator's ``[evaluate] ...``, fine-tuning's validation lines); those are
echoed as ``[demo]   ...``. When a command has printed no progress line for ``quiet_s`` seconds, one
``[demo]   ... running, M:SS elapsed (log: PATH)`` line is printed instead.

SIGTERM/SIGINT reaching the demo are passed on to the running command as SIGTERM (it then ends cleanly: a training
run checkpoints, a run still in set-up stops) and the demo stops after it with :class:`StageInterrupted`.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

# lines worth showing on the console (matched against the command's own output lines)
PROGRESS = re.compile(
    r"^(step \d+/\d+ \||\[encoder\] |\[evaluate\] |\[engine\] (validation|resumed|SIG|logging)|"
    r"[a-z]{2,3}(-[a-z]{2,3})?: \d+ input|verify: |\| |error: |done: )"
)


class StageFailed(RuntimeError):
    """The command exited non-zero; the message names the log and quotes its last lines."""


class StageInterrupted(RuntimeError):
    """A stop signal reached the demo; the running command was told and has ended. ``exit_code`` is
    ``128 + signal number``, what the demo exits with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _pump(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def _start(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    )


def _follow(proc: subprocess.Popen, handle, log: Path, say, quiet_s: float, stop: dict) -> None:
    """Copy the command's lines to the log until it closes its output; echo progress lines, or a heartbeat."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    started = last_shown = time.monotonic()
    while True:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            line = ""
        if line is None:
            return
        now = time.monotonic()
        if line:
            handle.write(line)
            handle.flush()
            if PROGRESS.match(line) and not stop["signal"]:
                say(f"  {line.rstrip()}")
                last_shown = now
        if now - last_shown >= quiet_s and not stop["signal"]:
            say(f"  ... running, {_duration(now - started)} elapsed (log: {log})")
            last_shown = now


def run_stage_command(
    cmd: list[str],
    log: Path,
    *,
    cwd: Path,
    env: dict[str, str],
    say,
    quiet_s: float = 45.0,
    show_log: bool = True,
) -> None:
    """Run ``cmd``; append its output to ``log`` (named on the console when ``show_log``); echo its progress
    lines through ``say``.

    Raises :class:`StageFailed` on a non-zero exit and :class:`StageInterrupted` when SIGTERM/SIGINT arrived.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = " ".join(str(c) for c in cmd)
    stop = {"signal": 0}
    child: list[subprocess.Popen] = []

    def forward(signum, frame) -> None:
        stop["signal"] = signum
        if child and child[0].poll() is None:
            child[0].send_signal(signal.SIGTERM)  # the commands end cleanly on SIGTERM (Ctrl-C: SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        say(f"  $ {shown}")
        if show_log:
            say(f"  log: {log}")
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"$ {shown}\n")
            handle.flush()
            if not stop["signal"]:
                child.append(_start(cmd, cwd, env))
                _follow(child[0], handle, log, say, quiet_s, stop)
        code = child[0].wait() if child else 128 + stop["signal"]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child:
            child[0].stdout.close()
    if stop["signal"]:
        name = signal.Signals(stop["signal"]).name
        raise StageInterrupted(
            f"{name}: stopped; the stage's command ended with exit {code} (log: {log}); "
            "the next call starts this stage again",
            128 + stop["signal"],
        )
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise StageFailed(f"command failed (exit {code}); see {log}:\n  " + "\n  ".join(tail))


def child_environment(repo: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The demo's environment for a stage: the repository importable, unbuffered output, ``extra`` on top."""
    return {**os.environ, "PYTHONPATH": str(repo), "PYTHONUNBUFFERED": "1", **(extra or {})}
