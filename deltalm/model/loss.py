"""Chunked (label-smoothed) cross-entropy over the tied output projection, never materializing [N, V] logits.

The logits of ``chunk_size`` tokens at a time are computed, reduced to the per-token log-sum-exp, and dropped;
the backward pass recomputes each chunk's logits (custom autograd Function), so peak memory is
``chunk_size × V`` floats instead of ``N × V``. Padded vocabulary rows (``>= valid_vocab``) are never scored
and get zero gradient.

Label smoothing is fairseq's ``label_smoothed_nll_loss``: with V the valid vocabulary and ε the smoothing,
``loss = (1 - ε - ε/(V-1)) · nll + ε/(V-1) · Σ_v -log p_v``.

``fused=True`` runs each chunk's elementwise work (upcast, log-sum-exp, the logit gradient) through
``torch.compile``: on a GPU these passes over the [chunk, 250k] logits are memory-bound and, unfused, cost
about as much time as the rest of the step; fused they read the low-precision logits once. Same math as the
eager path (tested), which stays the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossOutput:
    """Sums over real target tokens; the caller divides by the global token count."""

    loss_sum: torch.Tensor  # fp32 scalar: label-smoothed loss summed over tokens
    nll_sum: torch.Tensor  # fp32 scalar: plain negative log-likelihood summed over tokens
    num_tokens: torch.Tensor  # int64 scalar: tokens with loss weight > 0


def _smoothing_coefficients(label_smoothing: float, vocab: int) -> tuple[float, float]:
    """(weight of nll, weight of the smooth term Σ_v -log p_v), fairseq's definition."""
    if label_smoothing == 0.0:
        return 1.0, 0.0
    eps_i = label_smoothing / (vocab - 1)
    return 1.0 - label_smoothing - eps_i, eps_i


def _chunk_statistics(logits: torch.Tensor, targets: torch.Tensor, smooth: bool):
    """(log-sum-exp, nll, Σ_v logits or None) in fp32 of one chunk's logits [n, V] (any float dtype)."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)
    nll = lse - logits.gather(1, targets[:, None]).squeeze(1)
    return lse, nll, (logits.sum(dim=-1) if smooth else None)


def _logit_gradient(logits, lse, targets, grad_loss, grad_nll, a: float, b: float, dtype: torch.dtype):
    """d(gl·loss + gn·nll)/d(logits) = (gl + gn)·p - (gl·a + gn)·onehot(target) - gl·b, in one elementwise pass.

    The eager path computes the same with a scatter (no [n, V] mask); this form fuses under torch.compile.
    """
    probs = torch.exp(logits.float() - lse[:, None])
    hit = torch.arange(logits.size(1), device=logits.device)[None, :] == targets[:, None]
    g = probs * (grad_loss + grad_nll) - torch.where(hit, grad_loss * a + grad_nll, 0.0) - grad_loss * b
    return g.to(dtype)


_COMPILED: dict[str, object] = {}


def _compiled(name: str):
    """The torch.compile'd chunk kernels (built on first use; dynamic in the chunk length)."""
    if name not in _COMPILED:
        fn = {"statistics": _chunk_statistics, "gradient": _logit_gradient}[name]
        _COMPILED[name] = torch.compile(fn, dynamic=True)
    return _COMPILED[name]


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, label_smoothing, chunk_size, valid_vocab, fused=False):
        w = weight[:valid_vocab]
        a, b = _smoothing_coefficients(label_smoothing, valid_vocab)
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        nll_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        lses = []
        for start in range(0, hidden.size(0), chunk_size):
            h = hidden[start : start + chunk_size]
            t = targets[start : start + chunk_size]
            statistics = _compiled("statistics") if fused else _chunk_statistics
            lse, nll, logit_sum = statistics(h @ w.t(), t, bool(b))
            nll_sum = nll_sum + nll.sum()
            if b:
                smooth = valid_vocab * lse - logit_sum
                loss_sum = loss_sum + (a * nll + b * smooth).sum()
            else:
                loss_sum = loss_sum + nll.sum()
            lses.append(lse)
        lse_all = torch.cat(lses) if lses else hidden.new_zeros(0, dtype=torch.float32)
        ctx.save_for_backward(hidden, weight, targets, lse_all)
        ctx.config = (a, b, chunk_size, valid_vocab, fused)
        return loss_sum, nll_sum

    @staticmethod
    def backward(ctx, grad_loss, grad_nll):
        hidden, weight, targets, lse_all = ctx.saved_tensors
        a, b, chunk_size, valid_vocab, fused = ctx.config
        w = weight[:valid_vocab]
        gl = grad_loss.float() if grad_loss is not None else torch.zeros((), device=hidden.device)
        gn = grad_nll.float() if grad_nll is not None else torch.zeros((), device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = (
            torch.zeros(w.shape, dtype=torch.float32, device=w.device) if ctx.needs_input_grad[1] else None
        )
        for start in range(0, hidden.size(0), chunk_size):
            h = hidden[start : start + chunk_size]
            t = targets[start : start + chunk_size]
            if fused:
                g = _compiled("gradient")(
                    h @ w.t(), lse_all[start : start + chunk_size], t, gl, gn, a, b, hidden.dtype
                )
            else:
                logits = (h @ w.t()).float()
                probs = torch.exp(logits - lse_all[start : start + chunk_size, None])
                # d(loss)/d(logits) = p - a·onehot - b (a + b·V = 1); d(nll)/d(logits) = p - onehot
                g = probs * (gl + gn)
                g.scatter_add_(1, t[:, None], (-(gl * a + gn)).expand(t.size(0), 1).contiguous())
                if b:
                    g = g - gl * b
                g = g.to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_size] = g @ w
            if grad_w is not None:
                grad_w += (g.t() @ h).float()
        grad_weight = None
        if grad_w is not None:
            grad_weight = torch.zeros_like(weight)
            grad_weight[:valid_vocab] = grad_w.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    label_smoothing: float = 0.0,
    chunk_size: int = 1024,
    valid_vocab: int | None = None,
    fused: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(label-smoothed loss sum, nll sum), fp32 scalars, of ``targets`` [N] under logits ``hidden @ weight.T``.

    ``hidden`` [N, d], ``weight`` [V, d] (the tied embedding, no bias); only rows ``< valid_vocab`` are scored.
    ``fused``: torch.compile the per-chunk elementwise work (see the module docstring).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.size(1) != weight.size(1):
        raise ValueError(
            f"expected hidden [N, d] and weight [V, d], got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets {tuple(targets.shape)} do not match hidden {tuple(hidden.shape)}")
    valid_vocab = weight.size(0) if valid_vocab is None else valid_vocab
    if not 1 < valid_vocab <= weight.size(0):
        raise ValueError(f"valid_vocab {valid_vocab} must be in (1, {weight.size(0)}]")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if targets.numel() and bool(((targets < 0) | (targets >= valid_vocab)).any()):
        bad = targets[(targets < 0) | (targets >= valid_vocab)][0].item()
        raise ValueError(f"target id {bad} is outside the vocabulary [0, {valid_vocab})")
    if hidden.dtype != weight.dtype:
        hidden = hidden.to(weight.dtype)
    return _ChunkedCrossEntropy.apply(
        hidden, weight, targets.long(), float(label_smoothing), chunk_size, valid_vocab, bool(fused)
    )
