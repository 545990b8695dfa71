"""Dynamic temperature sampling over language pairs (the DeltaLM / WMT-10 multilingual MT recipe).

A pair with ``n_i`` examples is drawn with probability ``p_i ∝ (n_i / N) ** (1 / T)``. The temperature rises
linearly from ``start`` (1.0: proportional to data size) to ``end`` (5.0: much flatter, helping low-resource
pairs) over ``rise_steps`` optimizer steps, then stays at ``end``:
``T(step) = start + min(step / rise_steps, 1) · (end − start)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deltalm.temperature import temperature_probabilities as core_temperature_probabilities


@dataclass(frozen=True)
class TemperatureSchedule:
    start: float = 1.0
    end: float = 5.0
    rise_steps: int = 1

    def __post_init__(self) -> None:
        if self.start <= 0 or self.end <= 0:
            raise ValueError(f"temperatures must be > 0, got start={self.start} end={self.end}")
        if self.rise_steps < 1:
            raise ValueError(f"rise_steps must be >= 1, got {self.rise_steps}")

    def temperature(self, step: int) -> float:
        frac = min(max(step, 0) / self.rise_steps, 1.0)
        return self.start + frac * (self.end - self.start)

    def probabilities(self, sizes: Sequence[int], step: int) -> np.ndarray:
        """Sampling probabilities of the pairs with ``sizes`` examples at ``step``."""
        return temperature_probabilities(sizes, self.temperature(step))


def temperature_probabilities(sizes: Sequence[int], temperature: float) -> np.ndarray:
    """Probabilities of the pairs with ``sizes`` examples, in order (:mod:`deltalm.temperature` defines them)."""
    sizes = [int(n) for n in sizes]
    try:
        probs = core_temperature_probabilities(dict(enumerate(sizes)), temperature)
    except ValueError as exc:
        raise ValueError(f"sizes must be non-negative with a positive total, got {sizes} ({exc})") from None
    return np.array([probs[i] for i in range(len(sizes))], dtype=np.float64)
