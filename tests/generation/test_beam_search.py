"""Beam search on a toy model: exhaustive = brute force, batched = one by one, constraints, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from deltalm.generation import beam_search, greedy_search
from tests.generation.toy_model import EOS, PAD, ToyModel, brute_force


def _pad_batch(sources: list[list[int]]) -> torch.Tensor:
    width = max(len(s) for s in sources)
    return torch.tensor([s + [PAD] * (width - len(s)) for s in sources])


# 4 choosable non-EOS tokens (0, 3, 4, 5) and max length 3: at most 16 live prefixes x 5 tokens = 80 candidates,
# so a beam of 100 holds every candidate and the search is exhaustive.
EXHAUSTIVE = dict(beam_size=100, max_len_b=3, stop_early=False)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0, -0.5])
def test_exhaustive_beam_equals_brute_force(seed: int, length_penalty: float) -> None:
    model = ToyModel(seed=seed, eos_bias=0.5)
    source = [3, 4, 5, EOS]
    hyps = beam_search(model, torch.tensor([source]), length_penalty=length_penalty, **EXHAUSTIVE)[0]
    expected = brute_force(model, source, max_len=3, length_penalty=length_penalty)
    assert len(expected) == 4 + 16 + 64  # min_len=1: no empty output
    assert len(hyps) == len(expected)
    assert [h.tokens for h in hyps] == [tokens for tokens, _ in expected]
    assert [h.score for h in hyps] == pytest.approx([score for _, score in expected], abs=1e-5)
    best = hyps[0]
    assert best.score == pytest.approx(best.log_prob / (len(best.tokens) + 1) ** length_penalty, abs=1e-5)


def test_exhaustive_beam_with_constraints_equals_brute_force() -> None:
    model = ToyModel(seed=7, eos_bias=1.0)
    source = [4, 4, 3, EOS]
    rules = dict(min_len=2, no_repeat_ngram_size=2, forced_first_token=3, length_penalty=1.0)
    hyps = beam_search(model, torch.tensor([source]), **EXHAUSTIVE, **rules)[0]
    expected = brute_force(model, source, max_len=3, **rules)
    assert [h.tokens for h in hyps] == [tokens for tokens, _ in expected]
    assert [h.score for h in hyps] == pytest.approx([score for _, score in expected], abs=1e-5)


def test_small_beam_scores_are_exact_and_bounded_by_optimum() -> None:
    # a narrow beam may miss the optimum, but every hypothesis it returns must carry its true score
    for seed in range(4):
        model = ToyModel(vocab=10, padded_vocab=16, seed=seed, scale=4.0, eos_bias=1.0)
        source = [5, 6, 7, EOS]
        hyps = beam_search(model, torch.tensor([source]), beam_size=3, max_len_b=4)[0]
        truth = {tuple(tokens): score for tokens, score in brute_force(model, source, max_len=4)}
        assert len(hyps) == 3
        for hyp in hyps:
            assert hyp.score == pytest.approx(truth[tuple(hyp.tokens)], abs=1e-5)
            assert hyp.score <= max(truth.values()) + 1e-6


def test_batched_equals_one_by_one() -> None:
    model = ToyModel(vocab=20, padded_vocab=24, seed=3, scale=3.0)
    sources = [[5, 6, 7, 8, 9, EOS], [10, EOS], [11, 12, 13, EOS], [4, 4, 4, 4, 4, 4, 4, EOS]]
    options = dict(beam_size=4, max_len_a=1.0, max_len_b=2, length_penalty=1.0, no_repeat_ngram_size=3)
    batched = beam_search(model, _pad_batch(sources), **options)
    for source, hyps in zip(sources, batched, strict=True):
        single = beam_search(model, torch.tensor([source]), **options)[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in single]
        assert [h.score for h in hyps] == pytest.approx([h.score for h in single], abs=1e-6)
        assert 1 <= len(hyps) <= 4
        assert all(a.score >= b.score for a, b in zip(hyps, hyps[1:], strict=False))


def test_encoder_runs_once_and_steps_are_bounded() -> None:
    model = ToyModel(vocab=20, padded_vocab=24, seed=4, eos_bias=-50.0)  # never wants to end
    beam_search(model, _pad_batch([[5, 6, EOS], [7, EOS]]), beam_size=3, max_len_b=7)
    assert model.encode_calls == 1
    assert model.decode_calls == 8  # steps 0..7, the last forcing EOS


def test_max_length_a_x_plus_b_per_sentence() -> None:
    model = ToyModel(vocab=20, padded_vocab=24, seed=5, eos_bias=-50.0)
    sources = [[5, 6, 7, 8, EOS], [9, EOS]]
    results = beam_search(model, _pad_batch(sources), beam_size=3, max_len_a=1.5, max_len_b=1)
    for source, hyps in zip(sources, results, strict=True):
        limit = int(1.5 * len(source) + 1)
        assert hyps and all(len(h.tokens) == limit for h in hyps)


def test_length_cap_from_model_positions() -> None:
    model = ToyModel(vocab=20, padded_vocab=24, seed=5, eos_bias=-50.0, max_source_length=6)
    hyps = beam_search(model, torch.tensor([[5, EOS]]), beam_size=2, max_len_b=100)[0]
    assert all(len(h.tokens) == 5 for h in hyps)


def test_min_length_honoured() -> None:
    model = ToyModel(vocab=20, padded_vocab=24, seed=6, eos_bias=8.0)  # wants to end at once
    free = beam_search(model, torch.tensor([[5, 6, EOS]]), beam_size=3, min_len=0, max_len_b=10)[0]
    assert free[0].tokens == []
    hyps = beam_search(model, torch.tensor([[5, 6, EOS]]), beam_size=3, min_len=4, max_len_b=10)[0]
    assert hyps and all(len(h.tokens) >= 4 for h in hyps)
    assert len(hyps[0].tokens) == 4


def test_no_repeat_ngram_blocks_repeats() -> None:
    model = ToyModel(vocab=12, padded_vocab=16, seed=8, scale=1.0, eos_bias=-50.0)
    model.bias[7] = 6.0  # token 7 dominates every step
    src = torch.tensor([[5, 6, EOS]])
    plain = greedy_search(model, src, max_len_b=8)[0]
    assert plain.tokens.count(7) >= 3
    for n in (1, 2, 3):
        for hyp in beam_search(model, src, beam_size=3, max_len_b=8, no_repeat_ngram_size=n)[0]:
            grams = [tuple(hyp.tokens[i : i + n]) for i in range(len(hyp.tokens) - n + 1)]
            assert len(grams) == len(set(grams)), (n, hyp.tokens)


def test_forced_first_token_int_and_per_sentence() -> None:
    model = ToyModel(vocab=20, padded_vocab=24, seed=9)
    src = _pad_batch([[5, 6, EOS], [7, EOS], [8, 9, 10, EOS]])
    for hyps in beam_search(model, src, beam_size=3, forced_first_token=17, max_len_b=5):
        assert hyps and all(h.tokens[0] == 17 for h in hyps)
    tags = torch.tensor([15, 16, 17])
    results = beam_search(model, src, beam_size=3, forced_first_token=tags, max_len_b=5)
    for tag, hyps in zip(tags.tolist(), results, strict=True):
        assert hyps and all(h.tokens[0] == tag for h in hyps)


def test_greedy_is_argmax_and_beam_one() -> None:
    model = ToyModel(vocab=20, padded_vocab=24, seed=10, scale=3.0)
    src = torch.tensor([[5, 6, 7, EOS]])
    state = model.start_decoding(model.encode(src), src.ne(PAD))
    last, expected = EOS, []
    with torch.no_grad():
        for step in range(12):
            logits, state = model.decode_step(torch.tensor([[last]]), state)
            logits[0, PAD] = -math.inf
            if step < 1:
                logits[0, EOS] = -math.inf
            last = int(logits[0].argmax())
            if last == EOS:
                break
            expected.append(last)
    hyp = greedy_search(model, src, max_len_b=12)[0]
    assert hyp.tokens == expected
    assert beam_search(model, src, beam_size=1, max_len_b=12)[0][0].tokens == expected


def test_model_mode_restored_and_no_grad() -> None:
    model = ToyModel(seed=11)
    model.train()
    hyps = beam_search(model, torch.tensor([[3, EOS]]), beam_size=2, max_len_b=3)
    assert model.training
    assert hyps[0] and not any(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(beam_size=0), "beam_size"),
        (dict(min_len=-1), "min_len"),
        (dict(max_len_b=-2), "max_len_a and max_len_b"),
        (dict(forced_first_token=99), "outside the vocabulary"),
        (dict(forced_first_token=PAD), "not the pad id"),
        (dict(forced_first_token=torch.tensor([3, 4, 5])), "3 entries for a batch of 1"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        beam_search(ToyModel(), torch.tensor([[3, EOS]]), **kwargs)


def test_bad_token_tensor_rejected() -> None:
    with pytest.raises(ValueError, match="2-D tensor"):
        beam_search(ToyModel(), torch.tensor([3, EOS]))
    with pytest.raises(ValueError, match="integer ids"):
        beam_search(ToyModel(), torch.tensor([[3.0, 2.0]]))
    assert beam_search(ToyModel(), torch.zeros((0, 4), dtype=torch.long)) == []


def test_stop_early_stops_at_beam_finished_and_exact_mode_never_scores_worse() -> None:
    src = torch.tensor([[5, 6, EOS]])
    early_model = ToyModel(vocab=20, padded_vocab=24, seed=12, eos_bias=8.0)
    early = beam_search(early_model, src, beam_size=3, max_len_b=30, stop_early=True)[0]
    exact_model = ToyModel(vocab=20, padded_vocab=24, seed=12, eos_bias=8.0)
    exact = beam_search(exact_model, src, beam_size=3, max_len_b=30, stop_early=False)[0]
    assert len(early) == len(exact) == 3
    assert early_model.decode_calls < 31  # done once 3 hypotheses finished, long before the maximum length
    assert exact_model.decode_calls > early_model.decode_calls  # it searched on until the bound said stop
    assert exact[0].score >= early[0].score - 1e-6


def fairseq_finish_order_reference(
    model: ToyModel, source: list[int], beam: int, max_len: int
) -> list[tuple[list[int], float]]:
    """fairseq's SequenceGenerator loop for one sentence, written out per candidate: the 2·beam best candidates;
    EOS ones among the first ``beam`` ranks are finalized in rank order while fewer than ``beam`` are kept
    (later finishers are dropped whatever their score); the first ``beam`` non-EOS ones live on."""
    import torch.nn.functional as F

    vocab = model.config.vocab_size
    with torch.no_grad():
        src = torch.tensor([source])
        state = model.start_decoding(model.encode(src), src.ne(PAD))
        live: list[tuple[list[int], float]] = [([], 0.0)]
        last = torch.tensor([[EOS]])
        final: list[tuple[list[int], float]] = []
        for step in range(max_len + 1):
            logits, state = model.decode_step(last, state)
            lp = F.log_softmax(logits.float(), dim=-1)
            lp[:, PAD] = -math.inf
            lp[:, vocab:] = -math.inf
            if step < 1:  # min_len 1
                lp[:, EOS] = -math.inf
            if step >= max_len:
                eos = lp[:, EOS].clone()
                lp[:] = -math.inf
                lp[:, EOS] = eos
            cands = sorted(
                ((live[r][1] + float(lp[r, t]), r, t) for r in range(len(live)) for t in range(lp.size(1))),
                key=lambda c: -c[0],
            )[: 2 * beam]
            for total, r, t in cands[:beam]:
                if t == EOS and total > -math.inf and len(final) < beam:
                    final.append((live[r][0], total / (step + 1)))
            if len(final) >= beam or step >= max_len:
                break
            nxt = [(total, r, t) for total, r, t in cands if t != EOS][:beam]
            state = state.reorder(torch.tensor([r for _, r, _ in nxt]))
            live = [(live[r][0] + [t], total) for total, r, t in nxt]
            last = torch.tensor([[t] for _, _, t in nxt])
    return sorted(final, key=lambda h: -h[1])


@pytest.mark.parametrize("eos_bias", [0.0, 1.0, 2.0])
def test_keep_finished_first_reproduces_fairseq_n_best(eos_bias: float) -> None:
    source = [3, 4, 5, EOS]
    differs = 0
    for seed in range(12):
        model = ToyModel(seed=seed, eos_bias=eos_bias)
        ref = fairseq_finish_order_reference(model, source, beam=3, max_len=6)
        first = beam_search(model, torch.tensor([source]), beam_size=3, max_len_b=6, keep_finished="first")[0]
        assert [h.tokens for h in first] == [tokens for tokens, _ in ref], seed
        assert [h.score for h in first] == pytest.approx([score for _, score in ref], abs=1e-5)
        best = beam_search(model, torch.tensor([source]), beam_size=3, max_len_b=6)[0]
        if [h.tokens for h in best] != [h.tokens for h in first]:
            differs += 1
            # the default keeps the best-scored: its k-th hypothesis is never worse than fairseq's k-th
            assert all(b.score >= f.score - 1e-9 for b, f in zip(best, first, strict=True))
    assert differs >= 1  # each bias has a seed where more finish in one step than the beam has free slots


def test_keep_finished_is_checked() -> None:
    with pytest.raises(ValueError, match="keep_finished must be one of"):
        beam_search(ToyModel(), torch.tensor([[3, EOS]]), keep_finished="fairseq")
