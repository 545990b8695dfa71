"""Chunked cross-entropy == plain (fairseq label-smoothed) cross-entropy, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deltalm.model.loss import chunked_cross_entropy


def reference_loss(hidden, weight, targets, eps, valid):
    """fairseq label_smoothed_nll_loss over full logits of the valid vocabulary (sum reduction)."""
    lprobs = F.log_softmax(hidden @ weight[:valid].t(), dim=-1)
    nll = -lprobs.gather(1, targets[:, None]).squeeze(1)
    smooth = -lprobs.sum(-1)
    eps_i = eps / (valid - 1)
    loss = (1.0 - eps - eps_i) * nll + eps_i * smooth
    return loss.sum(), nll.sum()


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_matches_plain_values_and_gradients(eps, chunk):
    torch.manual_seed(0)
    n, d, rows, valid = 23, 16, 40, 37  # rows 37..39 are vocabulary padding
    hidden = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(rows, d, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, valid, (n,))
    loss, nll = chunked_cross_entropy(hidden, weight, targets, eps, chunk, valid)
    ref_loss, ref_nll = reference_loss(hidden, weight, targets, eps, valid)
    assert loss.dtype == torch.float32 and nll.dtype == torch.float32
    assert torch.allclose(loss.double(), ref_loss, rtol=1e-6, atol=1e-6)
    assert torch.allclose(nll.double(), ref_nll, rtol=1e-6, atol=1e-6)

    # gradient of a combination of both outputs (both backward paths exercised)
    g_h, g_w = torch.autograd.grad(loss + 0.3 * nll, (hidden, weight))
    r_h, r_w = torch.autograd.grad(ref_loss + 0.3 * ref_nll, (hidden, weight))
    assert torch.allclose(g_h, r_h, atol=1e-6)
    assert torch.allclose(g_w, r_w, atol=1e-6)
    assert torch.count_nonzero(g_w[valid:]) == 0  # padded rows never scored


def test_fp32_inputs_match_within_1e6_relative():
    torch.manual_seed(1)
    hidden = torch.randn(50, 8, requires_grad=True)
    weight = torch.randn(30, 8, requires_grad=True)
    targets = torch.randint(0, 30, (50,))
    loss, _ = chunked_cross_entropy(hidden, weight, targets, 0.1, 16)
    ref, _ = reference_loss(hidden, weight, targets, 0.1, 30)
    assert abs(loss.item() - ref.item()) <= 1e-6 * abs(ref.item())
    loss.backward()
    gh = hidden.grad.clone()
    hidden.grad = None
    ref.backward()
    assert torch.allclose(gh, hidden.grad, atol=1e-6)


def test_golden_value():
    torch.manual_seed(0)
    hidden = torch.randn(4, 3)
    weight = torch.randn(6, 3)
    targets = torch.tensor([0, 5, 2, 3])
    loss, nll = chunked_cross_entropy(hidden, weight, targets, 0.1, 2)
    # independent hand reduction: -log softmax at the targets
    logp = torch.log_softmax(hidden @ weight.t(), -1)
    expected_nll = -(logp[0, 0] + logp[1, 5] + logp[2, 2] + logp[3, 3])
    assert nll.item() == pytest.approx(expected_nll.item(), rel=1e-6)
    expected = 0.88 * expected_nll - 0.02 * logp.sum()  # eps=0.1, V=6: eps_i=0.02, 1-eps-eps_i=0.88
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_empty_and_bad_inputs():
    weight = torch.randn(10, 4)
    loss, nll = chunked_cross_entropy(torch.zeros(0, 4), weight, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and nll.item() == 0.0
    with pytest.raises(ValueError, match="outside the vocabulary"):
        chunked_cross_entropy(torch.randn(2, 4), weight, torch.tensor([1, 9]), valid_vocab=8)
    with pytest.raises(ValueError, match="label_smoothing"):
        chunked_cross_entropy(torch.randn(2, 4), weight, torch.tensor([1, 2]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="expected hidden"):
        chunked_cross_entropy(torch.randn(2, 5), weight, torch.tensor([1, 2]))
