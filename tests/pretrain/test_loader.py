"""PretrainLoader: batch contract, coverage across simulated ranks, exact resume, refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from deltalm.config_tree import ConfigError
from deltalm.model.model import BATCH_KEYS
from deltalm.shard_format import (
    SHARD_TABLE_NAME,
    ShardError,
    ShardReader,
    load_manifest,
    write_dataset_manifest,
)
from deltalm.vocabulary import Vocabulary
from pretrain.data_config import PretrainDataConfig
from pretrain.loader import PretrainLoader, model_batch
from pretrain.objectives import corruption_lengths
from tests.pretrain.corpus import random_docs, reconstruct, unique_docs, write_dataset

VOCAB = Vocabulary(spm_size=200_000)
SENT = VOCAB.first_sentinel
EOS = VOCAB.eos


def make_config(path, **overrides) -> PretrainDataConfig:
    data = {"data_dirs": [str(path)], "prefetch": 0, **overrides}
    return PretrainDataConfig.from_dict(data)


def lengths_summing_to(rng, total: int, low: int, high: int) -> list[int]:
    """Random lengths in [low, high] (the last one may reach high + low) whose sum is ``total``."""
    lengths: list[int] = []
    while total - sum(lengths) > high:
        lengths.append(int(rng.integers(low, high)))
    rest = total - sum(lengths)
    if rest >= low or not lengths:
        lengths.append(rest)
    else:
        lengths[-1] += rest
    return lengths


def windows_in_global_order(batches_per_rank: list[list[dict]]) -> np.ndarray:
    """Undo the corruption and lay the windows out in global order: (micro-batch, rank, row)."""
    rows = []
    for k in range(len(batches_per_rank[0])):
        for rank_batches in batches_per_rank:
            b = rank_batches[k]
            for enc, tgt in zip(
                b["encoder_input_tokens"].numpy(), b["decoder_target_tokens"].numpy(), strict=True
            ):
                rows.append(reconstruct(enc, tgt, SENT, EOS))
    return np.concatenate(rows)


def split_at_eos(stream: np.ndarray) -> list[np.ndarray]:
    ends = np.nonzero(stream == EOS)[0]
    assert len(ends) and ends[-1] == len(stream) - 1
    return np.split(stream, ends + 1)[:-1]


def test_batch_contract_512_114(tmp_path):
    rng = np.random.default_rng(0)
    write_dataset(tmp_path, VOCAB, mono={"de": random_docs(rng, 40, 5, 900, 4, 50_000)}, rows_per_shard=15)
    loader = PretrainLoader(make_config(tmp_path, translation_ratio=0.0), VOCAB, micro_batch_size=4, seed=3)
    batch = next(iter(loader))
    assert set(batch) == {
        "encoder_input_tokens",
        "encoder_padding_mask",
        "decoder_input_tokens",
        "decoder_target_tokens",
        "decoder_loss_weights",
    }
    enc, tgt, dec = (
        batch["encoder_input_tokens"],
        batch["decoder_target_tokens"],
        batch["decoder_input_tokens"],
    )
    assert enc.shape == (4, 512) and tgt.shape == (4, 114) and dec.shape == (4, 114)
    assert str(enc.dtype) == "torch.int64" and str(batch["encoder_padding_mask"].dtype) == "torch.bool"
    assert bool(batch["encoder_padding_mask"].all()) and float(batch["decoder_loss_weights"].min()) == 1.0
    assert (dec[:, 0] == EOS).all() and (dec[:, 1:] == tgt[:, :-1]).all()
    assert (enc[:, -1] == EOS).all() and (tgt[:, -1] == EOS).all()
    assert int((enc == VOCAB.pad).sum()) == 0
    raw, _ = corruption_lengths(512, 0.15, 3.0)
    for e, t in zip(enc.numpy(), tgt.numpy(), strict=True):
        assert len(reconstruct(e, t, SENT)) == raw == 568
    loader.close()


def test_model_batch_on_a_known_example():
    inputs = np.array([[5, 6, SENT, 2], [7, SENT, 8, 2]], dtype=np.int32)
    targets = np.array([[SENT, 9, 2], [SENT, 10, 2]], dtype=np.int32)
    batch = model_batch(inputs, targets, eos=2)
    assert tuple(batch) == BATCH_KEYS
    assert batch["encoder_input_tokens"].dtype == torch.int64
    assert batch["encoder_input_tokens"].tolist() == inputs.tolist()
    assert batch["decoder_target_tokens"].dtype == torch.int64
    assert batch["decoder_target_tokens"].tolist() == targets.tolist()
    assert batch["decoder_input_tokens"].dtype == torch.int64
    assert batch["decoder_input_tokens"].tolist() == [[2, SENT, 9], [2, SENT, 10]]
    assert batch["encoder_padding_mask"].dtype == torch.bool and batch["encoder_padding_mask"].shape == (2, 4)
    assert bool(batch["encoder_padding_mask"].all())
    weights = batch["decoder_loss_weights"]
    assert weights.dtype == torch.float32 and weights.tolist() == [[1.0] * 3] * 2


def test_the_loader_builds_its_batches_with_model_batch(tmp_path, monkeypatch):
    import pretrain.loader as loader_module

    calls = []

    def spy(inputs, targets, eos):
        calls.append(eos)
        return {"spied": model_batch(inputs, targets, eos)}

    monkeypatch.setattr(loader_module, "model_batch", spy)
    rng = np.random.default_rng(0)
    write_dataset(tmp_path, VOCAB, mono={"de": random_docs(rng, 10, 5, 200, 4, 50_000)})
    loader = PretrainLoader(
        make_config(tmp_path, translation_ratio=0.0, input_length=24), VOCAB, micro_batch_size=2, seed=3
    )
    batch = loader.next_batch()
    loader.close()
    assert calls == [VOCAB.eos] and set(batch) == {"spied"}


def test_mono_epoch_covered_once_across_ranks(tmp_path):
    world, micro, batches = 3, 2, 7
    raw, _ = corruption_lengths(24, 0.15, 3.0)
    rng = np.random.default_rng(1)
    # Documents (+ one EOS each) filling exactly world * micro * batches windows: one epoch.
    units = lengths_summing_to(rng, world * micro * batches * raw, 2, 3 * raw)
    docs = unique_docs([n - 1 for n in units], 10)
    write_dataset(tmp_path, VOCAB, mono={"sw": docs}, rows_per_shard=9)
    config = make_config(tmp_path, translation_ratio=0.0, input_length=24)
    outputs = []
    for rank in range(world):
        loader = PretrainLoader(
            config, VOCAB, micro_batch_size=micro, seed=5, dp_rank=rank, dp_world_size=world
        )
        outputs.append([loader.next_batch() for _ in range(batches)])
        assert loader.state_dict()["cursors"] == {"sw": world * micro * batches}  # same state on every rank
        loader.close()
    stream = windows_in_global_order(outputs)
    pieces = split_at_eos(stream)
    assert len(pieces) == len(docs)  # exactly one epoch: every document once, whole and in one piece
    by_first = {int(d[0]): d for d in docs}
    seen = set()
    for piece in pieces:
        doc = by_first[int(piece[0])]
        assert np.array_equal(piece[:-1], doc)
        seen.add(int(doc[0]))
    assert len(seen) == len(docs)
    order = [int(p[0]) for p in pieces]
    assert order != sorted(order)  # the epoch is shuffled


@pytest.mark.parametrize("directions", ["both", "forward"])
def test_parallel_epoch_covers_each_pair_per_direction(tmp_path, directions):
    world, micro, batches = 2, 3, 5
    raw, _ = corruption_lengths(20, 0.5, 3.0)
    per_dir = world * micro * batches * raw // (2 if directions == "both" else 1)
    rng = np.random.default_rng(2)
    pairs, nxt, used = [], 10, 0
    while per_dir - used > 40:
        s, t = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        pairs.append((np.arange(nxt, nxt + s), np.arange(nxt + s, nxt + s + t)))
        nxt, used = nxt + s + t, used + s + t + 2
    rest = per_dir - used - 2
    if directions == "both" and (world * micro * batches * raw) % 2:
        pytest.skip("odd total")
    pairs.append((np.arange(nxt, nxt + rest // 2), np.arange(nxt + rest // 2, nxt + rest)))
    write_dataset(tmp_path, VOCAB, parallel={("en", "sw"): pairs}, rows_per_shard=11)
    config = make_config(
        tmp_path, translation_ratio=1.0, translation_input_length=20, translation_directions=directions
    )
    outputs = []
    for rank in range(world):
        loader = PretrainLoader(
            config, VOCAB, micro_batch_size=micro, seed=7, dp_rank=rank, dp_world_size=world
        )
        outputs.append([loader.next_batch() for _ in range(batches)])
        assert outputs[-1][0]["encoder_input_tokens"].shape == (micro, 20)
        loader.close()
    pieces = split_at_eos(windows_in_global_order(outputs))
    units = [
        (tuple(pieces[i][:-1].tolist()), tuple(pieces[i + 1][:-1].tolist())) for i in range(0, len(pieces), 2)
    ]
    forward = {(tuple(s.tolist()), tuple(t.tolist())) for s, t in pairs}
    reverse = {(t, s) for s, t in forward}
    assert sum(u in forward for u in units) == len(pairs)
    assert sum(u in reverse for u in units) == (len(pairs) if directions == "both" else 0)
    assert len(units) == len(pairs) * (2 if directions == "both" else 1)


def _mixed_dataset(path, seed=0):
    rng = np.random.default_rng(seed)
    docs = unique_docs([int(n) for n in rng.integers(1, 200, 120)], 10)
    half = len(docs) // 2
    src = unique_docs([int(n) for n in rng.integers(1, 20, 150)], 100_000)
    tgt = unique_docs([int(n) for n in rng.integers(1, 20, 150)], 150_000)
    return write_dataset(
        path,
        VOCAB,
        mono={"de": docs[:half], "fr": docs[half:]},
        parallel={("en", "de"): list(zip(src, tgt, strict=True))},
        rows_per_shard=25,
    )


def test_mixed_tasks_no_duplicates_and_probabilities_logged(tmp_path, caplog):
    _mixed_dataset(tmp_path)
    config = make_config(
        tmp_path, input_length=32, translation_input_length=24, translation_directions="forward"
    )
    seen: list[np.ndarray] = []
    shapes = set()
    with caplog.at_level("INFO", logger="pretrain.loader"):
        loaders = [
            PretrainLoader(config, VOCAB, micro_batch_size=3, seed=11, dp_rank=r, dp_world_size=2)
            for r in range(2)
        ]
    assert "span_corruption" in caplog.text and "p=" in caplog.text and "en-de" in caplog.text
    for _ in range(12):
        for loader in loaders:
            b = loader.next_batch()
            shapes.add((tuple(b["encoder_input_tokens"].shape), tuple(b["decoder_target_tokens"].shape)))
            for e, t in zip(
                b["encoder_input_tokens"].numpy(), b["decoder_target_tokens"].numpy(), strict=True
            ):
                seen.append(reconstruct(e, t, SENT))
    mono_targets = corruption_lengths(32, 0.15, 3.0)[1]
    assert shapes == {((3, 32), (3, mono_targets)), ((3, 24), (3, 24))}  # both tasks occur, each unpadded
    assert loaders[0].state_dict() == {
        **loaders[1].state_dict(),
        "cursors": loaders[0].state_dict()["cursors"],
    }
    assert loaders[0].state_dict()["cursors"] == loaders[1].state_dict()["cursors"]
    tokens = np.concatenate(seen)
    tokens = tokens[tokens != EOS]
    assert len(np.unique(tokens)) == len(tokens)  # less than an epoch of every stream: nothing repeats
    for loader in loaders:
        loader.close()


def test_resume_is_exact_with_prefetch(tmp_path):
    _mixed_dataset(tmp_path)
    config = make_config(tmp_path, input_length=32, translation_input_length=24, prefetch=3)
    kwargs = dict(micro_batch_size=4, seed=21, dp_rank=1, dp_world_size=2)
    full = PretrainLoader(config, VOCAB, **kwargs)
    expected = [full.next_batch() for _ in range(9)]
    full.close()

    first = PretrainLoader(config, VOCAB, **kwargs)
    for _ in range(5):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))  # JSON-able
    assert state["counter"] == 5  # batches handed out, not the prefetched ones
    first.close()

    resumed = PretrainLoader(config, VOCAB, **kwargs)
    resumed.load_state_dict(state)
    for want in expected[5:]:
        got = resumed.next_batch()
        for key in want:
            assert got[key].equal(want[key]), key
    # Rewinding a live loader works too (its prefetch thread is restarted from the loaded state).
    resumed.load_state_dict(state)
    assert resumed.next_batch()["encoder_input_tokens"].equal(expected[5]["encoder_input_tokens"])
    resumed.close()


def test_state_refusals(tmp_path):
    _mixed_dataset(tmp_path / "a", seed=0)
    _mixed_dataset(tmp_path / "b", seed=1)
    loader = PretrainLoader(make_config(tmp_path / "a", input_length=32), VOCAB, micro_batch_size=2, seed=1)
    loader.next_batch()
    state = loader.state_dict()
    other = PretrainLoader(make_config(tmp_path / "b", input_length=32), VOCAB, micro_batch_size=2, seed=1)
    with pytest.raises(ValueError, match=f"fingerprint {state['fingerprint']}"):
        other.load_state_dict(state)
    reseeded = PretrainLoader(make_config(tmp_path / "a", input_length=32), VOCAB, micro_batch_size=2, seed=2)
    with pytest.raises(ValueError, match="seed 1"):
        reseeded.load_state_dict(state)
    changed = PretrainLoader(
        make_config(tmp_path / "a", input_length=32, noise_density=0.2), VOCAB, micro_batch_size=2, seed=1
    )
    with pytest.raises(ValueError, match="data.noise_density"):
        changed.load_state_dict(state)
    for x in (loader, other, reseeded, changed):
        x.close()


def _one_line_error(exc_info, *needles):
    message = str(exc_info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def _first_data_error(directory, **overrides) -> pytest.ExceptionInfo:
    """Build a loader (which reads only the manifest) and draw batches until a shard problem surfaces."""
    loader = PretrainLoader(
        make_config(directory, **{"prefetch": 0, **overrides}), VOCAB, micro_batch_size=2, seed=0
    )
    with pytest.raises(ShardError) as exc_info:
        for _ in range(200):
            loader.next_batch()
    loader.close()
    return exc_info


def test_corrupt_and_mismatched_shards_refused(tmp_path):
    rng = np.random.default_rng(4)
    good = tmp_path / "good"
    write_dataset(good, VOCAB, mono={"de": random_docs(rng, 30, 5, 200, 4, 1000)}, rows_per_shard=10)
    shard = "de/shard-00001.arrow"

    def variant(name, edit_manifest=None, edit_file=None):
        d = tmp_path / name
        shutil.copytree(good, d)
        if edit_manifest:
            manifest = load_manifest(d)
            edit_manifest(manifest)
            write_dataset_manifest(d, manifest)
        if edit_file:
            edit_file(d / shard)
        return d

    def truncate(p):
        p.write_bytes(p.read_bytes()[:-50])

    def flip_token(p):  # same size, one token id changed: only the sha256 sees it
        with ShardReader(p) as reader:
            base = np.frombuffer(reader._source, dtype=np.uint8).ctypes.data
            at = reader.tokens().values[5:].ctypes.data - base
        data = bytearray(p.read_bytes())
        data[at] ^= 0x01
        p.write_bytes(bytes(data))

    def garbage(p):
        p.write_bytes(b"\0" * p.stat().st_size)

    def rows(m):  # a consistent manifest and table that lie about one shard
        m["streams"]["de"]["shards"][1]["rows"] += 1
        m["streams"]["de"]["rows"] += 1

    def kind(m):
        m["streams"]["de"]["kind"] = "parallel"

    def lang(m):
        m["streams"]["de"]["lang"] = "fr"

    cases = [
        (variant("trunc", edit_file=truncate), {}, "bytes"),
        (variant("flip", edit_file=flip_token), {"verify_sha256": True}, "sha256"),
        (variant("garbage", edit_file=garbage), {}, "not a readable Arrow shard"),
        (variant("rows", edit_manifest=rows), {}, "rows"),
        (variant("kind", edit_manifest=kind), {"translation_ratio": 1.0}, "expected parallel"),
        (variant("lang", edit_manifest=lang), {}, "deltalm.lang='de'"),
        (variant("missing", edit_file=lambda p: p.unlink()), {}, "missing"),
    ]
    for directory, extra, needle in cases:
        exc_info = _first_data_error(directory, **{"translation_ratio": 0.0, **extra})
        # Every shard is wrong in "kind" and "lang": the first one read is named.
        first_bad = shard if directory.name not in ("kind", "lang") else "de/shard-0000"
        _one_line_error(exc_info, str(directory / first_bad), needle)
    # The flipped token passes the cheap checks (same size, rows, tokens): hashing is what catches it.
    loader = PretrainLoader(
        make_config(tmp_path / "flip", translation_ratio=0.0, prefetch=0), VOCAB, micro_batch_size=2, seed=0
    )
    for _ in range(200):
        loader.next_batch()
    loader.close()
    # A table that does not match its manifest entry, or a stream whose tables do not sum to its totals.
    table = variant("table") / "de" / SHARD_TABLE_NAME
    table.write_bytes(table.read_bytes().replace(b'"rows":10', b'"rows":11', 1))
    _one_line_error(
        _first_data_error(table.parent.parent, translation_ratio=0.0), str(table), "corrupt table"
    )
    totals = variant("totals")
    manifest = json.loads((totals / "manifest.json").read_text())
    manifest["streams"]["de"]["tokens"] += 1
    (totals / "manifest.json").write_text(json.dumps(manifest))
    _one_line_error(_first_data_error(totals, translation_ratio=0.0), "stream de", "tokens")
    with pytest.raises(ShardError) as exc_info:
        PretrainLoader(make_config(tmp_path / "nowhere"), VOCAB, micro_batch_size=2, seed=0)
    _one_line_error(exc_info, "no manifest")
    with pytest.raises(ShardError) as exc_info:
        PretrainLoader(
            make_config(good, translation_ratio=0.0), Vocabulary(spm_size=1000), micro_batch_size=2, seed=0
        )
    _one_line_error(exc_info, "vocab_size")


def test_config_errors(tmp_path):
    rng = np.random.default_rng(5)
    write_dataset(tmp_path, VOCAB, mono={"de": random_docs(rng, 5, 5, 50, 4, 1000)})
    with pytest.raises(ConfigError) as exc_info:
        PretrainLoader(
            make_config(tmp_path), VOCAB, micro_batch_size=2, seed=0
        )  # default ratio 0.5, no pairs
    _one_line_error(exc_info, "data.translation_ratio", "parallel")
    with pytest.raises(ConfigError) as exc_info:
        PretrainDataConfig.from_dict({"data_dirs": [str(tmp_path)], "temperatur": 2.0})
    _one_line_error(exc_info, "data.temperatur")
    with pytest.raises(ConfigError):
        PretrainDataConfig.from_dict({"data_dirs": [str(tmp_path)], "translation_directions": "backward"})
    with pytest.raises(ConfigError):
        PretrainLoader(PretrainDataConfig(), VOCAB, micro_batch_size=2, seed=0)
    pairs = [(np.arange(5, 20), np.arange(30, 40))] * 20
    write_dataset(tmp_path / "p", VOCAB, parallel={("en", "de"): pairs})
    with pytest.raises(ConfigError) as exc_info:
        PretrainLoader(
            make_config(tmp_path / "p", translation_ratio=1.0, translation_input_length=512),
            VOCAB,
            micro_batch_size=2,
            seed=0,
        )
    _one_line_error(exc_info, "data.translation_input_length", "sentinels")


def test_tiny_stream_shorter_than_a_window(tmp_path):
    write_dataset(tmp_path, VOCAB, mono={"xx": [np.arange(10, 15)]})  # 6 tokens per epoch, 568 per window
    loader = PretrainLoader(make_config(tmp_path, translation_ratio=0.0), VOCAB, micro_batch_size=2, seed=0)
    b = loader.next_batch()
    stream = windows_in_global_order([[b]])
    assert np.array_equal(stream[:12], [10, 11, 12, 13, 14, 2] * 2)
    loader.close()


def test_releasing_mapped_pages_changes_nothing(tmp_path):
    _mixed_dataset(tmp_path)
    batches = {}
    for every in (0, 1):
        config = make_config(
            tmp_path, input_length=32, translation_input_length=24, release_pages_every=every
        )
        loader = PretrainLoader(config, VOCAB, micro_batch_size=3, seed=2)
        batches[every] = [loader.next_batch()["encoder_input_tokens"] for _ in range(6)]
        if every:
            from pretrain.token_stream import release_mapped_pages

            shards = loader.cache._open.values()
            assert any(release_mapped_pages(s.values[0]) for s in shards)  # a whole page or more, on Linux
            assert not loader.cache._touched  # what was read is released, in the shards read
        loader.close()
    assert all(a.equal(b) for a, b in zip(batches[0], batches[1], strict=True))


def test_shards_open_lazily_in_a_bounded_cache(tmp_path):
    rng = np.random.default_rng(12)
    write_dataset(
        tmp_path,
        VOCAB,
        mono={lang: random_docs(rng, 60, 5, 80, 4, 1000) for lang in ("de", "fr", "sw")},
        rows_per_shard=3,  # 20 shards a stream
    )
    batches = {}
    for capacity in (128, 2):
        config = make_config(tmp_path, translation_ratio=0.0, input_length=24, max_open_shards=capacity)
        loader = PretrainLoader(config, VOCAB, micro_batch_size=4, seed=3, dp_rank=1, dp_world_size=3)
        assert len(loader.cache) == 0 and all(s._table is None for s in loader.streams.values())
        batches[capacity] = [loader.next_batch()["encoder_input_tokens"] for _ in range(40)]
        assert loader.cache.peak <= capacity
        if capacity == 2:
            assert loader.cache.opened > 2  # evicted and reopened: same batches
        loader.close()
    assert all(a.equal(b) for a, b in zip(batches[128], batches[2], strict=True))


def test_same_stream_in_two_directories_is_one_stream(tmp_path):
    raw, _ = corruption_lengths(24, 0.15, 3.0)
    rng = np.random.default_rng(8)
    units = lengths_summing_to(rng, 10 * raw, 2, 2 * raw)
    docs = unique_docs([n - 1 for n in units], 10)
    write_dataset(tmp_path / "a", VOCAB, mono={"de": docs[:3]})
    write_dataset(tmp_path / "b", VOCAB, mono={"de": docs[3:]}, rows_per_shard=4)
    config = PretrainDataConfig.from_dict(
        {
            "data_dirs": [str(tmp_path / "a"), str(tmp_path / "b")],
            "translation_ratio": 0.0,
            "input_length": 24,
        }
    )
    loader = PretrainLoader(config, VOCAB, micro_batch_size=2, seed=0)
    stream = loader.streams["de"]
    assert stream.rows == len(docs) and stream.epoch_length == 10 * raw
    epoch = stream.windows(np.arange(10)).reshape(-1)
    assert sorted(epoch[epoch != EOS].tolist()) == sorted(np.concatenate(docs).tolist())
    assert np.array_equal(stream.windows(np.arange(10, 20)), stream.windows(np.arange(10, 20)))
    single = PretrainLoader(
        make_config(tmp_path / "a", translation_ratio=0.0), VOCAB, micro_batch_size=2, seed=0
    )
    assert single.fingerprint != loader.fingerprint
    loader.close()
    single.close()


def test_prefetch_error_surfaces_and_state_stays_exact(tmp_path):
    _mixed_dataset(tmp_path)
    config = make_config(tmp_path, input_length=32, translation_input_length=24, prefetch=2)
    reference = PretrainLoader(config, VOCAB, micro_batch_size=2, seed=4)
    expected = [reference.next_batch()["encoder_input_tokens"] for _ in range(4)]
    reference.close()

    loader = PretrainLoader(config, VOCAB, micro_batch_size=2, seed=4)
    real_produce, failed = loader.produce, []

    def flaky(state):
        if state.counter == 2 and not failed:
            failed.append(True)
            raise OSError("read error on shard")
        return real_produce(state)

    loader.produce = flaky
    assert loader.next_batch()["encoder_input_tokens"].equal(expected[0])
    assert loader.next_batch()["encoder_input_tokens"].equal(expected[1])
    with pytest.raises(OSError, match="read error"):
        loader.next_batch()
    assert loader.counter == 2
    assert loader.next_batch()["encoder_input_tokens"].equal(expected[2])  # retried from the exact state
    assert loader.next_batch()["encoder_input_tokens"].equal(expected[3])
    loader.close()
