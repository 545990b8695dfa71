"""The prefetch thread: order, state handed with each item, errors re-raised, clean stop."""

from __future__ import annotations

import threading

import pytest

from pretrain.prefetch import Prefetcher


def test_items_arrive_in_order_with_their_next_state():
    produced = []

    def produce(state: int) -> tuple[str, int]:
        produced.append(state)
        return f"item{state}", state + 1

    prefetcher = Prefetcher(produce, 10, depth=2)
    assert [prefetcher.get() for _ in range(5)] == [(f"item{k}", k + 1) for k in range(10, 15)]
    prefetcher.close()
    assert produced[:5] == [10, 11, 12, 13, 14]
    assert len(produced) <= 5 + 3  # ran ahead by at most the queue depth (+ the one being put)
    assert not any(t.name == "pretrain-prefetch" and t.is_alive() for t in threading.enumerate())


def test_producer_error_is_reraised_after_the_good_items():
    def produce(state: int) -> tuple[int, int]:
        if state == 3:
            raise OSError("disk gone")
        return state, state + 1

    prefetcher = Prefetcher(produce, 0, depth=4)
    assert [prefetcher.get()[0] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(OSError, match="disk gone"):
        prefetcher.get()
    with pytest.raises(ValueError):
        Prefetcher(produce, 0, depth=0)
