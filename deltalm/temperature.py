"""Temperature sampling over corpus sizes, p_l ∝ n_l^(1/T): one definition for every stage.

Used by the pre-training mixture (``pretrain/mixture.py``), ``data_prep stats`` and the fine-tuning
language-pair sampler (``finetune/temperature_schedule.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def temperature_probabilities(counts: Mapping[str, int], temperature: float) -> dict[str, float]:
    """Sampling probabilities p_l = n_l^(1/T) / Σ n_k^(1/T) (T=1: proportional, T→∞: uniform).

    Names with a zero count get probability 0; at least one count must be positive.
    """
    if not temperature > 0.0 or math.isinf(temperature) or math.isnan(temperature):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    if not counts:
        raise ValueError("no counts to build a mixture from")
    for name, count in counts.items():
        if count < 0:
            raise ValueError(f"negative token count for {name!r}: {count}")
    total = max(counts.values())
    if total <= 0:
        raise ValueError("every count is zero; nothing to sample")
    # Scale by the largest count first so n^(1/T) cannot overflow for huge corpora.
    weights = {
        name: (count / total) ** (1.0 / temperature) if count > 0 else 0.0 for name, count in counts.items()
    }
    norm = sum(weights.values())
    return {name: w / norm for name, w in weights.items()}
