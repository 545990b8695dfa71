"""data_prep throughput benchmark: end-to-end ``mono`` vs raw SentencePiece vs the Hugging Face datasets pipeline.

    .venv/bin/python -m benchmarks.data_prep              # full run: 100 MB and 1 GB inputs (a few minutes)
    .venv/bin/python -m benchmarks.data_prep --quick      # smoke run in seconds (no floors enforced)

All three read the same plain-text file (the bundled CC100-layout sample, repeated). ``raw spm`` is
``SentencePieceProcessor.Encode`` on batches of the same lines, one thread, timing only the Encode calls.
``mono`` is ``python -m data_prep mono`` end to end (read, validate, tokenize, write + fsync shards, manifest).
``datasets`` is ``load_dataset('text') → map(tokenize, batched, num_proc) → save_to_disk`` (pip install -r
benchmarks/requirements-bench.txt). Floors (full run): mono per worker ≥ 85% of raw spm, mono ≥ 3× datasets
with the same workers, peak RSS of mono flat (≤ 1.25×) when the input grows 10×.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data_prep" / "sample_corpus"
DATASETS_SCRIPT = r"""
import sys, shutil
import sentencepiece as spm
from datasets import load_dataset, disable_progress_bars
disable_progress_bars()
corpus, model, cache, out, workers = sys.argv[1:6]
sp = None
def tok(batch):
    global sp
    if sp is None:
        sp = spm.SentencePieceProcessor(model_file=model)
    return {"ids": sp.Encode(batch["text"], out_type=int, num_threads=1)}
