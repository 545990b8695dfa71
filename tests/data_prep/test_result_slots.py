"""Shared-memory result slots between tokenizer processes and the parent (data_prep/result_slots.py)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from data_prep.readers import iter_blocks
from data_prep.result_slots import ResultSlots
from data_prep.tokenize_pool import TokenizeJob, TokenizePool
from tests.data_prep.conftest import SAMPLE


def _columns(seed: int, rows: int) -> dict:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 50, rows).astype(np.int64)
    return {
        "src": (rng.integers(4, 8000, int(lengths.sum())).astype(np.int32), lengths),
        "tgt": (rng.integers(4, 8000, 7).astype(np.int32), np.array([3, 4], dtype=np.int64)),
    }


def test_store_then_load_round_trips_every_column():
    slots = ResultSlots(3, 1 << 16)
    cols = _columns(0, 41)  # odd value counts: the int64 lengths behind them stay 8-byte aligned
    slot = slots.acquire()
    layout = slots.store(slot, cols)
    back = slots.load(slot, layout)
    assert list(back) == ["src", "tgt"]
    for name, (values, lengths) in cols.items():
        assert back[name][0].dtype == np.int32 and back[name][1].dtype == np.int64
        assert np.array_equal(back[name][0], values) and np.array_equal(back[name][1], lengths)


def test_a_block_too_big_for_its_slot_is_refused_and_nothing_is_written():
    slots = ResultSlots(1, 256)
    assert slots.store(0, _columns(1, 40)) is None


def test_slots_are_handed_out_once_until_released():
    slots = ResultSlots(2, 64)
    a, b = slots.acquire(), slots.acquire()
    assert a != b and slots.free == 0
    with pytest.raises(RuntimeError, match="no free result slot"):
        slots.acquire()
    slots.release(a)
    assert slots.acquire() == a


@pytest.mark.parametrize("slot_bytes", [4 << 20, 4096])  # 4096: most blocks overflow and travel pickled
def test_pool_results_equal_in_process_results(spm_model, tmp_path, slot_bytes):
    text = tmp_path / "de.txt"
    text.write_bytes(gzip.decompress((SAMPLE / "mono" / "de.txt.gz").read_bytes()))
    spec = TokenizeJob(spm_path=str(spm_model), fmt="mono", max_line_bytes=1 << 20)

    def run(workers: int, **kwargs) -> list:
        out = []
        with TokenizePool(workers, **kwargs) as pool:
            blocks = iter_blocks(text, b"\n\n", 16 << 10, 1 << 20, [], "document_too_long")
            for block, result in pool.map(spec, blocks):
                values, lengths = result.columns["tokens"]
                out.append((block.offset, values.copy(), lengths.copy()))  # views die with the next item
        return out

    one, two = run(1), run(2, slot_bytes=slot_bytes)
    assert len(one) == len(two) > 5
    for (off_a, val_a, len_a), (off_b, val_b, len_b) in zip(one, two, strict=True):
        assert off_a == off_b and np.array_equal(val_a, val_b) and np.array_equal(len_a, len_b)


def test_shard_column_buffer_grows_and_keeps_every_value(monkeypatch):
    from data_prep import shard_writer

    monkeypatch.setattr(shard_writer, "POPULATE_STEP", 4096)  # populate in many small steps
    buffer = shard_writer._ColumnBuffer(1024)
    rng = np.random.default_rng(3)
    parts = [rng.integers(0, 1 << 30, n).astype(np.int32) for n in (1000, 3000, 50_000, 7)]
    for part in parts:  # 50,000 values overflow the 1,024-value buffer: it doubles and copies
        buffer.append(part, np.array([len(part)], dtype=np.int64))
    values, lengths = buffer.view()
    assert np.array_equal(values, np.concatenate(parts)) and lengths.tolist() == [1000, 3000, 50_000, 7]
    buffer.clear()
    buffer.append(parts[3], np.array([7], dtype=np.int64))
    assert np.array_equal(buffer.view()[0], parts[3])
