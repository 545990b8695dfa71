"""Temperature schedule, bucketed batches (resume, ranks), collation and the zero-shot mix."""

from __future__ import annotations

import numpy as np
import pytest

from deltalm.vocabulary import EOS_ID, PAD_ID
from finetune.batching import BucketedBatches, PairSampler, collate, eval_batches
from finetune.readers import SkipReport
from finetune.tasks import Example
from finetune.temperature_schedule import TemperatureSchedule, temperature_probabilities
from finetune.zero_shot import ZeroShotMixer, corrupt, is_pretrain_step, mono_chunks


def _examples(n: int, seed: int = 0, lang: str = "de") -> list[Example]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = rng.integers(4, 300, size=rng.integers(2, 30)).astype(np.int32)
        tgt = np.append(rng.integers(4, 300, size=rng.integers(1, 20)), EOS_ID).astype(np.int32)
        out.append(Example(np.append(src, EOS_ID).astype(np.int32), tgt, "", "en", lang, f"f:{i}"))
    return out


def test_temperature_schedule_values():
    s = TemperatureSchedule(1.0, 5.0, rise_steps=100)
    assert [s.temperature(k) for k in (0, 25, 50, 100, 1000)] == [1.0, 2.0, 3.0, 5.0, 5.0]
    np.testing.assert_allclose(s.probabilities([900, 100], 0), [0.9, 0.1])
    # T = 5: p ∝ (0.9^0.2, 0.1^0.2)
    np.testing.assert_allclose(s.probabilities([900, 100], 100), [0.6081270, 0.3918730], rtol=1e-6)
    np.testing.assert_allclose(temperature_probabilities([1, 1, 2], 1e9), [1 / 3] * 3, rtol=1e-6)
    with pytest.raises(ValueError):
        TemperatureSchedule(0.0, 5.0)


def test_collate_batch_contract():
    a = Example(np.array([5, 6, EOS_ID], np.int32), np.array([7, EOS_ID], np.int32), "", "", "", "")
    b = Example(np.array([5, EOS_ID], np.int32), np.array([8, 9, EOS_ID], np.int32), "", "", "", "")
    batch = collate([a, b])
    assert batch["encoder_input_tokens"].tolist() == [[5, 6, EOS_ID], [5, EOS_ID, PAD_ID]]
    assert batch["encoder_padding_mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["decoder_input_tokens"].tolist() == [[EOS_ID, 7, PAD_ID], [EOS_ID, 8, 9]]
    assert batch["decoder_target_tokens"].tolist() == [[7, EOS_ID, PAD_ID], [8, 9, EOS_ID]]
    assert batch["decoder_loss_weights"].tolist() == [[1, 1, 0], [1, 1, 1]]


def test_bucketed_batches_resume_and_ranks():
    ex = _examples(103)
    ref = BucketedBatches(ex, 4, seed=3, bucket_factor=5)
    stream = [[e.origin for e in ref.next_batch()] for _ in range(60)]  # crosses an epoch (26 batches)
    assert len({o for b in stream[:26] for o in b}) == 103  # one epoch: every example exactly once
    resumed = BucketedBatches(ex, 4, seed=3, bucket_factor=5)
    for _ in range(37):
        resumed.next_batch()
    state = resumed.state_dict()
    again = BucketedBatches(ex, 4, seed=3, bucket_factor=5)
    again.load_state_dict(state)
    assert [[e.origin for e in again.next_batch()] for _ in range(23)] == stream[37:]
    # bucketing: batches are length-sorted slices of a bucket, so padding is small
    lengths = [[max(len(e.source), len(e.target)) for e in ref.next_batch()] for _ in range(20)]
    assert np.mean([max(b) - min(b) for b in lengths]) < 8
    ranks = [
        BucketedBatches(ex[:100], 4, seed=3, dp_rank=r, dp_world_size=2, bucket_factor=5) for r in range(2)
    ]
    seen = [[e.origin for _ in range(12) for e in rk.next_batch()] for rk in ranks]
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) == len(seen[1]) == 48
    with pytest.raises(ValueError, match="not 50"):
        BucketedBatches(ex[:50], 4, seed=3).load_state_dict(state)


