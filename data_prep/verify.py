"""``verify DIR``: re-check every shard against ``DIR/manifest.json``.

Per shard: present, size, sha256, readable Arrow with the stream's schema and languages, one record batch,
row and token counts, every id in ``[0, vocab_size)``; per stream: totals equal the sum of its shards.
Each problem is one line naming the shard (or stream) and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deltalm.file_io import file_sha256
from deltalm.shard_format import ShardError, ShardReader, load_manifest


def _check_shard(root: Path, stream: dict, shard: dict, vocab_size: int) -> str | None:
    path = root / shard["path"]
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


def verify_dataset(directory: str | Path) -> tuple[list[str], str]:
    """Return (problems, summary line). No problems means the dataset is sound."""
    root = Path(directory)
    try:
        manifest = load_manifest(root)
    except ShardError as exc:
        return [str(exc)], ""
    problems: list[str] = []
    tokenizer = manifest.get("tokenizer") or {}
    vocab_size = tokenizer.get("vocab_size")
    if not isinstance(vocab_size, int) or vocab_size <= 0:
        return [f"{root}/manifest.json: tokenizer.vocab_size missing"], ""
    n_shards = n_rows = n_tokens = 0
    for name, stream in sorted(manifest.get("streams", {}).items()):
        for shard in stream.get("shards", []):
            problem = _check_shard(root, stream, shard, vocab_size)
            if problem:
                problems.append(problem)
            n_shards += 1
        for key in ("rows", "tokens", "bytes"):
            total = sum(s[key] for s in stream.get("shards", []))
            if stream.get(key) != total:
                problems.append(
                    f"{root}/manifest.json: stream {name}: {key}={stream.get(key)}, shards sum to {total}"
                )
        unfinished = [e["path"] for e in stream.get("inputs", []) if not e.get("done")]
        if unfinished:
            problems.append(
                f"stream {name}: unfinished input {unfinished[0]} (rerun the command that added it)"
            )
        n_rows += stream.get("rows", 0)
        n_tokens += stream.get("tokens", 0)
    summary = (
        f"{len(manifest.get('streams', {}))} streams, {n_shards} shards, {n_rows:,} rows, {n_tokens:,} tokens"
    )
    return problems, summary