ds = load_dataset("text", data_files=corpus, split="train", cache_dir=cache)
ds = ds.map(tok, batched=True, num_proc=int(workers) if int(workers) > 1 else None, remove_columns=["text"])
ds.save_to_disk(out)
"""


def make_corpus(path: Path, target_bytes: int) -> int:
    """Repeat the bundled mono sample (all languages, CC100 layout) up to ``target_bytes``."""
    text = b"".join(gzip.decompress(p.read_bytes()) for p in sorted((SAMPLE / "mono").glob("*.txt.gz")))
    if not text.endswith(b"\n\n"):
        text += b"\n" if text.endswith(b"\n") else b"\n\n"
    written = 0
    with open(path, "wb") as handle:
        while written < target_bytes:
            handle.write(text)
            written += len(text)
    return written


def raw_spm(corpus: Path, model: Path, unit: str = "document", block_bytes: int = 1 << 20) -> dict:
    """One thread of ``Encode(list)`` over ~1 MB batches of the corpus: documents (paragraphs joined by a
    space, exactly the strings ``mono`` encodes) or, for reference, the individual non-blank lines."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    encode_s, encode_cpu, nbytes, tokens = 0.0, 0.0, 0, 0
    with open(corpus, "rb") as handle:
        pending = b""
        while True:
            chunk = handle.read(block_bytes)
            data = pending + chunk
            if not data:
                break
            cut = data.rfind(b"\n\n") + 2 if chunk else len(data)
            if cut <= 1:  # no document boundary yet
                pending = data
                continue
            data, pending = data[:cut], data[cut:]
            nbytes += len(data)
            text = data.decode("utf-8")
            if unit == "document":
                batch = [d.replace("\n", " ") for d in text.split("\n\n") if d.strip()]
            else:
                batch = [line for line in text.split("\n") if line.strip()]
            t0, c0 = time.perf_counter(), time.process_time()
            ids = sp.Encode(batch, out_type=int, num_threads=1)
            encode_s += time.perf_counter() - t0
            encode_cpu += time.process_time() - c0
            tokens += sum(map(len, ids))
            if not chunk:
                break
    return {"wall_s": encode_s, "cpu_s": encode_cpu, "bytes": nbytes, "tokens": tokens, "peak_rss": None}


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; wall time, CPU time of the whole process tree, peak total RSS of the tree."""
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    out, err = proc.communicate()
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed ({' '.join(cmd[:4])} ...): {err.strip().splitlines()[-1:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss": peak, "stdout": out}


def run_mono(corpus: Path, model: Path, out: Path, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "data_prep", "mono", "--spm", str(model), "--lang", "xx", "--output", str(out),
           "--workers", str(workers), "--no-progress", str(corpus)]  # fmt: skip
    result = timed(cmd, env=dict(os.environ, PYTHONPATH=str(REPO)))
    shutil.rmtree(out, ignore_errors=True)
    return result


def run_datasets(corpus: Path, model: Path, work: Path, workers: int) -> dict:
    cache, out = work / "hf-cache", work / "hf-out"
    for p in (cache, out):
        shutil.rmtree(p, ignore_errors=True)
    result = timed(
        [sys.executable, "-c", DATASETS_SCRIPT, str(corpus), str(model), str(cache), str(out), str(workers)]
    )
    for p in (cache, out):
        shutil.rmtree(p, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, tiny model, no floors (smoke test)")
    parser.add_argument("--mb", type=float, default=100.0, help="small input size in MB (default 100)")
    parser.add_argument("--scale", type=int, default=10, help="large input = scale × small (default 10)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="best of N for the small-input timings")
    parser.add_argument("--hf-repeats", type=int, default=2, help="best of N for the datasets pipeline")
    parser.add_argument("--spm", help="SentencePiece model (default: train the demo's 8k model)")
    parser.add_argument("--no-datasets", action="store_true", help="skip the Hugging Face datasets pipeline")
    parser.add_argument("--workdir", help="scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.quick:
        args.mb, args.scale, args.repeats, args.hf_repeats = min(args.mb, 2.0), min(args.scale, 3), 1, 1
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-data_prep-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> int:
    model = Path(args.spm) if args.spm else None
    if model is None:
        vocab, extra = ("512", ["--input-sentence-size", "8000"]) if args.quick else ("8000", [])
        inputs = sorted((SAMPLE / "mono").glob("*.txt.gz")) + sorted((SAMPLE / "parallel").glob("train.*"))
        if args.quick:
            inputs = [SAMPLE / "mono" / "en.txt.gz", SAMPLE / "mono" / "de.txt.gz"]
        t = timed([sys.executable, "-m", "data_prep", "train-spm", "--vocab-size", vocab, *extra, "--output",
                   str(work / "spm"), *map(str, inputs)])  # fmt: skip
        model = work / "spm.model"
        print(f"trained {model} (vocab {vocab}) in {t['wall_s']:.1f}s", flush=True)
    small, large = work / "small.txt", work / "large.txt"
    small_bytes = make_corpus(small, int(args.mb * 1e6))
    large_bytes = make_corpus(large, small_bytes * args.scale)
    use_datasets = not args.no_datasets
    if use_datasets:
        try:
            importlib.metadata.version("datasets")
        except importlib.metadata.PackageNotFoundError:
            print("datasets not installed (pip install -r benchmarks/requirements-bench.txt): skipped")
            use_datasets = False

    # Interleaved repeats (raw, mono per worker count, datasets per worker count, then again), best of each:
    # a drift in the machine's speed during the run then hits every pipeline alike.
    runs: dict[str, list[dict]] = {}
    jobs = [("raw", lambda: raw_spm(small, model))]
    jobs += [(f"mono{w}", lambda w=w: run_mono(small, model, work / "out", w)) for w in args.workers]
    if use_datasets:
        jobs += [(f"hf{w}", lambda w=w: run_datasets(small, model, work, w)) for w in args.workers]
    for r in range(args.repeats):
        for name, fn in jobs:
            if name.startswith("hf") and r >= args.hf_repeats:
                continue
            runs.setdefault(name, []).append(fn())
    fastest = {name: min(results, key=lambda x: x["wall_s"]) for name, results in runs.items()}
    raw = fastest["raw"]
    rows = [("raw spm Encode, documents", 1, small_bytes, raw)]
    rows.append(("raw spm Encode, lines (info)", 1, small_bytes, raw_spm(small, model, unit="line")))
    mono = {w: fastest[f"mono{w}"] for w in args.workers}
    hf = {w: fastest[f"hf{w}"] for w in args.workers if f"hf{w}" in fastest}
    for w in args.workers:
        rows.append(("data_prep mono", w, small_bytes, mono[w]))
        if w in hf:
            rows.append(("HF datasets text→map→save", w, small_bytes, hf[w]))
    wmax = max(args.workers)
    big = run_mono(large, model, work / "out", wmax)
    rows.append((f"data_prep mono ({args.scale}× input)", wmax, large_bytes, big))

    print()
    print(f"machine: {platform.machine()} {psutil.cpu_count()} CPUs, {platform.python_version()}, "
          f"sentencepiece {importlib.metadata.version('sentencepiece')}, pyarrow {importlib.metadata.version('pyarrow')}")  # fmt: skip
    header = (
        f"| {'pipeline':<30} | workers | input MB | wall s | MB/s | MB/s/worker | MB/CPU-s | peak RSS MB |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, w, nbytes, r in rows:
        mbs = nbytes / r["wall_s"] / 1e6
        rss = f"{r['peak_rss'] / 1e6:,.0f}" if r["peak_rss"] else "-"
        print(f"| {name:<30} | {w:>7} | {nbytes / 1e6:>8,.1f} | {r['wall_s']:>6.1f} | {mbs:>4.1f} | "
              f"{mbs / w:>11.2f} | {nbytes / max(r['cpu_s'], 1e-9) / 1e6:>8.2f} | {rss:>11} |")  # fmt: skip

    # Per-worker efficiency in CPU time (robust on a shared machine): MB per CPU-second of the whole mono
    # process tree (parent included) against MB per CPU-second inside raw Encode calls.
    raw_rate = small_bytes / raw["cpu_s"]
    checks = []
    for w in args.workers:
        rate = small_bytes / mono[w]["cpu_s"]
        checks.append((f"mono MB/CPU-s (w={w}) / raw spm MB/CPU-s", rate / raw_rate, 0.85, True))
        checks.append((f"mono MB/s per worker (w={w}) / raw spm MB/s, wall", small_bytes / mono[w]["wall_s"] / w
                       / (small_bytes / raw["wall_s"]), 0.85, False))  # fmt: skip
        if w in hf:
            checks.append((f"mono / datasets, wall (w={w})", hf[w]["wall_s"] / mono[w]["wall_s"], 3.0, True))
            checks.append((f"mono / datasets, CPU (w={w})", hf[w]["cpu_s"] / mono[w]["cpu_s"], 3.0, False))
    checks.append((f"mono MB/CPU-s on the {args.scale}× input (w={wmax}; start-up amortized) / raw spm MB/CPU-s",
                   large_bytes / big["cpu_s"] / raw_rate, 0.85, False))  # fmt: skip
    checks.append((f"peak RSS {args.scale}× input / 1× input (w={wmax})", big["peak_rss"] / mono[wmax]["peak_rss"],
                   1.25, True))  # fmt: skip
    failed = False
    print()
    for name, value, floor, enforced in checks:
        if "RSS" in name:
            ok = value <= floor
            verdict = f"{value:.2f} (ceiling {floor})"
        else:
            ok = value >= floor
            verdict = f"{value:.2f} (floor {floor})"
        tag = "PASS" if ok else ("FAIL" if enforced else "info")
        print(f"{tag:>4}  {name}: {verdict}")
        failed |= enforced and not ok
    if args.quick:
        print("(quick run: sizes too small for the floors to mean anything; not enforced)")
        return 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
