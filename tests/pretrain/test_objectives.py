"""Span corruption / translation span corruption: lengths, statistics, reconstruction, reference, golden."""

from __future__ import annotations

import numpy as np
import pytest

from pretrain.objectives import (
    corrupted_lengths,
    corruption_lengths,
    noise_counts,
    random_cuts,
    span_corruption,
    span_corruption_batch,
    translation_pair,
    translation_span_corruption,
)
from tests.pretrain.corpus import reconstruct

SENT = 1000  # first sentinel of these tests; token ids stay below it


def t5_reference(tokens, noise_cuts, nonnoise_cuts, noise_density, mean_span, first_sentinel, eos=2):
    """T5's random_spans_noise_mask + noise_span_to_unique_sentinel, one example, step by step.

    The shuffles of ``_random_segmentation`` are given as the chosen cut points (drawn elsewhere).
    """
    length = len(tokens)
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_span)), 1)
    num_nonnoise = length - num_noise

    def random_segmentation(num_items, cuts):
        first_in_segment = np.zeros(num_items - 1, dtype=np.int64)
        first_in_segment[cuts] = 1
        first_in_segment = np.pad(first_in_segment, [1, 0])
        segment_id = np.cumsum(first_in_segment)
        return np.bincount(segment_id)  # segment_sum(ones_like(segment_id), segment_id)

    noise_span_lengths = random_segmentation(num_noise, noise_cuts)
    nonnoise_span_lengths = random_segmentation(num_nonnoise, nonnoise_cuts)
    assert len(noise_span_lengths) == len(nonnoise_span_lengths) == num_spans
    interleaved = np.stack([nonnoise_span_lengths, noise_span_lengths], axis=1).reshape(num_spans * 2)
    span_starts = np.cumsum(interleaved)[:-1]
    span_start_indicator = np.bincount(span_starts, minlength=length)
    span_num = np.cumsum(span_start_indicator)
    is_noise = span_num % 2 == 1

    def noise_span_to_unique_sentinel(toks, noise_mask):
        prev_token_is_noise = np.pad(noise_mask[:-1], [1, 0])
        first_noise_tokens = noise_mask & ~prev_token_is_noise
        subsequent_noise_tokens = noise_mask & prev_token_is_noise
        sentinel = first_sentinel - 1 + np.cumsum(first_noise_tokens)  # ascending ids (ours), T5 counts down
        toks = np.where(first_noise_tokens, sentinel, toks)
        return toks[~subsequent_noise_tokens]

    inputs = np.append(noise_span_to_unique_sentinel(tokens, is_noise), eos)
    targets = np.append(noise_span_to_unique_sentinel(tokens, ~is_noise), eos)
    return inputs, targets


def test_corruption_lengths_t5_values():
    assert corruption_lengths(512, 0.15, 3.0) == (568, 114)
    assert corrupted_lengths(568, 0.15, 3.0) == (512, 114, 28)
    # Translation span corruption, same rule (T5's density-0.5 adjustment: targets never exceed inputs).
    assert corruption_lengths(512, 0.5, 3.0) == (766, 512)
    assert corruption_lengths(256, 0.5, 3.0) == (382, 256)
    assert corrupted_lengths(382, 0.5, 3.0) == (256, 256, 64)
    assert corruption_lengths(64, 0.15, 3.0) == (70, 14)  # 71 raw would give 65 inputs
    with pytest.raises(ValueError):
        corruption_lengths(2, 0.15, 3.0)


@pytest.mark.parametrize("input_length,density", [(512, 0.15), (64, 0.15), (256, 0.5), (100, 0.5)])
def test_exact_lengths_no_padding(input_length, density):
    raw, target_length = corruption_lengths(input_length, density, 3.0)
    tokens = np.random.default_rng(0).integers(4, SENT, (16, raw)).astype(np.int32)
    inputs, targets = span_corruption_batch(
        tokens, np.random.default_rng(1), density, 3.0, first_sentinel=SENT
    )
    assert inputs.shape == (16, input_length)
    assert targets.shape == (16, target_length)


