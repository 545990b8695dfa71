"""Is one system's BLEU really better than another's? sacreBLEU's paired bootstrap resampling.

:func:`paired_bootstrap` wraps ``sacrebleu.significance.PairedTest(test_type="bs")`` (Koehn 2004, as Moses'
``bootstrap-hypothesis-difference-significance.pl``): the test set is resampled with replacement
``samples`` times, both systems are scored on each resample from their sentence-level sufficient statistics,
and the p-value is the share of resamples whose (centred) score difference is at least the observed one.
Scores are corpus BLEU (13a, case-sensitive, detokenized), like :func:`finetune.metrics.bleu`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SIGNIFICANCE_LEVEL = 0.05


def paired_bootstrap(
    references: Sequence[str],
    baseline: tuple[str, Sequence[str]],
    systems: Sequence[tuple[str, Sequence[str]]],
    samples: int = 1000,
    tokenize: str = "13a",
) -> dict[str, dict]:
    """Each system against ``baseline`` (``(name, hypotheses)`` pairs, one hypothesis per reference).

    Returns ``{name: {"bleu", "mean", "ci95", "p_value"}}`` for the baseline (p-value None) and every
    system: BLEU on the whole set, the bootstrap mean and half-width of its 95 % interval, and sacreBLEU's
    p-value (seed 12345, ``SACREBLEU_SEED`` overrides). Two identical scores get p-value None: sacreBLEU would
    report 1/(samples+1), since every resampled difference is then 0. Raises ValueError on a length mismatch.
    """
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    for name, hyps in [baseline, *systems]:
        if len(hyps) != len(references):
            raise ValueError(f"{name}: {len(hyps)} hypotheses but {len(references)} references")
    named = [(baseline[0], list(baseline[1]))] + [(n, list(h)) for n, h in systems]
    test = PairedTest(
        named, {"BLEU": BLEU(tokenize=tokenize)}, [list(references)], test_type="bs", n_samples=samples
    )
    _signatures, scores = test()
    base_score = scores["BLEU"][0].score
    out = {}
    for index, (name, result) in enumerate(zip(scores["System"], scores["BLEU"], strict=True)):
        p = result.p_value
        if index == 0 or result.score == base_score or (isinstance(p, float) and math.isnan(p)):
            p = None
        out[name] = {
            "bleu": round(result.score, 2),
            "mean": round(result.mean, 2) if result.mean is not None else None,
            "ci95": round(result.ci, 2) if result.ci is not None else None,
            "p_value": None if p is None else round(p, 4),
        }
    return out


def significant(p_value: float | None, level: float = SIGNIFICANCE_LEVEL) -> bool:
    """True when the difference is significant at ``level`` (None, i.e. equal scores, never is)."""
    return p_value is not None and p_value < level
