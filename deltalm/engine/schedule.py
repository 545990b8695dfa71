"""Learning-rate schedules as pure functions of the optimizer step (no state: the trainer's step is the state).

- ``linear``: linear warm-up from 0 to the peak over ``warmup_steps``, then linear decay to 0 at ``total_steps``
  (the paper: 10,000 warm-up steps, 0 at 600,000).
- ``inverse_sqrt``: linear warm-up, then ``peak * sqrt(warmup / step)`` (fairseq's fine-tuning schedule).
- ``constant``: linear warm-up, then the peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deltalm.engine.config import ScheduleConfig


@dataclass(frozen=True)
class LRSchedule:
    kind: str
    peak_lr: float
    warmup_steps: int
    total_steps: int

    @classmethod
    def from_config(cls, config: ScheduleConfig, peak_lr: float, max_steps: int) -> LRSchedule:
        return cls(config.kind, peak_lr, config.warmup_steps, config.total_steps or max_steps)

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (1-based: the first update uses lr_at(1))."""
        if step < 1:
            return 0.0
        if self.warmup_steps and step <= self.warmup_steps:
            return self.peak_lr * step / self.warmup_steps
        if self.kind == "linear":
            remaining = max(self.total_steps - step, 0)
            return self.peak_lr * remaining / max(self.total_steps - self.warmup_steps, 1)
        if self.kind == "inverse_sqrt":
            return self.peak_lr * math.sqrt(max(self.warmup_steps, 1) / step)
        return self.peak_lr
