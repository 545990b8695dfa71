"""Beam search on a tiny random DeltaLM: greedy = argmax of the full forward, scores = teacher-forced rescoring."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deltalm import DeltaLMConfig
from deltalm.generation import beam_search, greedy_search
from deltalm.model.model import DeltaLM

PAD, EOS = 1, 2


@pytest.fixture(scope="module")
def model() -> DeltaLM:
    torch.manual_seed(0)
    config = DeltaLMConfig.preset(
        "tiny", vocab_size=61, d_model=32, heads=4, ffn=64, encoder_layers=2, decoder_blocks=2, dropout=0.0
    )
    m = DeltaLM(config)
    m.reset_parameters(std=0.5)  # peaked distributions: few near-ties between candidates
    return m.eval()


@pytest.fixture(scope="module")
def sources() -> torch.Tensor:
    rows = [[5, 9, 13, 40, 22, EOS], [7, 8, EOS], [30, 31, 32, 33, EOS], [11, EOS]]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows])


def _full_forward_greedy(model: DeltaLM, source: torch.Tensor, max_len: int) -> list[int]:
    """Greedy decoding the slow way: the whole prefix through the full forward at every step."""
    out: list[int] = []
    with torch.no_grad():
        for step in range(max_len + 1):
            dec = torch.tensor([[EOS] + out])
            logits = model(source[None], dec)[0, -1].float()
            logits[PAD] = float("-inf")
            if step == 0:
                logits[EOS] = float("-inf")  # min_len = 1
            if step == max_len:
                break
            token = int(logits.argmax())
            if token == EOS:
                break
            out.append(token)
    return out


def test_greedy_equals_full_forward_argmax(model: DeltaLM, sources: torch.Tensor) -> None:
    hyps = greedy_search(model, sources, max_len_a=0.0, max_len_b=12)
    for row, hyp in zip(sources, hyps, strict=True):
        real = row[row.ne(PAD)]
        assert hyp.tokens == _full_forward_greedy(model, real, 12)


def test_beam_scores_equal_teacher_forced_rescoring(model: DeltaLM, sources: torch.Tensor) -> None:
    results = beam_search(model, sources, beam_size=4, max_len_a=1.0, max_len_b=3, length_penalty=1.0)
    with torch.no_grad():
        for row, hyps in zip(sources, results, strict=True):
            assert len(hyps) == 4
            real = row[row.ne(PAD)]
            for hyp in hyps:
                dec = torch.tensor([[EOS] + hyp.tokens])
                lprobs = F.log_softmax(model(real[None], dec)[0].float(), dim=-1)
                target = torch.tensor(hyp.tokens + [EOS])
                positional = lprobs.gather(1, target[:, None])[:, 0]
                assert hyp.positional_scores == pytest.approx(positional.tolist(), abs=1e-4)
                expected = float(positional.sum()) / (len(hyp.tokens) + 1)
                assert hyp.score == pytest.approx(expected, abs=1e-4)


def test_batched_beam_equals_one_by_one(model: DeltaLM, sources: torch.Tensor) -> None:
    options = dict(beam_size=3, max_len_a=1.0, max_len_b=4, no_repeat_ngram_size=2, forced_first_token=50)
    batched = beam_search(model, sources, **options)
    for row, hyps in zip(sources, batched, strict=True):
        single = beam_search(model, row[row.ne(PAD)][None], **options)[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in single]
        assert [h.score for h in hyps] == pytest.approx([h.score for h in single], abs=1e-5)
        assert all(h.tokens[0] == 50 for h in hyps)


def test_never_predicts_padded_vocabulary_rows(model: DeltaLM, sources: torch.Tensor) -> None:
    assert model.config.padded_vocab_size > model.config.vocab_size
    for hyps in beam_search(model, sources, beam_size=5, max_len_a=0.0, max_len_b=6):
        for hyp in hyps:
            assert all(0 <= t < model.config.vocab_size and t != PAD for t in hyp.tokens)