def test_pair_sampler_follows_temperature():
    pairs = {
        "en-de": BucketedBatches(_examples(90, 1), 1),
        "en-fr": BucketedBatches(_examples(10, 2, "fr"), 1),
    }
    sampler = PairSampler(pairs, TemperatureSchedule(1.0, 5.0, rise_steps=10**9), seed=0)
    early = [sampler.choose(k) for k in range(4000)]
    assert abs(early.count("en-fr") / 4000 - 0.1) < 0.015
    late = PairSampler(pairs, TemperatureSchedule(5.0, 5.0), seed=0)
    share = [late.choose(k) for k in range(4000)].count("en-fr") / 4000
    assert abs(share - 0.392) < 0.02
    sampler2 = PairSampler(pairs, TemperatureSchedule(1.0, 5.0, rise_steps=100), seed=0)
    for _ in range(7):
        sampler2.next_batch()
    state = sampler2.state_dict()
    nxt = [sampler2.next_batch() for _ in range(5)]
    sampler3 = PairSampler(
        {"en-de": BucketedBatches(_examples(90, 1), 1), "en-fr": BucketedBatches(_examples(10, 2, "fr"), 1)},
        TemperatureSchedule(1.0, 5.0, rise_steps=100),
        seed=0,
    )
    sampler3.load_state_dict(state)
    assert [(n, [e.origin for e in b]) for n, b in (sampler3.next_batch() for _ in range(5))] == [
        (n, [e.origin for e in b]) for n, b in nxt
    ]


def test_eval_batches_cover_everything_once():
    ex = _examples(23)
    all_idx = sorted(i for r in range(3) for b in eval_batches(ex, 4, r, 3) for i in b)
    assert all_idx == list(range(23))


def test_zero_shot_mix_ratio_and_dropped_sentinels(tmp_path, vocab):
    assert [is_pretrain_step(k, 0.5) for k in range(6)] == [False, True] * 3
    for ratio in (0.25, 0.5, 0.3):
        assert sum(is_pretrain_step(k, ratio) for k in range(1000)) == round(1000 * ratio)
    mono = tmp_path / "de.txt"
    mono.write_text(("Datei öffnen und speichern. " * 40 + "\n\n") * 6, encoding="utf-8")
    report = SkipReport()
    chunks = mono_chunks([(str(mono), "de")], vocab, 64, report)
    assert chunks and all(len(c.source) <= 64 for c in chunks)
    task = PairSampler({"en-de": BucketedBatches(_examples(40), 2)}, TemperatureSchedule())
    mixer = ZeroShotMixer(
        task, BucketedBatches(chunks, 2, seed=1), vocab, ratio=0.5, seed=1, noise_density=0.15, mean_span=3.0
    )
    kinds = []
    for _ in range(40):
        name, batch = mixer.next_batch()
        kinds.append(name)
        if name == "pretrain":
            for e in batch:
                assert not vocab.is_sentinel(e.target).any()
                assert vocab.is_sentinel(e.source).any() and e.target[-1] == EOS_ID
    assert kinds.count("pretrain") == 20
    ex = corrupt(
        chunks[0],
        np.random.default_rng(0),
        vocab,
        0.15,
        3.0,
        tag_id=vocab.with_lang_tags(["de"]).lang_tag_id("de"),
    )
    assert ex.source[0] == vocab.first_lang_tag
    # the noise tokens (target without EOS) are exactly the tokens the input lost
    kept = ex.source[1:-1][~vocab.is_sentinel(ex.source[1:-1])]
    assert len(kept) + len(ex.target) - 1 == len(chunks[0].source)
