"""The vocabulary contract, the strict config tree and the shard reader contract."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from deltalm.config_tree import ConfigError, apply_overrides, from_dict, to_dict
from deltalm.model.config import DeltaLMConfig
from deltalm.shard_format import ShardError, ShardReader, mono_schema, parallel_schema
from deltalm.vocabulary import Vocabulary


def test_xlmr_vocabulary_matches_released_checkpoint():
    v = Vocabulary(250_000)
    assert (v.bos, v.pad, v.eos, v.unk) == (0, 1, 2, 3)
    assert v.mask == 250_001
    assert v.first_sentinel == 250_004
    assert v.sentinel(99) == 250_103
    assert v.pretrain_size == 250_104
    assert v.padded_size(64) % 64 == 0
    tagged = v.with_lang_tags(["de", "fr"])
    assert tagged.lang_tag_id("de") == 250_104 and tagged.lang_tag_id("fr") == 250_105
    assert tagged.size == 250_106
    with pytest.raises(KeyError):
        tagged.lang_tag_id("xx")
    with pytest.raises(IndexError):
        v.sentinel(100)


def test_pieces_to_ids_without_processor():
    v = Vocabulary(100)
    ids = v.pieces_to_ids(np.array([0, 1, 2, 3, 99]))
    assert ids.tolist() == [3, 0, 2, 4, 100] and ids.dtype == np.int32
    assert v.pieces_to_ids(np.array([5, 0, 0, 1], dtype=np.int32)).tolist() == [6, 3, 3, 0]
    assert v.pieces_to_ids(np.zeros(0, dtype=np.int64)).tolist() == []
    for bad in ([100], [-1], [3, 100, 4]):
        with pytest.raises(IndexError, match="outside the model"):
            v.pieces_to_ids(np.array(bad))


@dataclasses.dataclass
class _Inner:
    lr: float = 1e-3
    name: str = "x"


@dataclasses.dataclass
class _Outer:
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    steps: int = 10


def test_config_tree_strict_and_overrides():
    data = apply_overrides({"inner": {"lr": 0.5}}, ["steps=20", "inner.name=abc"])
    cfg = from_dict(_Outer, data)
    assert cfg.steps == 20 and cfg.inner.lr == 0.5 and cfg.inner.name == "abc"
    assert to_dict(cfg) == {"inner": {"lr": 0.5, "name": "abc"}, "steps": 20}
    with pytest.raises(ConfigError, match="inner.bogus"):
        from_dict(_Outer, {"inner": {"bogus": 1}})
    with pytest.raises(ConfigError, match="steps"):
        from_dict(_Outer, {"steps": "many"})


def test_model_presets():
    base = DeltaLMConfig.preset("base")
    large = DeltaLMConfig.preset("large")
    assert (base.encoder_layers, base.decoder_blocks, base.d_model, base.vocab_size) == (12, 6, 768, 250_104)
    assert (large.encoder_layers, large.decoder_blocks, large.d_model) == (24, 12, 1024)
    assert not large.embedding_layer_norm and base.embedding_layer_norm
    with pytest.raises(ConfigError):
        DeltaLMConfig.preset("tiny", d_model=130, heads=4)


def test_shard_reader_zero_copy(tmp_path):
    docs = [[5, 6, 7], [], [8, 9]]
    path = tmp_path / "s.arrow"
    table = pa.table({"tokens": pa.array(docs, type=pa.list_(pa.int32()))}, schema=mono_schema("de"))
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    reader = ShardReader(path, expect_kind="mono")
    col = reader.tokens()
    assert reader.num_rows == 3
    assert [col.row(i).tolist() for i in range(3)] == docs
    assert not col.values.flags.owndata  # a view on the mapped file
    with pytest.raises(ShardError, match="parallel"):
        ShardReader(path, expect_kind="parallel")
    ppath = tmp_path / "p.arrow"
    ptable = pa.table(
        {"src": pa.array([[1, 2]], pa.list_(pa.int32())), "tgt": pa.array([[3]], pa.list_(pa.int32()))},
        schema=parallel_schema("en", "de"),
    )
    with pa.OSFile(str(ppath), "wb") as sink, ipc.new_file(sink, ptable.schema) as writer:
        writer.write_table(ptable)
    preader = ShardReader(ppath)
    assert preader.src().row(0).tolist() == [1, 2] and preader.tgt().row(0).tolist() == [3]
    bad = tmp_path / "bad.arrow"
    bad.write_bytes(b"not arrow")
    with pytest.raises(ShardError, match="bad.arrow"):
        ShardReader(bad)
