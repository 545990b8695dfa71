"""ShardWriter keeps nothing of the caller's arrays: a block's columns may sit in a result slot that the next
block reuses (a shared-memory slot at --workers > 1), so overwriting them after add() must not change a shard."""

from __future__ import annotations

import numpy as np

from data_prep.shard_writer import ShardWriter
from data_prep.tokenize_pool import BlockResult
from deltalm.shard_format import ShardReader, mono_schema


def test_overwriting_an_added_block_changes_nothing(tmp_path):
    schema = mono_schema("xx")
    writer = ShardWriter(tmp_path, "xx", schema, shard_size=1 << 20, next_index=0)
    rows = [np.arange(10, 10 + n, dtype=np.int32) for n in (3, 5, 2, 7)]
    values = np.concatenate(rows)
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    assert writer.add(BlockResult({"tokens": (values, lengths)}), on_shard=lambda info: None) == 0
    values[:] = 99  # the slot is reused by the next block
    lengths[:] = [1, 1, 1, 14]
    info = writer.flush()
    with ShardReader(tmp_path / info.path, expect_kind="mono") as reader:
        got = [reader.tokens().row(i).tolist() for i in range(reader.num_rows)]
    assert got == [r.tolist() for r in rows]
