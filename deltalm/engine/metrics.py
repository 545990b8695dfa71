"""Run metrics: ``metrics.jsonl`` (one JSON object per optimizer step), TensorBoard scalars, the rank-0 progress line.

Only rank 0 writes. ``metrics.jsonl`` is appended and flushed every step. :meth:`MetricsLogger.begin` makes
both logs read like one uninterrupted run: resuming from step S drops the ``metrics.jsonl`` lines of steps
after S and opens TensorBoard with ``purge_step=S+1`` (TensorBoard discards the older events of steps > S);
starting at step 0 in a run directory that has logs (a run killed before its first checkpoint) removes
``metrics.jsonl`` and the old TensorBoard event files first.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from deltalm.text_lines import split_lines

METRICS_FILE = "metrics.jsonl"


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable
    return value


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class MetricsLogger:
    def __init__(self, run_dir: str | Path, *, enabled: bool, tensorboard: bool, max_steps: int) -> None:
        self.enabled = enabled
        self.max_steps = max_steps
        self.path = Path(run_dir) / METRICS_FILE
        self._file = None
        self._writer = None
        self._started = time.perf_counter()
        self._first_step: int | None = None
        self._last_print = self._started  # the time cadence counts from the start, not from step 1
        self._tensorboard = tensorboard
        self._run_dir = Path(run_dir)

    def begin(self, step: int) -> None:
        """Start logging after ``step`` (0: a fresh run, earlier logs in the run directory are removed)."""
        if not self.enabled:
            return
        self._run_dir.mkdir(parents=True, exist_ok=True)
        events = self._run_dir / "tensorboard"
        if step == 0:
            self.path.unlink(missing_ok=True)
            if events.is_dir():
                for old in events.glob("events.out.tfevents.*"):
                    old.unlink()
        else:
            self.truncate_after(step)
        if self._tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(events), purge_step=step + 1 if step else None)
            except ImportError:
                print("[metrics] tensorboard is not installed: TensorBoard logging off", file=sys.stderr)

    @property
    def tensorboard_dir(self) -> Path | None:
        """Where the TensorBoard events go (None when TensorBoard logging is off)."""
        return Path(self._writer.log_dir) if self._writer is not None else None

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps > ``step`` (written after the checkpoint we resume from)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in split_lines(self.path.read_text(encoding="utf-8")):
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                break  # a torn last line from a kill: everything after it is dropped too
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        tmp.replace(self.path)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run
        self._file.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._file.flush()
        if self._writer is not None:
            step = record["step"]
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"train/{key}", value, step)

    def progress(self, record: dict, *, force: bool = False, every_s: float = 0.0) -> None:
        """One line on stdout: step, loss, lr, tokens/s, MFU, ETA."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and not (every_s and now - self._last_print >= every_s):
            return
        self._last_print = now
        step = record["step"]
        if self._first_step is None:
            self._first_step, self._started = step, now
        done = step - self._first_step
        eta = (now - self._started) / done * (self.max_steps - step) if done > 0 else float("nan")
        mfu = record.get("mfu")
        parts = [
            f"step {step}/{self.max_steps}",
            f"loss {record['loss']:.4f}",
            f"lr {record['lr']:.3e}",
            f"tok/s {record['tokens_per_s']:.0f}",
            f"mfu {mfu * 100:.1f}%" if mfu is not None else "mfu n/a",
            f"eta {format_duration(eta) if math.isfinite(eta) else '?'}",
        ]
        if record.get("overflow"):
            parts.append(f"skipped (fp16 overflow, loss scale {record.get('loss_scale')})")
        elif record.get("skipped"):
            parts.append("SKIPPED (non-finite)")
        print(" | ".join(parts), flush=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