def _spans_from_targets(targets: np.ndarray) -> list[int]:
    lengths, current = [], -1
    for t in targets[:-1]:
        if t >= SENT:
            if current >= 0:
                lengths.append(current)
            current = 0
        else:
            current += 1
    lengths.append(current)
    return lengths


@pytest.mark.parametrize("raw,density", [(568, 0.15), (382, 0.5)])
def test_statistics_over_10k_samples(raw, density):
    n = 10_000
    tokens = np.random.default_rng(3).integers(4, SENT, (n, raw)).astype(np.int32)
    inputs, targets = span_corruption_batch(
        tokens, np.random.default_rng(4), density, 3.0, first_sentinel=SENT
    )
    is_sentinel = targets[:, :-1] >= SENT
    noise_tokens = (~is_sentinel).sum()
    spans = is_sentinel.sum()
    assert abs(noise_tokens / (n * raw) - density) <= 0.005
    assert abs(noise_tokens / spans - 3.0) <= 0.1
    # The span lengths really are random (a segmentation, not fixed 3s), with T5's distribution mean.
    lengths = np.concatenate([_spans_from_targets(t) for t in targets[:500]])
    assert lengths.min() >= 1 and lengths.std() > 1.0
    assert abs(lengths.mean() - 3.0) <= 0.1
    for row in range(200):
        original = reconstruct(inputs[row], targets[row], SENT)
        assert np.array_equal(original, tokens[row])
    inputs_sent = inputs[:, :-1] >= SENT
    assert inputs_sent.sum() == spans  # one sentinel per noise span in the inputs


def test_reconstruct_and_sentinels_in_order():
    rng = np.random.default_rng(11)
    for length in (2, 3, 7, 50, 568, 1000):
        tokens = rng.integers(4, SENT, length).astype(np.int32)
        for density in (0.15, 0.5):
            inputs, targets = span_corruption(tokens, rng, density, 3.0, first_sentinel=SENT)
            assert np.array_equal(reconstruct(inputs, targets, SENT), tokens)
            _noise, spans = noise_counts(length, density, 3.0)
            assert inputs[inputs >= SENT].tolist() == list(range(SENT, SENT + spans))
            assert targets[targets >= SENT].tolist() == list(range(SENT, SENT + spans))
            assert targets[0] == SENT and inputs[-1] == 2 and targets[-1] == 2


def test_drop_sentinels_targets_are_the_noise_tokens():
    tokens = np.random.default_rng(5).integers(4, SENT, (8, 568)).astype(np.int32)
    with_s = span_corruption_batch(tokens, np.random.default_rng(9), 0.15, 3.0, first_sentinel=SENT)
    without = span_corruption_batch(
        tokens, np.random.default_rng(9), 0.15, 3.0, first_sentinel=SENT, drop_sentinels=True
    )
    assert np.array_equal(with_s[0], without[0])  # same inputs (with sentinels)
    assert without[1].shape == (8, 86)  # 85 noise tokens + EOS
    for a, b in zip(with_s[1], without[1], strict=True):
        assert np.array_equal(a[a < SENT], b)


def test_vectorized_equals_t5_reference():
    for length, density, batch in ((568, 0.15, 32), (382, 0.5, 16), (23, 0.15, 40), (9, 0.5, 40)):
        tokens = np.random.default_rng(length).integers(4, SENT, (batch, length)).astype(np.int32)
        inputs, targets = span_corruption_batch(
            tokens, np.random.default_rng(42), density, 3.0, first_sentinel=SENT
        )
        num_noise, num_spans = noise_counts(length, density, 3.0)
        draw = np.random.default_rng(42)  # same draws, same order: noise cuts, then non-noise cuts
        noise_cuts = random_cuts(draw, batch, num_noise, num_spans)
        nonnoise_cuts = random_cuts(draw, batch, length - num_noise, num_spans)
        for row in range(batch):
            ref_in, ref_tgt = t5_reference(
                tokens[row], noise_cuts[row], nonnoise_cuts[row], density, 3.0, SENT
            )
            assert np.array_equal(inputs[row], ref_in)
            assert np.array_equal(targets[row], ref_tgt)


