"""The two-pass row top-k used by beam search equals torch.topk."""

from __future__ import annotations

import pytest
import torch

from deltalm.generation.search import row_topk


@pytest.mark.parametrize(("rows", "width", "k"), [(80, 8128, 10), (7, 8104, 10), (5, 1000, 3), (3, 208, 4)])
def test_row_topk_equals_torch_topk(rows: int, width: int, k: int) -> None:
    x = torch.randn(rows, width, generator=torch.Generator().manual_seed(width))
    expected = x.topk(k, dim=1)
    values, indices = row_topk(x, k)
    assert torch.equal(values, expected.values) and torch.equal(indices, expected.indices)


def test_row_topk_finds_the_tail_and_masked_rows() -> None:
    x = torch.full((3, 1000), float("-inf"))
    x[0, 999] = 0.0  # in the tail (1000 = 7 blocks of 128 + 104)
    x[1, 5] = -1.0
    x[1, 640] = -0.5
    x[2] = torch.arange(1000.0)
    values, indices = row_topk(x, 2, block=128)
    assert indices[0, 0] == 999 and values[0, 0] == 0.0 and values[0, 1] == float("-inf")
    assert indices[1].tolist() == [640, 5] and values[1].tolist() == [-0.5, -1.0]
    assert indices[2].tolist() == [999, 998]
