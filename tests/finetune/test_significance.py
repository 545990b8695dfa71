"""finetune.significance: sacreBLEU's paired bootstrap, wrapped."""

from __future__ import annotations

import pytest

from finetune.significance import paired_bootstrap, significant

REFS = [f"the cat number {i} sat on the mat near door {i % 7}" for i in range(40)]


def test_a_clearly_better_system_is_significant_and_an_equal_one_is_not():
    good = list(REFS)
    bad = [f"a dog {i} stood" for i in range(40)]
    out = paired_bootstrap(REFS, ("good", good), [("bad", bad), ("same", list(good))], samples=200)
    assert out["good"]["bleu"] == 100.0 and out["good"]["p_value"] is None
    assert out["bad"]["bleu"] < 10.0
    assert significant(out["bad"]["p_value"])
    assert out["same"]["bleu"] == 100.0 and out["same"]["p_value"] is None
    assert not significant(out["same"]["p_value"])


def test_a_small_difference_on_few_sentences_is_not_significant():
    base = list(REFS)
    one_off = ["completely wrong output"] + base[1:]  # one sentence of 40 differs
    out = paired_bootstrap(REFS, ("base", base), [("one_off", one_off)], samples=200)
    assert out["one_off"]["bleu"] < out["base"]["bleu"]
    assert not significant(out["one_off"]["p_value"])


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="2 hypotheses but 40 references"):
        paired_bootstrap(REFS, ("base", list(REFS)), [("short", ["a", "b"])])
