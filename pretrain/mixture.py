"""Multilingual mixture sampling: temperature probabilities over token counts (p_l ∝ n_l^(1/T)).

``temperature_probabilities`` (defined in :mod:`deltalm.temperature`) is also what ``data_prep stats`` reports. :class:`StreamMixture` draws stream
indices for a whole global micro-batch from a numpy generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from deltalm.temperature import temperature_probabilities

__all__ = ["StreamMixture", "temperature_probabilities"]


@dataclass(frozen=True)
class StreamMixture:
    """Named streams with their probabilities; ``sample`` returns indices into ``names``."""

    names: tuple[str, ...]
    probabilities: tuple[float, ...]

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], temperature: float) -> StreamMixture:
        probs = temperature_probabilities(counts, temperature)
        names = tuple(sorted(n for n in probs if probs[n] > 0.0))
        return cls(names, tuple(probs[n] for n in names))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` stream indices drawn i.i.d. (inverse CDF over one uniform per draw)."""
        if len(self.names) == 1:
            return np.zeros(size, dtype=np.int64)
        cdf = np.cumsum(self.probabilities)
        cdf[-1] = 1.0
        return np.searchsorted(cdf, rng.random(size), side="right").astype(np.int64)

    def describe(self, counts: Mapping[str, int] | None = None) -> str:
        """One line per stream: name, probability, and (when given) its token count and natural share."""
        lines = []
        total = sum(counts.values()) if counts else 0
        for name, prob in sorted(zip(self.names, self.probabilities, strict=True), key=lambda x: -x[1]):
            if counts:
                lines.append(
                    f"{name:>12s} p={prob:.4f} tokens={counts[name]:,} natural={counts[name] / total:.4f}"
                )
            else:
                lines.append(f"{name:>12s} p={prob:.4f}")
        return "\n".join(lines)
