"""Temperature sampling probabilities and the stream mixture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pretrain.mixture import StreamMixture, temperature_probabilities


def test_temperature_one_is_proportional():
    probs = temperature_probabilities({"en": 300, "de": 100}, 1.0)
    assert probs == pytest.approx({"en": 0.75, "de": 0.25})


def test_temperature_flattens():
    probs = temperature_probabilities({"en": 10_000, "sw": 100}, 2.0)
    assert probs["en"] == pytest.approx(100 / 110) and probs["sw"] == pytest.approx(10 / 110)
    # mT5-style alpha 0.3 (T = 1/0.3) on three languages: p ∝ n^0.3
    counts = {"a": 1_000_000, "b": 10_000, "c": 100}
    probs = temperature_probabilities(counts, 1 / 0.3)
    w = {k: v**0.3 for k, v in counts.items()}
    assert probs == pytest.approx({k: v / sum(w.values()) for k, v in w.items()})
    assert sum(probs.values()) == pytest.approx(1.0)
    uniform = temperature_probabilities(counts, 1e6)
    assert max(uniform.values()) - min(uniform.values()) < 1e-4


def test_huge_counts_and_zeros():
    probs = temperature_probabilities({"en": 10**15, "de": 10**14, "xx": 0}, 5.0)
    assert probs["xx"] == 0.0
    assert probs["de"] / probs["en"] == pytest.approx(0.1**0.2)
    for bad in ({}, {"a": 0}, {"a": -1}):
        with pytest.raises(ValueError):
            temperature_probabilities(bad, 1.0)
    for t in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            temperature_probabilities({"a": 1}, t)


def test_mixture_sampling_frequencies():
    mix = StreamMixture.from_counts({"de": 900, "fr": 100, "zz": 0}, 1.0)
    assert mix.names == ("de", "fr")  # zero-count streams are never sampled
    draws = mix.sample(np.random.default_rng(0), 100_000)
    freq = np.bincount(draws, minlength=2) / len(draws)
    assert abs(freq[0] - 0.9) < 0.005
    assert "de" in mix.describe({"de": 900, "fr": 100}) and "p=0.9000" in mix.describe()
    single = StreamMixture.from_counts({"de": 5}, 3.0)
    assert single.sample(np.random.default_rng(0), 4).tolist() == [0, 0, 0, 0]
