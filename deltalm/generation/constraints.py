"""Search constraints applied to one step's log-probabilities, in place, before candidates are ranked.

Every function takes ``lprobs`` of shape [rows, vocab] (one row per live hypothesis) and writes ``-inf`` into
the entries a hypothesis may not choose. They follow fairseq's SequenceGenerator: the pad token is never
generated, EOS is banned before ``min_len`` tokens, EOS is forced at the maximum length, and a repeated
n-gram is blocked. ``step`` is 0-based: step ``t`` chooses the ``t+1``-th generated token.
"""

from __future__ import annotations

import math

import torch

NEG_INF = -math.inf


def ban_tokens(lprobs: torch.Tensor, token_ids: list[int], vocab_size: int | None = None) -> None:
    """Never generate ``token_ids`` (pad) nor the embedding rows beyond the logical ``vocab_size``."""
    for token in token_ids:
        lprobs[:, token] = NEG_INF
    if vocab_size is not None and vocab_size < lprobs.size(1):
        lprobs[:, vocab_size:] = NEG_INF


def apply_min_length(lprobs: torch.Tensor, step: int, min_len: int, eos: int) -> None:
    """Ban EOS while fewer than ``min_len`` tokens have been generated."""
    if step < min_len:
        lprobs[:, eos] = NEG_INF


def force_first_token(lprobs: torch.Tensor, first_token: torch.Tensor) -> None:
    """At step 0 keep only ``first_token[row]`` (e.g. a target-language tag); its log-probability is kept."""
    keep = lprobs.gather(1, first_token[:, None])
    lprobs.fill_(NEG_INF)
    lprobs.scatter_(1, first_token[:, None], keep)


def force_eos(lprobs: torch.Tensor, rows: torch.Tensor, eos: int) -> None:
    """Rows that reached their maximum length may only end: every token but EOS is banned.

    ``rows`` is a bool mask [rows]. EOS keeps the model's log-probability (fairseq) unless a rule banned it
    (then 0 is used, so a hypothesis at its maximum length can always end).
    """
    if not bool(rows.any()):
        return
    eos_lp = lprobs[rows, eos]
    eos_lp = torch.where(torch.isfinite(eos_lp), eos_lp, torch.zeros_like(eos_lp))
    lprobs[rows] = NEG_INF
    lprobs[rows, eos] = eos_lp


def block_repeated_ngrams(lprobs: torch.Tensor, generated: torch.Tensor, n: int) -> None:
    """Ban every token that would repeat an ``n``-gram already present in ``generated`` [rows, length].

    ``generated`` holds the tokens chosen so far (without the leading BOS). Vectorized: every window of the
    history whose first n-1 tokens equal the last n-1 generated tokens bans the window's last token.
    """
    if n <= 0:
        return
    rows, length = generated.shape
    if n == 1:
        if length:
            lprobs.scatter_(1, generated, NEG_INF)
        return
    if length < n:
        return
    windows = generated.unfold(1, n, 1)  # [rows, length - n + 1, n]
    tail = generated[:, length - n + 1 :]  # the last n-1 tokens: [rows, n-1]
    match = (windows[:, :, :-1] == tail[:, None, :]).all(dim=-1)
    row_idx, win_idx = match.nonzero(as_tuple=True)
    if row_idx.numel():
        lprobs[row_idx, windows[row_idx, win_idx, -1]] = NEG_INF
