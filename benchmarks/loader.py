"""Pre-training loader benchmark (one CPU core, one run, one table).

1. End-to-end samples/s from memory-mapped Arrow shards to span-corrupted torch tensors (512 inputs / 114
   targets): ``PretrainLoader.next_batch`` vs. the Hugging Face T5 MLM collator algorithm (per-example
   ``random_spans_noise_mask`` of ``examples/flax/language-modeling/run_t5_mlm_flax.py``, re-implemented
   below) applied to the *same* raw windows, read by the same window reader.
2. Loader memory when the corpus grows 10x: each size is opened in a fresh process that reads the same
   number of batches; the growth of total RSS is the floor, split into anonymous memory (the loader's own
   arrays) and file-backed pages (the mapped shards, which ``data.release_pages_every`` drops from the
   process after each batch by default; with 0 they accumulate towards the part of the corpus touched).

Rates are samples per CPU-second of the benchmarking thread (``time.thread_time``) so other processes on a
shared machine do not distort them; wall-clock rates are printed next to them.

Usage: ``.venv/bin/python -m benchmarks.loader [--quick] [--batches N] [--batch-size B] [--docs-per-lang N]``
(``--quick``: a tiny corpus and a few batches, a smoke test in seconds). Exit status 1 when a floor is missed
(full runs only): >= 30,000 samples/s per core, >= 2.5x the HF-style collator, <= 50 MB RSS growth.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import torch

from deltalm.shard_format import FORMAT_VERSION, mono_schema, write_dataset_manifest
from deltalm.vocabulary import XLMR_SPM_SIZE, Vocabulary, file_sha256
from pretrain.data_config import PretrainDataConfig
from pretrain.loader import LoaderState, PretrainLoader

VOCAB = Vocabulary(spm_size=XLMR_SPM_SIZE)
LANGS = ("de", "fr", "sw", "zh")
FLOOR_RATE, FLOOR_SPEEDUP, FLOOR_RSS_MB = 30_000, 2.5, 50.0


# ---------------------------------------------------------------------------- corpus
def write_corpus(root: Path, docs_per_lang: int, rows_per_shard: int = 20_000, seed: int = 0) -> int:
    """Synthetic CC100-like corpus in the data_prep layout: log-normal document lengths (median ~200,
    mean ~300 tokens), skewed token ids. Returns the number of tokens."""
    rng = np.random.default_rng(seed)
    streams, total = {}, 0
    for lang in LANGS:
        shards = []
        for k, start in enumerate(range(0, docs_per_lang, rows_per_shard)):
            rows = min(rows_per_shard, docs_per_lang - start)
            lengths = np.clip(rng.lognormal(5.3, 0.9, rows), 5, 20_000).astype(np.int32)
            offsets = np.zeros(rows + 1, dtype=np.int32)
            np.cumsum(lengths, out=offsets[1:])
            values = (rng.random(int(offsets[-1]), dtype=np.float32) ** 3 * (XLMR_SPM_SIZE - 10) + 4).astype(
                np.int32
            )
            column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
            rel = f"{lang}/shard-{k:05d}.arrow"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            schema = mono_schema(lang)
            with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, schema) as writer:
                writer.write_batch(pa.record_batch([column], schema=schema))
            shards.append(
                {
                    "path": rel,
                    "rows": rows,
                    "tokens": int(offsets[-1]),
                    "bytes": path.stat().st_size,
                    "sha256": file_sha256(path),
                }
            )
        tokens = sum(s["tokens"] for s in shards)
        total += tokens
        streams[lang] = {
            "kind": "mono",
            "lang": lang,
            "rows": docs_per_lang,
            "tokens": tokens,
            "bytes": sum(s["bytes"] for s in shards),
            "shards": shards,
        }
    write_dataset_manifest(
        root,
        {
            "format_version": FORMAT_VERSION,
            "tokenizer": VOCAB.fingerprint(),
            "streams": streams,
            "commands": [],
        },
    )
    return total


# ---------------------------------------------------------------------------- the peer
class HFSpanCollator:
    """The T5 span-corruption collator of Hugging Face's flax example, per example, same algorithm:
    ``random_spans_noise_mask`` (shuffle-based segmentation, one example at a time), ``create_sentinel_ids``,
    ``filter_input_ids``, decoder inputs shifted right. Sentinels count up from ``first_sentinel`` (our
    vocabulary) instead of down from the end of the T5 vocabulary; nothing else differs."""

    def __init__(self, noise_density: float, mean_span: float, first_sentinel: int, eos: int, seed: int):
        self.noise_density, self.mean_span = noise_density, mean_span
        self.first_sentinel, self.eos = first_sentinel, eos
        np.random.seed(seed)  # the example uses the global numpy generator

    def random_spans_noise_mask(self, length: int) -> np.ndarray:
        orig_length = length
        num_noise_tokens = int(np.round(length * self.noise_density))
        num_nonnoise_tokens = length - num_noise_tokens
        num_noise_tokens = min(max(num_noise_tokens, 1), length - 1)
        num_noise_spans = int(np.round(min(num_noise_tokens, num_nonnoise_tokens) / self.mean_span))
        num_noise_spans = max(num_noise_spans, 1)
        num_nonnoise_tokens = length - num_noise_tokens

        def _random_segmentation(num_items: int, num_segments: int) -> np.ndarray:
            mask_indices = np.arange(num_items - 1) < (num_segments - 1)
            np.random.shuffle(mask_indices)
            first_in_segment = np.pad(mask_indices, [[1, 0]])
            segment_id = np.cumsum(first_in_segment)
            _, segment_length = np.unique(segment_id, return_counts=True)
            return segment_length

        noise_span_lengths = _random_segmentation(num_noise_tokens, num_noise_spans)
        nonnoise_span_lengths = _random_segmentation(num_nonnoise_tokens, num_noise_spans)
        interleaved = np.reshape(
            np.stack([nonnoise_span_lengths, noise_span_lengths], axis=1), [num_noise_spans * 2]
        )
        span_starts = np.cumsum(interleaved)[:-1]
        span_start_indicator = np.zeros((length,), dtype=np.int8)
        span_start_indicator[span_starts] = True
        span_num = np.cumsum(span_start_indicator)
        is_noise = np.equal(span_num % 2, 1)
        return is_noise[:orig_length]

    def create_sentinel_ids(self, mask_indices: np.ndarray) -> np.ndarray:
        start_indices = mask_indices - np.roll(mask_indices, 1, axis=-1) * mask_indices
        start_indices[:, 0] = mask_indices[:, 0]
        sentinel_ids = np.where(start_indices != 0, np.cumsum(start_indices, axis=-1), start_indices)
        sentinel_ids = np.where(sentinel_ids != 0, self.first_sentinel + sentinel_ids - 1, 0)
        sentinel_ids -= mask_indices - start_indices
        return sentinel_ids

    def filter_input_ids(self, input_ids: np.ndarray, sentinel_ids: np.ndarray) -> np.ndarray:
        batch_size = input_ids.shape[0]
        input_ids_full = np.where(sentinel_ids != 0, sentinel_ids, input_ids)
        input_ids = input_ids_full[input_ids_full >= 0].reshape((batch_size, -1))
        return np.concatenate([input_ids, np.full((batch_size, 1), self.eos, dtype=np.int32)], axis=-1)

    def __call__(self, input_ids: np.ndarray) -> dict[str, torch.Tensor]:
        batch_size, expanded_length = input_ids.shape
        mask_indices = np.asarray([self.random_spans_noise_mask(expanded_length) for _ in range(batch_size)])
        labels_mask = ~mask_indices
        input_ids_sentinel = self.create_sentinel_ids(mask_indices.astype(np.int8))
        labels_sentinel = self.create_sentinel_ids(labels_mask.astype(np.int8))
        inputs = self.filter_input_ids(input_ids, input_ids_sentinel)
        labels = self.filter_input_ids(input_ids, labels_sentinel)
        decoder_inputs = np.zeros_like(labels)
        decoder_inputs[:, 1:] = labels[:, :-1]
        decoder_inputs[:, 0] = self.eos
        enc = torch.from_numpy(inputs.astype(np.int64))
        tgt = torch.from_numpy(labels.astype(np.int64))
        return {
            "encoder_input_tokens": enc,
            "encoder_padding_mask": torch.ones(enc.shape, dtype=torch.bool),
            "decoder_input_tokens": torch.from_numpy(decoder_inputs.astype(np.int64)),
            "decoder_target_tokens": tgt,
            "decoder_loss_weights": torch.ones(tgt.shape, dtype=torch.float32),
        }


# ---------------------------------------------------------------------------- measurements
def make_loader(data_dir: Path, batch_size: int, release_pages_every: int | None = None) -> PretrainLoader:
    """The loader as training uses it (config defaults), minus the prefetch thread (on one core it would
    only interleave with the consumer); ``release_pages_every`` overrides the default when given."""
    data = {"data_dirs": [str(data_dir)], "translation_ratio": 0.0, "prefetch": 0}
    if release_pages_every is not None:
        data["release_pages_every"] = release_pages_every
    return PretrainLoader(PretrainDataConfig.from_dict(data), VOCAB, micro_batch_size=batch_size, seed=1234)


def timed(fn, batches: int) -> tuple[float, float]:
    """(CPU seconds of this thread, wall seconds) for ``batches`` calls of ``fn``."""
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    for _ in range(batches):
        fn()
    return time.thread_time() - cpu0, time.perf_counter() - wall0


def throughput(data_dir: Path, batches: int, batch_size: int) -> dict:
    loader = make_loader(data_dir, batch_size)
    for _ in range(3):  # warm-up: epoch permutations, page cache
        loader.next_batch()
    start = LoaderState(loader.counter, dict(loader.state_dict()["cursors"]))
    first = loader.next_batch()
    assert first["encoder_input_tokens"].shape == (batch_size, 512)
    assert first["decoder_target_tokens"].shape == (batch_size, 114)
    ours_cpu, ours_wall = timed(loader.next_batch, batches)
    # Pages kept mapped (release_pages_every=0): after warm-up nothing faults any more; same windows.
    warm = make_loader(data_dir, batch_size, release_pages_every=0)
    for _ in range(4):
        warm.next_batch()
    warm_cpu, warm_wall = timed(warm.next_batch, batches)
    warm.close()

    collator = HFSpanCollator(0.15, 3.0, VOCAB.first_sentinel, VOCAB.eos, seed=1234)
    state = start

    def peer() -> None:
        nonlocal state
        windows, _objective, state = loader.produce_windows(state)
        batch = collator(windows)
        assert batch["encoder_input_tokens"].shape == (batch_size, 512)

    peer()
    peer_cpu, peer_wall = timed(peer, batches)
    # The objective alone (windows already in memory), both implementations.
    windows = loader.produce_windows(start)[0]
    rng = np.random.default_rng(0)
    from pretrain.objectives import span_corruption_batch

    obj_cpu, _ = timed(
        lambda: span_corruption_batch(windows, rng, 0.15, 3.0, first_sentinel=VOCAB.first_sentinel), batches
    )
    hf_obj_cpu, _ = timed(lambda: collator(windows), max(1, batches // 4))
    loader.close()
    n = batches * batch_size
    return {
        "samples": n,
        "ours_rate": n / ours_cpu,
        "ours_wall_rate": n / ours_wall,
        "mapped_rate": n / warm_cpu,
        "mapped_wall_rate": n / warm_wall,
        "peer_rate": n / peer_cpu,
        "peer_wall_rate": n / peer_wall,
        "objective_rate": n / obj_cpu,
        "hf_objective_rate": max(1, batches // 4) * batch_size / hf_obj_cpu,
    }


def _rss() -> dict[str, float]:
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS", "RssAnon", "RssFile")):
                key, value = line.split(":")
                fields[key] = int(value.split()[0]) / 1024.0
    return fields


def rss_probe(data_dir: Path, batches: int, batch_size: int, release_pages_every: int | None) -> dict:
    """Run in a fresh process: RSS before opening the loader and after ``batches`` batches."""
    before = _rss()
    loader = make_loader(data_dir, batch_size, release_pages_every)
    for _ in range(batches):
        loader.next_batch()
    after = _rss()
    loader.close()
    return {key: after[key] - before[key] for key in after}


def probe_in_subprocess(
    data_dir: Path, batches: int, batch_size: int, release_pages_every: int | None
) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.loader", "--rss-probe", str(data_dir)]
    cmd += ["--batches", str(batches), "--batch-size", str(batch_size)]
    if release_pages_every is not None:
        cmd += ["--release-pages-every", str(release_pages_every)]
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def pin_one_core() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    torch.set_num_threads(1)
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny corpus, a few batches (smoke test)")
    parser.add_argument("--batches", type=int, default=None, help="timed batches per implementation")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--docs-per-lang", type=int, default=None, help="documents per language (1x corpus)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--rss-probe", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--release-pages-every", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    batches = args.batches or (4 if args.quick else 200)
    docs = args.docs_per_lang or (100 if args.quick else 10_000)
    if args.rss_probe is not None:
        pin_one_core()
        print(json.dumps(rss_probe(args.rss_probe, batches, args.batch_size, args.release_pages_every)))
        return 0

    cpu = pin_one_core()
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        small, large = Path(tmp) / "x1", Path(tmp) / "x10"
        small_tokens = write_corpus(small, docs)
        result = throughput(small, batches, args.batch_size)
        large_tokens = write_corpus(large, docs * 10, seed=1)
        rss_batches = max(2, batches // 4)
        rss_small = probe_in_subprocess(small, rss_batches, args.batch_size, None)
        rss_large = probe_in_subprocess(large, rss_batches, args.batch_size, None)
        mapped_small = mapped_large = None
        if not args.quick:
            mapped_small = probe_in_subprocess(small, rss_batches, args.batch_size, 0)
            mapped_large = probe_in_subprocess(large, rss_batches, args.batch_size, 0)
    speedup = result["ours_rate"] / result["peer_rate"]
    growth = {key: rss_large[key] - rss_small[key] for key in rss_small}
    rows = [
        ("corpus (1x)", f"{len(LANGS)} langs x {docs:,} docs, {small_tokens:,} tokens"),
        ("pinned to CPU", f"{cpu} (torch threads 1), batch {args.batch_size}, {batches} timed batches"),
        (
            "ours: loader end-to-end (defaults)",
            f"{result['ours_rate']:,.0f} samples/s/core ({result['ours_wall_rate']:,.0f} wall)",
        ),
        (
            "ours, pages kept mapped (release_pages_every=0)",
            f"{result['mapped_rate']:,.0f} samples/s/core ({result['mapped_wall_rate']:,.0f} wall)",
        ),
        (
            "HF-style collator end-to-end",
            f"{result['peer_rate']:,.0f} samples/s/core ({result['peer_wall_rate']:,.0f} wall)",
        ),
        ("speed-up (defaults vs HF-style)", f"{speedup:.2f}x"),
        (
            "objective only: ours / HF",
            f"{result['objective_rate']:,.0f} / {result['hf_objective_rate']:,.0f} samples/s",
        ),
        ("corpus (10x)", f"{large_tokens:,} tokens"),
        (
            "RSS after loader + batches, 1x / 10x (defaults)",
            f"+{rss_small['VmRSS']:.1f} / +{rss_large['VmRSS']:.1f} MB ({rss_batches} batches)",
        ),
        (
            "RSS growth 1x -> 10x (defaults)",
            f"{growth['VmRSS']:+.1f} MB (anonymous {growth['RssAnon']:+.1f}, file-backed {growth['RssFile']:+.1f})",
        ),
    ]
    if mapped_small is not None:
        mapped = {key: mapped_large[key] - mapped_small[key] for key in mapped_small}
        rows.append(
            (
                "RSS growth 1x -> 10x, release_pages_every=0",
                f"{mapped['VmRSS']:+.1f} MB (anonymous {mapped['RssAnon']:+.1f}, file-backed {mapped['RssFile']:+.1f})",
            )
        )
    width = max(len(k) for k, _ in rows)
    print("| measure | value |\n|---|---|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")
    print(f"(numpy {np.__version__}, torch {torch.__version__}, pyarrow {pa.__version__})")
    checks = {
        f">= {FLOOR_RATE:,} samples/s per core": result["ours_rate"] >= FLOOR_RATE,
        f">= {FLOOR_SPEEDUP}x the HF-style collator": speedup >= FLOOR_SPEEDUP,
        f"<= {FLOOR_RSS_MB:.0f} MB loader RSS growth": growth["VmRSS"] <= FLOOR_RSS_MB,
    }
    for name, ok in checks.items():
        print(f"floor {name}: {'PASS' if ok else 'FAIL'}")
    if args.json:
        payload = {
            **result,
            "speedup": speedup,
            "rss_small": rss_small,
            "rss_large": rss_large,
            "mapped_small": mapped_small,
            "mapped_large": mapped_large,
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0 if args.quick or all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
