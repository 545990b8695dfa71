"""The beam-search layout of DecodingState: grouped cross-attention rows, in-place self-attention cache."""

from __future__ import annotations

import torch

from deltalm.model.decoding_state import MIN_CAPACITY, DecodingState
from tests.deltalm.model.helpers import PAD, padded_batch, tiny_model


def test_grouped_rows_follow_beams_without_gathering_cross_kv():
    model = tiny_model()
    b = padded_batch(seed=5)
    src, beam = b["encoder_input_tokens"], 3
    state = model.start_decoding(model.encode(src), src.ne(PAD))
    cross = state.cross_kv[0][0]
    expanded = state.reorder(torch.arange(3).repeat_interleave(beam))
    assert expanded.group == beam and expanded.batch_size == 9
    assert expanded.cross_kv[0][0] is cross  # beams share their sentence's keys/values
    # follow hypotheses within each sentence: still grouped, still no gather
    _, stepped = model.decode_step(torch.full((9,), 2), expanded)
    follow = torch.tensor([2, 2, 0, 3, 5, 4, 8, 6, 6])
    followed = stepped.reorder(follow)
    assert followed.group == beam and followed.cross_kv[0][0] is cross
    # drop sentence 1: the kept sentences' keys/values are gathered once
    dropped = stepped.reorder(torch.tensor([0, 1, 2, 6, 7, 8]))
    assert dropped.group == beam and dropped.cross_kv[0][0].size(0) == 2
    # an arbitrary order falls back to one source row per decoding row
    mixed = stepped.reorder(torch.tensor([8, 0, 4]))
    assert mixed.group == 1 and mixed.cross_kv[0][0].size(0) == 3


def test_reordered_decoding_equals_full_forward_past_the_initial_capacity():
    model = tiny_model()
    steps = MIN_CAPACITY + 5  # forces one doubling of the self-attention buffers
    src_lens, beam = (7, 4, 1), 2
    b = padded_batch(seed=6, src_lens=src_lens, tgt_lens=(steps - 1,) * 3)
    src, dec = b["encoder_input_tokens"], b["decoder_input_tokens"]
    rows = torch.arange(3).repeat_interleave(beam)
    swap = torch.tensor([1, 0, 2, 2, 5, 4])  # beams swap / duplicate within their sentence
    drop = torch.tensor([0, 1, 4, 5])  # sentence 1 finishes
    mixed = torch.tensor([3, 0, 2, 1])  # no sentence-major pattern
    reorders = {1: rows, 4: swap, 9: drop, 12: mixed}
    # the token each final row's ancestor saw at step t (the rows it followed through the reorders)
    ancestry = torch.arange(3)
    tokens_per_step = []
    for t in range(steps):
        if t in reorders:
            ancestry = ancestry[reorders[t]]
        tokens_per_step.append(dec[ancestry, t])
    state = model.start_decoding(model.encode(src), src.ne(PAD))
    history = torch.arange(3)[:, None].expand(3, 0)
    for t in range(steps):
        if t in reorders:
            state = state.reorder(reorders[t])
            history = history[reorders[t]]
        logits, state = model.decode_step(tokens_per_step[t], state)
        history = torch.cat([history, tokens_per_step[t][:, None]], dim=1)
    assert state.self_kv[0][0].shape[2] == steps
    full = model(src[ancestry], history)
    assert torch.allclose(logits[:, :203], full[:, -1, :203], atol=1e-5)


def test_state_dict_round_trip_keeps_grouping():
    model = tiny_model()
    b = padded_batch(seed=7)
    src = b["encoder_input_tokens"]
    state = model.start_decoding(model.encode(src), src.ne(PAD)).reorder(torch.arange(3).repeat_interleave(2))
    _, state = model.decode_step(torch.full((6,), 2), state)
    fresh = model.start_decoding(model.encode(src), src.ne(PAD))
    fresh.load_state_dict(state.state_dict())
    assert isinstance(fresh, DecodingState) and fresh.group == 2 and fresh.step == 1
    tok = torch.arange(4, 10)
    a, _ = model.decode_step(tok, state)
    c, _ = model.decode_step(tok, fresh)
    assert torch.equal(a, c)
