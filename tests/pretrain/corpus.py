"""Tiny data_prep-layout datasets for the pre-training data tests (shards + manifest, written by hand)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from deltalm.shard_format import FORMAT_VERSION, mono_schema, parallel_schema, write_dataset_manifest
from deltalm.vocabulary import Vocabulary, file_sha256


def _write_shard(path: Path, schema: pa.Schema, columns: dict[str, list[np.ndarray]]) -> dict:
    arrays = [
        pa.array([np.asarray(r, dtype=np.int32) for r in columns[n]], type=pa.list_(pa.int32()))
        for n in schema.names
    ]
    batch = pa.record_batch(arrays, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, schema) as writer:
        writer.write_batch(batch)
    tokens = sum(len(r) for n in schema.names for r in columns[n])
    return {
        "rows": batch.num_rows,
        "tokens": tokens,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }


def write_dataset(
    root: str | Path,
    vocab: Vocabulary,
    mono: dict[str, list[np.ndarray]] | None = None,
    parallel: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] | None = None,
    rows_per_shard: int = 1000,
) -> Path:
    """Write ``root/manifest.json`` and ``root/<stream>/shard-NNNNN.arrow`` in the data_prep layout."""
    root = Path(root)
    streams: dict[str, dict] = {}
    languages: dict[str, dict] = {}
    for lang, docs in (mono or {}).items():
        shards = []
        for k, start in enumerate(range(0, len(docs), rows_per_shard)):
            rel = f"{lang}/shard-{k:05d}.arrow"
            info = _write_shard(
                root / rel, mono_schema(lang), {"tokens": docs[start : start + rows_per_shard]}
            )
            shards.append({"path": rel, **info})
        streams[lang] = {
            "kind": "mono",
            "lang": lang,
            "rows": len(docs),
            "tokens": sum(s["tokens"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards),
            "shards": shards,
        }
        lang_total = languages.setdefault(lang, {"rows": 0, "tokens": 0})
        lang_total["rows"] += len(docs)
        lang_total["tokens"] += streams[lang]["tokens"]
    for (src, tgt), pairs in (parallel or {}).items():
        name = f"{src}-{tgt}"
        shards = []
        for k, start in enumerate(range(0, len(pairs), rows_per_shard)):
            part = pairs[start : start + rows_per_shard]
            rel = f"{name}/shard-{k:05d}.arrow"
            info = _write_shard(
                root / rel,
                parallel_schema(src, tgt),
                {"src": [p[0] for p in part], "tgt": [p[1] for p in part]},
            )
            shards.append({"path": rel, **info})
        streams[name] = {
            "kind": "parallel",
            "src_lang": src,
            "tgt_lang": tgt,
            "rows": len(pairs),
            "tokens": sum(s["tokens"] for s in shards),
            "src_tokens": sum(len(p[0]) for p in pairs),
            "tgt_tokens": sum(len(p[1]) for p in pairs),
            "bytes": sum(s["bytes"] for s in shards),
            "shards": shards,
        }
    write_dataset_manifest(
        root,
        {
            "format_version": FORMAT_VERSION,
            "tokenizer": vocab.fingerprint(),
            "streams": streams,
            "languages": languages,
            "commands": ["tests/pretrain/corpus.py"],
        },
    )
    return root


def random_docs(
    rng: np.random.Generator, count: int, low: int, high: int, id_low: int, id_high: int
) -> list[np.ndarray]:
    """``count`` documents of random lengths in [low, high) with token ids in [id_low, id_high)."""
    lengths = rng.integers(low, high, count)
    return [rng.integers(id_low, id_high, n).astype(np.int32) for n in lengths]


def unique_docs(lengths: list[int], first_id: int) -> list[np.ndarray]:
    """Documents whose tokens are all distinct ids (consecutive from ``first_id``): coverage checks."""
    docs, nxt = [], first_id
    for n in lengths:
        docs.append(np.arange(nxt, nxt + n, dtype=np.int32))
        nxt += n
    return docs


def reconstruct(inputs: np.ndarray, targets: np.ndarray, first_sentinel: int, eos: int = 2) -> np.ndarray:
    """Undo span corruption of one example: the sentinels of ``inputs`` replaced by their target spans."""
    assert inputs[-1] == eos and targets[-1] == eos
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets[:-1].tolist():
        if t >= first_sentinel:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out: list[int] = []
    for t in inputs[:-1].tolist():
        out.extend(spans[t] if t >= first_sentinel else [t])
    return np.asarray(out, dtype=np.int32)
