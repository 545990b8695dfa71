"""Scale benchmark: costs of the loader and of data_prep's shard listing as the number of shards grows 100x.

1. Loader: a synthetic dataset of 100 languages x 10 shards (1,000) and 100 x 1,000 shards (100,000), small
   shards, read by a simulated rank 0 and last rank at world sizes 1 and 256 (``dp_rank`` / ``dp_world_size``
   passed to the loader, as the engine does). Each case runs in a fresh process: loader start-up time, peak
   RSS (``VmHWM``) and its growth over the process before the loader, peak open file descriptors (sampled
   after every micro-batch), peak shards mapped, and the loader's time per micro-batch (mean over every
   batch drawn, first reads of each stream's table and shards included). Times are CPU seconds of the
   loader's thread (``time.thread_time``; wall next to them), so other jobs on a shared machine distort
   them less; each case is the median of ``--repeats`` fresh processes, 1k and 100k interleaved. Ratio
   100k / 1k per measure; the floors: CPU start-up, CPU time per micro-batch and peak RSS within 1.5x, and
   peak open files under 256.
2. data_prep: adding one shard (:meth:`data_prep.manifest.Dataset.add_shard`: table line + fsync, progress
   record + fsync + rename) to a stream listing 5 shards and one listing 40,000 (median of repeats); floor:
   within 2x.

The shard files of a language are hard links to one file written for that language (same bytes, schema
and metadata; the loader opens and maps each path on its own), so 100,000 shards cost 100 small files of
disk. Sizes: 40 rows of ~120 tokens a shard.

Usage: ``.venv/bin/python -m benchmarks.scale [--quick] [--batches N] [--json PATH]`` (``--quick``: 10
languages x 2 / 20 shards, world sizes 1 and 4, a few batches, probes in this process: the smoke test run by
the test suite).
Exit status 1 when a floor is missed (full runs only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from deltalm.shard_format import FORMAT_VERSION, mono_schema, write_dataset_manifest
from deltalm.vocabulary import XLMR_SPM_SIZE, Vocabulary, file_sha256

VOCAB = Vocabulary(spm_size=XLMR_SPM_SIZE)
ROWS_PER_SHARD = 40
RATIO_FLOOR, OPEN_FILES_FLOOR, APPEND_FLOOR = 1.5, 256, 2.0


# ---------------------------------------------------------------------------- dataset
def write_dataset(root: Path, languages: int, shards_per_lang: int, seed: int = 0) -> int:
    """``languages`` mono streams of ``shards_per_lang`` shards each (hard links); returns the shard count."""
    rng = np.random.default_rng(seed)
    streams = {}
    for index in range(languages):
        lang = f"l{index:03d}"
        lengths = np.clip(rng.lognormal(4.6, 0.5, ROWS_PER_SHARD), 5, 2000).astype(np.int32)
        offsets = np.zeros(ROWS_PER_SHARD + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = rng.integers(4, VOCAB.spm_size, int(offsets[-1]), dtype=np.int32)
        column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
        (root / lang).mkdir(parents=True, exist_ok=True)
        source = root / lang / "source.arrow.bin"
        with pa.OSFile(str(source), "wb") as sink, ipc.new_file(sink, mono_schema(lang)) as writer:
            writer.write_batch(pa.record_batch([column], schema=mono_schema(lang)))
        entry = {"rows": ROWS_PER_SHARD, "tokens": int(offsets[-1]), "bytes": source.stat().st_size}
        entry["sha256"] = file_sha256(source)
        shards = []
        for k in range(shards_per_lang):
            rel = f"{lang}/shard-{k:05d}.arrow"
            os.link(source, root / rel)
            shards.append({"path": rel, **entry})
        streams[lang] = {
            "kind": "mono",
            "lang": lang,
            "rows": ROWS_PER_SHARD * shards_per_lang,
            "tokens": entry["tokens"] * shards_per_lang,
            "bytes": entry["bytes"] * shards_per_lang,
            "inputs": [],
            "shards": shards,
        }
    manifest = {"format_version": FORMAT_VERSION, "tokenizer": VOCAB.fingerprint(), "streams": streams}
    write_dataset_manifest(root, {**manifest, "languages": {}, "commands": []})
    return languages * shards_per_lang


# ---------------------------------------------------------------------------- loader probe (own process)
def _status(key: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def loader_probe(data_dir: Path, world: int, rank: int, batches: int, micro_batch: int) -> dict:
    from pretrain.data_config import PretrainDataConfig
    from pretrain.loader import PretrainLoader

    # (imports first: RSS growth is the loader's, not torch's)
    rss_before, files_before = _status("VmRSS"), _open_files()
    config = PretrainDataConfig.from_dict(
        {"data_dirs": [str(data_dir)], "translation_ratio": 0.0, "prefetch": 0, "input_length": 512}
    )
    t0, c0 = time.perf_counter(), time.thread_time()
    loader = PretrainLoader(
        config, VOCAB, micro_batch_size=micro_batch, seed=1, dp_rank=rank, dp_world_size=world
    )
    startup, startup_cpu = time.perf_counter() - t0, time.thread_time() - c0
    peak_files = _open_files()
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(batches):
        loader.next_batch()
        peak_files = max(peak_files, _open_files())
    per_batch, per_batch_cpu = (time.perf_counter() - t0) / batches, (time.thread_time() - c0) / batches
    result = {
        "startup_ms": startup_cpu * 1e3,
        "startup_wall_ms": startup * 1e3,
        "batch_ms": per_batch_cpu * 1e3,
        "batch_wall_ms": per_batch * 1e3,
        "peak_rss_mb": _status("VmHWM"),
        "rss_growth_mb": _status("VmHWM") - rss_before,
        "peak_open_files": peak_files,
        "files_before": files_before,
        "peak_mapped_shards": loader.cache.peak,
        "shards_opened": loader.cache.opened,
    }
    loader.close()
    return result


def probe_in_subprocess(data_dir: Path, world: int, rank: int, batches: int, micro_batch: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.scale", "--loader-probe", str(data_dir), "--world", str(world)]
    cmd += ["--rank", str(rank), "--batches", str(batches), "--micro-batch", str(micro_batch)]
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- data_prep append
def append_cost(root: Path, listed: int, repeats: int) -> float:
    """Median seconds of ``Dataset.add_shard`` on a stream already listing ``listed`` shards."""
    from data_prep.manifest import Dataset

    entry = {"path": "xx/shard-00000.arrow", "rows": 1, "tokens": 1, "bytes": 1, "sha256": "0" * 64}
    stream = {"kind": "mono", "lang": "xx", "rows": listed, "tokens": listed, "bytes": listed, "inputs": []}
    stream["shards"] = [dict(entry, path=f"xx/shard-{i:05d}.arrow") for i in range(listed)]
    manifest = {"format_version": FORMAT_VERSION, "tokenizer": VOCAB.fingerprint(), "streams": {"xx": stream}}
    write_dataset_manifest(root, {**manifest, "languages": {}, "commands": []})
    dataset = Dataset(root, VOCAB.fingerprint(), "xx", {"kind": "mono", "lang": "xx"}, "benchmark")
    times = []
    try:
        for i in range(repeats):
            t0 = time.perf_counter()
            dataset.add_shard(dict(entry, path=f"xx/shard-{listed + i:05d}.arrow"))
            times.append(time.perf_counter() - t0)
        dataset.save()
    finally:
        dataset.close()
    return statistics.median(times)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="10 languages, 2 / 20 shards each, world 1 and 4"
    )
    parser.add_argument("--batches", type=int, default=None, help="micro-batches per loader case")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="probes per case (median reported)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--loader-probe", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    batches = args.batches or (5 if args.quick else 500)
    if args.quick:
        args.repeats = 1
    if args.loader_probe is not None:
        result = loader_probe(args.loader_probe, args.world, args.rank, batches, args.micro_batch)
        print(json.dumps(result))
        return 0

    languages = 10 if args.quick else 100
    sizes = (2, 20) if args.quick else (10, 1000)
    worlds = (1, 4) if args.quick else (1, 256)
    results: dict = {"loader": {}, "append": {}}
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        dirs = {}
        for per_lang in sizes:
            t0 = time.perf_counter()
            dirs[per_lang] = Path(tmp) / f"s{per_lang}"
            total = write_dataset(dirs[per_lang], languages, per_lang)
            print(f"dataset: {languages} languages x {per_lang} shards = {total:,} shards "
                  f"({time.perf_counter() - t0:.1f} s to write)", flush=True)  # fmt: skip
        runs: dict[str, list[dict]] = {}
        for _ in range(args.repeats):  # 1k and 100k interleaved, so machine load hits both alike
            for world in worlds:
                for rank in sorted({0, world - 1}):
                    for per_lang in sizes:
                        key = f"w{world}r{rank}s{languages * per_lang}"
                        probe = loader_probe if args.quick else probe_in_subprocess
                        runs.setdefault(key, []).append(
                            probe(dirs[per_lang], world, rank, batches, args.micro_batch)
                        )
        for key, probes in runs.items():  # the median of each measure over the repeats
            results["loader"][key] = {m: statistics.median(p[m] for p in probes) for m in probes[0]}
        appended = {}
        for listed in (5, 40_000 if not args.quick else 4_000):
            appended[listed] = append_cost(Path(tmp) / f"append{listed}", listed, 10 if args.quick else 40)
        results["append"] = {str(k): v for k, v in appended.items()}

    small, large = (languages * s for s in sizes)
    columns = [
        ("startup_ms", "start-up CPU ms"),
        ("startup_wall_ms", "start-up wall ms"),
        ("batch_ms", "CPU ms / micro-batch"),
        ("batch_wall_ms", "wall ms / micro-batch"),
        ("peak_rss_mb", "peak RSS MB"),
        ("rss_growth_mb", "RSS growth MB"),
        ("peak_open_files", "peak open files"),
        ("peak_mapped_shards", "peak mapped shards"),
    ]
    print(f"\nloader, micro-batch {args.micro_batch}, {batches} micro-batches per case (first reads of every table "
          f"and shard included), input_length 512, median of {args.repeats} fresh processes")  # fmt: skip
    header = "| world | rank | measure | " + f"{small:,} shards | {large:,} shards | ratio |"
    print(header)
    print("|---|---|---|---:|---:|---:|")
    ok = True
    for world in worlds:
        for rank in sorted({0, world - 1}):
            a = results["loader"][f"w{world}r{rank}s{small}"]
            b = results["loader"][f"w{world}r{rank}s{large}"]
            for key, label in columns:
                ratio = b[key] / a[key] if a[key] else float("nan")
                print(f"| {world} | {rank} | {label} | {a[key]:,.2f} | {b[key]:,.2f} | {ratio:.2f}x |")
                if key in ("startup_ms", "batch_ms", "peak_rss_mb") and not ratio <= RATIO_FLOOR:
                    ok = False
                if key == "peak_open_files" and not b[key] < OPEN_FILES_FLOOR:
                    ok = False
    few, many = sorted(appended)
    append_ratio = appended[many] / appended[few]
    print(f"\ndata_prep add one shard (median): {appended[few] * 1e3:.2f} ms at {few} listed, "
          f"{appended[many] * 1e3:.2f} ms at {many:,} listed: {append_ratio:.2f}x")  # fmt: skip
    ok = ok and append_ratio <= APPEND_FLOOR
    print(f"floor start-up / micro-batch / peak RSS 100x shards within {RATIO_FLOOR}x, open files < "
          f"{OPEN_FILES_FLOOR}, add-a-shard within {APPEND_FLOOR}x: {'met' if ok else 'MISSED'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if args.quick or ok else 1


if __name__ == "__main__":
    sys.exit(main())
