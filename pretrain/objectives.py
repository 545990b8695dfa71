"""Pre-training objectives as pure numpy functions of (tokens, rng): T5 span corruption and mT6 translation
span corruption (the same corruption on ``src </s> tgt``).

The noise mask follows T5's ``random_spans_noise_mask``: ``round(n * density)`` noise tokens (at least 1,
at most n - 1) in ``round(noise / mean_span)`` spans (at least 1); the noise and the non-noise tokens are each
split into that many non-empty spans by a uniformly random segmentation (cut points = a random subset of
the gaps), the spans interleave starting with non-noise. Inputs keep the non-noise tokens with one sentinel
per noise span, then EOS; targets are sentinel + noise span for every span, then EOS (T5's
``noise_span_to_unique_sentinel`` on the inverted mask). Sentinel k is ``first_sentinel + k``.

Randomness: a batch draws the noise segmentations of all rows (:func:`random_cuts`), then the non-noise
ones. A per-example reference (tests) following T5's code step by step reproduces the vectorized output
from the same cut points.
"""

from __future__ import annotations

import numpy as np

from deltalm.vocabulary import EOS_ID as EOS


def noise_counts(length: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    """``(num_noise_tokens, num_noise_spans)`` of a sequence of ``length`` tokens (T5's rounding)."""
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 tokens, got {length}")
    num_noise = int(round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(round(num_noise / mean_span)), 1)
    num_spans = min(num_spans, num_noise, length - num_noise)
    return num_noise, num_spans


def _lengths_for(tokens_length: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    num_noise = int(round(tokens_length * noise_density))
    num_spans = int(round(num_noise / mean_span))
    return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def corruption_lengths(input_length: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    """``(raw_length, target_length)`` such that ``raw_length`` tokens corrupt to ``input_length`` inputs.

    T5's ``compute_input_and_target_lengths``: the largest raw length whose inputs (non-noise tokens,
    one sentinel per noise span, EOS) fit ``input_length``; for density 0.5 the raw length is decreased by
    one when the targets would exceed the inputs. 512 at 0.15/3 → (568, 114).
    """
    if input_length < 3:
        raise ValueError(f"input_length must be >= 3, got {input_length}")
    if not 0.0 < noise_density < 1.0 or mean_span < 1.0:
        raise ValueError(f"bad noise_density {noise_density} / mean_span {mean_span}")
    tokens_length = input_length - 1
    while _lengths_for(tokens_length + 1, noise_density, mean_span)[0] <= input_length:
        tokens_length += 1
    _inputs, targets_length = _lengths_for(tokens_length, noise_density, mean_span)
    if noise_density == 0.5 and targets_length > input_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def corrupted_lengths(raw_length: int, noise_density: float, mean_span: float) -> tuple[int, int, int]:
    """``(input_length, target_length, num_spans)`` that :func:`span_corruption_batch` produces from rows
    of ``raw_length`` tokens (targets without sentinels are ``num_spans`` shorter)."""
    num_noise, num_spans = noise_counts(raw_length, noise_density, mean_span)
    return raw_length - num_noise + num_spans + 1, num_noise + num_spans + 1, num_spans


def random_cuts(rng: np.random.Generator, batch: int, num_items: int, num_segments: int) -> np.ndarray:
    """Sorted cut points [batch, num_segments - 1] of a uniformly random segmentation of ``num_items``.

    A cut j (0 <= j < num_items - 1) ends a segment after item j. Per row, the cuts are the positions of
    the ``num_segments - 1`` smallest random keys (a uniform subset, as T5's shuffle); a row whose
    boundary keys tie is drawn again, so the subset is exactly uniform.
    """
    gaps, picks = num_items - 1, num_segments - 1
    if picks == 0:
        return np.zeros((batch, 0), dtype=np.int64)
    pos_bits = max(1, (gaps - 1).bit_length())
    if pos_bits > 24:
        raise ValueError(f"span corruption of {num_items} items per span type is not supported")
    positions = np.arange(gaps, dtype=np.int32)
    cuts = np.empty((batch, picks), dtype=np.int64)
    todo = np.arange(batch)
    while len(todo):
        words = rng.bit_generator.random_raw((len(todo) * gaps + 1) // 2).view(np.uint32)
        keys = (words[: len(todo) * gaps].reshape(len(todo), gaps) >> np.uint32(1 + pos_bits)).astype(
            np.int32
        )
        keys = np.sort((keys << pos_bits) | positions, axis=1)
        tied = (keys[:, picks - 1] >> pos_bits) == (keys[:, picks] >> pos_bits) if picks < gaps else None
        ok = ~tied if tied is not None else np.ones(len(todo), dtype=bool)
        cuts[todo[ok]] = np.sort(keys[ok, :picks] & ((1 << pos_bits) - 1), axis=1)
        todo = todo[~ok]
    return cuts


def segment_lengths(cuts: np.ndarray, num_items: int) -> np.ndarray:
    """Segment lengths [batch, cuts + 1] of ``num_items`` items cut after the (sorted) ``cuts``."""
    batch = cuts.shape[0]
    ends = np.empty((batch, cuts.shape[1] + 1), dtype=np.int64)
    ends[:, :-1] = cuts + 1
    ends[:, -1] = num_items
    lengths = ends.copy()
    lengths[:, 1:] -= ends[:, :-1]
    return lengths


def span_lengths_batch(
    batch: int, length: int, rng: np.random.Generator, noise_density: float, mean_span: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(nonnoise_lengths, noise_lengths)``, each [batch, spans]: the spans of T5's noise mask, which
    alternate non-noise 0, noise 0, non-noise 1, noise 1, … (the noise segmentation is drawn first)."""
    num_noise, num_spans = noise_counts(length, noise_density, mean_span)
    noise_lengths = segment_lengths(random_cuts(rng, batch, num_noise, num_spans), num_noise)
    nonnoise_lengths = segment_lengths(
        random_cuts(rng, batch, length - num_noise, num_spans), length - num_noise
    )
    return nonnoise_lengths, noise_lengths


def noise_mask_batch(
    batch: int, length: int, rng: np.random.Generator, noise_density: float, mean_span: float
) -> np.ndarray:
    """Boolean noise mask [batch, length] (T5 ``random_spans_noise_mask``, vectorized over rows)."""
    nonnoise_lengths, noise_lengths = span_lengths_batch(batch, length, rng, noise_density, mean_span)
    num_spans = noise_lengths.shape[1]
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=2).reshape(batch, 2 * num_spans)
    starts = np.cumsum(interleaved, axis=1)[:, :-1]
    indicator = np.zeros((batch, length), dtype=np.int8)
    np.put_along_axis(indicator, starts, 1, axis=1)
    return (np.cumsum(indicator, axis=1, dtype=np.int32) & 1).astype(bool)


def span_corruption_batch(
    tokens: np.ndarray,
    rng: np.random.Generator,
    noise_density: float,
    mean_span: float,
    first_sentinel: int,
    eos: int = EOS,
    drop_sentinels: bool = False,
    num_sentinels: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Span-corrupt every row of ``tokens`` [B, raw]: ``(inputs [B, in_len], targets [B, tgt_len])``.

    Every row gets the same number of noise tokens and spans, so the outputs need no padding. With
    ``drop_sentinels`` the targets are the noise tokens alone (+ EOS). ``num_sentinels`` (optional) refuses
    a length that needs more spans than the vocabulary has sentinels.
    """
    tokens = np.ascontiguousarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}")
    if first_sentinel <= 0:
        raise ValueError(
            f"first_sentinel must be a sentinel id (Vocabulary.first_sentinel), got {first_sentinel}"
        )
    batch, length = tokens.shape
    num_noise, num_spans = noise_counts(length, noise_density, mean_span)
    if num_sentinels is not None and num_spans > num_sentinels:
        raise ValueError(
            f"{length} tokens at noise {noise_density}/span {mean_span} need {num_spans} sentinels, "
            f"the vocabulary has {num_sentinels}"
        )
    nonnoise_len, noise_len = span_lengths_batch(batch, length, rng, noise_density, mean_span)
    nonnoise_end = np.cumsum(nonnoise_len, axis=1)  # inclusive sums over the non-noise spans
    noise_before = np.cumsum(noise_len, axis=1) - noise_len  # exclusive sums over the noise spans
    rows = np.arange(batch)[:, None]
    row_base = np.arange(0, batch * length, length, dtype=np.int32)  # flat index of each row's first token
    flat = tokens.reshape(-1)
    span_ids = np.arange(num_spans)
    sentinel_ids = np.broadcast_to(
        np.arange(first_sentinel, first_sentinel + num_spans, dtype=tokens.dtype), (batch, num_spans)
    )

    # Source positions (flat, so one gather per output) are a running sum of steps: +1 inside a span, a jump over the skipped span.
    # Inputs: non-noise span j, then sentinel j (at nonnoise_end[j] + j), for every j; then EOS.
    inputs = np.empty((batch, length - num_noise + num_spans + 1), dtype=tokens.dtype)
    step = np.ones((batch, inputs.shape[1] - 1), dtype=np.int32)
    step[:, 0] = row_base
    sentinel_pos = nonnoise_end + span_ids
    step[rows, sentinel_pos[:, :-1] + 1] = noise_len[:, :-1]
    body = flat[np.cumsum(step, axis=1, dtype=np.int32)]
    np.put_along_axis(body, sentinel_pos, sentinel_ids, axis=1)
    inputs[:, :-1] = body
    inputs[:, -1] = eos

    if drop_sentinels:
        # Targets: the noise tokens in order; noise span j starts at position noise_before[j].
        targets = np.empty((batch, num_noise + 1), dtype=tokens.dtype)
        step = np.ones((batch, num_noise), dtype=np.int32)
        step[rows, noise_before] = nonnoise_len + 1
        step[:, 0] = nonnoise_len[:, 0] + row_base
        targets[:, :-1] = flat[np.cumsum(step, axis=1, dtype=np.int32)]
    else:
        # Targets: sentinel j (at noise_before[j] + j), then noise span j, for every j; then EOS.
        targets = np.empty((batch, num_noise + num_spans + 1), dtype=tokens.dtype)
        step = np.ones((batch, targets.shape[1] - 1), dtype=np.int32)
        sentinel_pos = noise_before + span_ids
        step[rows, sentinel_pos] = nonnoise_len
        step[:, 0] = nonnoise_len[:, 0] - 1 + row_base
        body = flat[np.cumsum(step, axis=1, dtype=np.int32)]
        np.put_along_axis(body, sentinel_pos, sentinel_ids, axis=1)
        targets[:, :-1] = body
    targets[:, -1] = eos
    return inputs, targets


def span_corruption(
    tokens: np.ndarray,
    rng: np.random.Generator,
    noise_density: float,
    mean_span: float,
    first_sentinel: int,
    eos: int = EOS,
    drop_sentinels: bool = False,
    num_sentinels: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Span-corrupt one 1-D token array: ``(inputs, targets)`` (see :func:`span_corruption_batch`)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    inputs, targets = span_corruption_batch(
        tokens[None, :], rng, noise_density, mean_span, first_sentinel, eos, drop_sentinels, num_sentinels
    )
    return inputs[0], targets[0]


def translation_pair(src: np.ndarray, tgt: np.ndarray, eos: int = EOS) -> np.ndarray:
    """``src </s> tgt``: the text that translation span corruption corrupts (one parallel pair)."""
    src = np.asarray(src)
    out = np.empty(len(src) + 1 + len(tgt), dtype=src.dtype if len(src) else np.asarray(tgt).dtype)
    out[: len(src)] = src
    out[len(src)] = eos
    out[len(src) + 1 :] = tgt
    return out


def translation_span_corruption(
    src: np.ndarray,
    tgt: np.ndarray,
    rng: np.random.Generator,
    noise_density: float,
    mean_span: float,
    first_sentinel: int,
    eos: int = EOS,
    drop_sentinels: bool = False,
    num_sentinels: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """mT6 translation span corruption of one pair: span corruption of ``src </s> tgt`` at noise 0.5.

    The loader packs many pairs (``src </s> tgt </s>`` each) into fixed windows instead; this is the
    single-pair form for fine-tuning mixes and checks.
    """
    return span_corruption(
        translation_pair(src, tgt, eos),
        rng,
        noise_density,
        mean_span,
        first_sentinel,
        eos,
        drop_sentinels,
        num_sentinels,
    )
