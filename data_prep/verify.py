"""``verify DIR``: re-check every shard against ``DIR/manifest.json`` and the streams' shard tables.

Per stream: the table's first ``num_shards`` entries hash to ``shards_sha256``, the totals equal the sum of
its shards, no unfinished input or command (``.progress.json``, table lines past ``num_shards``). Per shard:
present, size, sha256, readable Arrow with the stream's schema and languages, one record batch, row and token
counts, every id in ``[0, vocab_size)``. Each problem is one line naming the shard (or stream) and what is
wrong.

The shard checks run in a process pool over all cores, fed stream by stream and shard by shard (results in
manifest order), so memory stays at one stream's table plus a bounded window of shards in flight.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from deltalm.shard_format import (
    MANIFEST_NAME,
    SHARD_TABLE_NAME,
    ShardError,
    ShardReader,
    load_manifest,
    load_shard_table,
    read_table_lines,
)
from deltalm.vocabulary import file_sha256

from .manifest import PROGRESS_NAME


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def check_shard(task: tuple[str, dict, dict, int]) -> str | None:
    """One shard's problem line, or None; ``task`` is (root, stream, shard entry, vocab_size)."""
    root, stream, shard, vocab_size = task
    path = Path(root) / shard["path"]
    if not path.is_file():
        return f"{path}: missing"
    size = path.stat().st_size
    if size != shard["bytes"]:
        return f"{path}: {size} bytes, manifest says {shard['bytes']}"
    digest = file_sha256(path)
    if digest != shard["sha256"]:
        return f"{path}: sha256 mismatch (file {digest[:12]}…, manifest {shard['sha256'][:12]}…)"
    try:
        reader = ShardReader(path, expect_kind=stream["kind"])
    except ShardError as exc:
        return str(exc)
    try:
        if reader._reader.num_record_batches != 1:
            return f"{path}: {reader._reader.num_record_batches} record batches, expected 1"
        meta = reader.metadata
        keys = ("lang",) if stream["kind"] == "mono" else ("src_lang", "tgt_lang")
        for key in keys:
            if meta.get(f"deltalm.{key}") != stream[key]:
                return f"{path}: schema says {key}={meta.get(f'deltalm.{key}')!r}, stream is {stream[key]!r}"
        if reader.num_rows != shard["rows"]:
            return f"{path}: {reader.num_rows} rows, manifest says {shard['rows']}"
        tokens = {name: len(col.values) for name, col in reader.columns.items()}
        if sum(tokens.values()) != shard["tokens"]:
            return f"{path}: {sum(tokens.values())} tokens, manifest says {shard['tokens']}"
        for name in ("src", "tgt"):
            key = f"{name}_tokens"
            if key in shard and tokens.get(name) != shard[key]:
                return f"{path}: {tokens.get(name)} {name} tokens, manifest says {shard[key]}"
        for name, col in reader.columns.items():
            if len(col.values) and (int(col.values.min()) < 0 or int(col.values.max()) >= vocab_size):
                bad = col.values[(col.values < 0) | (col.values >= vocab_size)][0]
                return f"{path}: column {name} holds id {int(bad)} outside [0, {vocab_size})"
            if np.any(np.diff(col.offsets) < 0):
                return f"{path}: column {name} has decreasing offsets"
    finally:
        reader.close()
    return None


def _stream_problems(root: Path, name: str, stream: dict) -> tuple[list[str], list[dict]]:
    """Stream-level problems and the stream's shard entries (empty when the table is unusable)."""
    problems: list[str] = []
    try:
        shards = load_shard_table(root, name, stream)
    except ShardError as exc:
        return [str(exc)], []
    table = root / name / SHARD_TABLE_NAME
    if shards:
        _, lines = read_table_lines(table, len(shards))
        if lines > len(shards):
            problems.append(
                f"{table}: {lines - len(shards)} entries past the listed {len(shards)} "
                "(an unfinished data_prep command: rerun it)"
            )
    if (root / name / PROGRESS_NAME).exists():
        problems.append(
            f"stream {name}: an unfinished data_prep command left {root / name / PROGRESS_NAME} (rerun it)"
        )
    for key in ("rows", "tokens", "bytes"):
        total = sum(s[key] for s in shards)
        if stream.get(key) != total:
            problems.append(
                f"{root / MANIFEST_NAME}: stream {name}: {key}={stream.get(key)}, shards sum to {total}"
            )
    unfinished = [e["path"] for e in stream.get("inputs", []) if not e.get("done")]
    if unfinished:
        problems.append(f"stream {name}: unfinished input {unfinished[0]} (rerun the command that added it)")
    return problems, shards


def verify_dataset(directory: str | Path, workers: int | None = None) -> tuple[list[str], str]:
    """Return (problems, summary line). No problems means the dataset is sound.

    ``workers``: processes hashing and reading shards (default: every core this process may use)."""
    root = Path(directory)
    try:
        manifest = load_manifest(root, shards=False)
    except ShardError as exc:
        return [str(exc)], ""
    tokenizer = manifest.get("tokenizer") or {}
    vocab_size = tokenizer.get("vocab_size")
    if not isinstance(vocab_size, int) or vocab_size <= 0:
        return [f"{root}/{MANIFEST_NAME}: tokenizer.vocab_size missing"], ""
    streams = sorted(manifest.get("streams", {}).items())
    problems: list[str] = []
    counts = {"shards": 0, "rows": 0, "tokens": 0}

    def tasks() -> Iterator[tuple[str, dict, dict, int]]:
        for name, stream in streams:
            found, shards = _stream_problems(root, name, stream)
            problems.extend(found)
            summary = {k: v for k, v in stream.items() if k != "inputs"}
            counts["rows"] += stream.get("rows", 0)
            counts["tokens"] += stream.get("tokens", 0)
            for shard in shards:
                counts["shards"] += 1
                yield str(root), summary, shard, vocab_size

    workers = workers or default_workers()
    if workers == 1:
        results = map(check_shard, tasks())
        problems_from_shards = [p for p in results if p]
    else:
        with multiprocessing.Pool(workers) as pool:
            problems_from_shards = [p for p in pool.imap(check_shard, tasks(), chunksize=4) if p]
    # Stream-level lines first (they explain shard lines), then shards in manifest order.
    problems.extend(problems_from_shards)
    summary = f"{len(streams)} streams, {counts['shards']} shards, {counts['rows']:,} rows, {counts['tokens']:,} tokens"
    return problems, summary