def test_golden_output():
    tokens = np.arange(100, 220, dtype=np.int32).reshape(3, 40)
    inputs, targets = span_corruption_batch(
        tokens, np.random.default_rng(1234), 0.15, 3.0, first_sentinel=SENT
    )
    assert inputs.tolist() == [
        list(range(100, 129)) + [1000, 134, 135, 136, 137, 138, 1001, 2],
        list(range(140, 149)) + [1000] + list(range(151, 176)) + [1001, 2],
        list(range(180, 195)) + [1000] + list(range(197, 216)) + [1001, 2],
    ]
    assert targets.tolist() == [
        [1000, 129, 130, 131, 132, 133, 1001, 139, 2],
        [1000, 149, 150, 1001, 176, 177, 178, 179, 2],
        [1000, 195, 196, 1001, 216, 217, 218, 219, 2],
    ]
    inputs, targets = span_corruption(
        np.arange(10, 40, dtype=np.int32), np.random.default_rng(7), 0.5, 3.0, 500
    )
    assert inputs.tolist() == [
        10,
        11,
        12,
        500,
        21,
        22,
        501,
        24,
        25,
        26,
        27,
        28,
        502,
        31,
        32,
        503,
        36,
        37,
        38,
        504,
        2,
    ]
    assert targets.tolist() == [
        500, 13, 14, 15, 16, 17, 18, 19, 20, 501, 23, 502, 29, 30, 503, 33, 34, 35, 504, 39, 2,
    ]  # fmt: skip


def test_random_cuts_uniform():
    n_items, segments, rows = 20, 5, 40_000
    cuts = random_cuts(np.random.default_rng(0), rows, n_items, segments)
    assert cuts.shape == (rows, 4)
    assert (np.diff(cuts, axis=1) > 0).all() and cuts.min() >= 0 and cuts.max() <= n_items - 2
    freq = np.bincount(cuts.ravel(), minlength=n_items - 1) / rows
    assert np.abs(freq - 4 / 19).max() < 0.01  # every gap equally likely
    # Pairs too: P(cut at 0 and cut at 1) = C(17,2)/C(19,4)
    both = ((cuts == 0).any(1) & (cuts == 1).any(1)).mean()
    assert abs(both - 136 / 3876) < 0.005
    assert random_cuts(np.random.default_rng(0), 3, 10, 1).shape == (3, 0)


def test_translation_pair_and_errors():
    src, tgt = np.array([5, 6, 7], dtype=np.int32), np.array([8, 9], dtype=np.int32)
    assert translation_pair(src, tgt).tolist() == [5, 6, 7, 2, 8, 9]
    inputs, targets = translation_span_corruption(
        src, tgt, np.random.default_rng(0), 0.5, 3.0, first_sentinel=SENT
    )
    assert np.array_equal(reconstruct(inputs, targets, SENT), [5, 6, 7, 2, 8, 9])
    assert (targets < SENT).sum() - 1 == 3  # noise 0.5 of 6 tokens (+ EOS)
    with pytest.raises(ValueError, match="sentinels"):
        span_corruption(np.arange(4, 770), np.random.default_rng(0), 0.5, 3.0, SENT, num_sentinels=100)
    with pytest.raises(ValueError, match="at least 2"):
        span_corruption(np.array([5]), np.random.default_rng(0), 0.15, 3.0, first_sentinel=SENT)
    with pytest.raises(ValueError, match="first_sentinel"):
        span_corruption(np.arange(4, 20), np.random.default_rng(0), 0.15, 3.0, first_sentinel=0)
