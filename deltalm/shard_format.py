"""The on-disk contract between data_prep and the loaders (docs/design.md#shards).

A dataset directory holds ``manifest.json`` and one sub-directory per stream:
``LANG/shard-00000.arrow`` for monolingual text, ``SRC-TGT/shard-00000.arrow`` for parallel text.
Shards are uncompressed Arrow IPC *files*, memory-mapped and read through numpy views of the list
offsets and values buffers (zero copy). A shard exists for readers only once the manifest lists it.

Mono schema: ``tokens: list<int32>`` (one row a document, no EOS stored).
Parallel schema: ``src: list<int32>``, ``tgt: list<int32>`` (no EOS stored).
Schema metadata (bytes keys): ``deltalm.kind`` (``mono``/``parallel``), ``deltalm.format_version``,
``deltalm.lang`` or ``deltalm.src_lang``/``deltalm.tgt_lang``.

Manifest (``manifest.json``, written atomically; keys sorted)::

    {"format_version": 1,
     "tokenizer": {"spm_sha256", "spm_size", "vocab_size", "num_sentinels"},   # Vocabulary.fingerprint()
     "streams": {
       "de":    {"kind": "mono", "lang": "de", "rows", "tokens", "bytes",
                 "shards": [{"path": "de/shard-00000.arrow", "rows", "tokens", "bytes", "sha256"}, ...],
                 "inputs": [{"path", "bytes", "sha256"}], "skipped": {reason: count},
                 "skip_samples": ["file:line: reason", ...]},
       "en-de": {"kind": "parallel", "src_lang": "en", "tgt_lang": "de", "rows",
                 "tokens" (src + tgt), "src_tokens", "tgt_tokens", "bytes", "shards": [...], ...}},
     "languages": {"de": {"rows", "tokens"}, ...},     # totals over streams (parallel counts both sides)
     "commands": ["python -m data_prep mono ...", ...]}

Written by data_prep as well (readers may ignore them): per stream ``shard_size``; per parallel shard
``src_tokens``/``tgt_tokens``; per input ``format``, ``done``, ``rows``, ``tokens``, ``shards``,
``bad_input`` ({counts, samples}), ``tgt_path``/``tgt_bytes``/``tgt_sha256`` for two aligned files, and
``resume`` (null once done): the block (decompressed ``offset``, ``line``) where the last listed shard ended,
``skip_rows`` of that block already in shards, and the bad-input counts as of that block.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ShardError(ValueError):
    """A shard or manifest that does not match the contract (message names the file)."""


def mono_schema(lang: str) -> pa.Schema:
    return pa.schema(
        [pa.field("tokens", pa.list_(pa.int32()), nullable=False)],
        metadata={
            "deltalm.kind": "mono",
            "deltalm.lang": lang,
            "deltalm.format_version": str(FORMAT_VERSION),
        },
    )


def parallel_schema(src_lang: str, tgt_lang: str) -> pa.Schema:
    return pa.schema(
        [
            pa.field("src", pa.list_(pa.int32()), nullable=False),
            pa.field("tgt", pa.list_(pa.int32()), nullable=False),
        ],
        metadata={
            "deltalm.kind": "parallel",
            "deltalm.src_lang": src_lang,
            "deltalm.tgt_lang": tgt_lang,
            "deltalm.format_version": str(FORMAT_VERSION),
        },
    )


def stream_name(
    kind: str, lang: str | None = None, src_lang: str | None = None, tgt_lang: str | None = None
) -> str:
    """Directory / manifest key of a stream: ``de`` for mono, ``en-de`` for parallel."""
    return lang if kind == "mono" else f"{src_lang}-{tgt_lang}"


def load_manifest(directory: str | Path) -> dict:
    """Read ``DIR/manifest.json``; a missing or unreadable manifest is a :class:`ShardError`."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ShardError(f"{path}: no manifest (not a data_prep dataset directory)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ShardError(f"{path}: unreadable manifest ({exc})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ShardError(
            f"{path}: format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    return manifest


def manifest_fingerprint(manifest: dict) -> str:
    """sha256 over what determines the token streams: tokenizer and every shard's path/rows/sha256."""
    shards = []
    for name in sorted(manifest.get("streams", {})):
        for shard in manifest["streams"][name]["shards"]:
            shards.append((name, shard["path"], shard["rows"], shard["sha256"]))
    payload = json.dumps({"tokenizer": manifest.get("tokenizer"), "shards": shards}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class ListColumn:
    """A ``list<int32>`` column as two numpy views: row i is ``values[offsets[i]:offsets[i+1]]``."""

    offsets: np.ndarray  # int64 [rows + 1], absolute into values
    values: np.ndarray  # int32 view on the mapped file

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _list_column_views(column: pa.Array, path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    if column.null_count:
        raise ShardError(f"{path}: column {name!r} has nulls")
    (
        _validity,
        offsets_buf,
    ) = column.buffers()[:2]
    values = column.values
    value_bufs = values.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=len(column) + 1 + column.offset)[
        column.offset :
    ]
    vals = np.frombuffer(value_bufs[1], dtype=np.int32, count=len(values) + values.offset)[values.offset :]
    return offsets, vals


class ShardReader:
    """Memory-mapped, zero-copy access to one shard. Opening it reads only the Arrow footer."""

    def __init__(self, path: str | Path, expect_kind: str | None = None):
        import pyarrow.ipc as ipc

        self.path = Path(path)
        try:
            self._source = pa.memory_map(str(self.path), "r")
            self._reader = ipc.open_file(self._source)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ShardError(f"{self.path}: not a readable Arrow shard ({exc})") from None
        meta = {k.decode(): v.decode() for k, v in (self._reader.schema.metadata or {}).items()}
        self.metadata = meta
        self.kind = meta.get("deltalm.kind")
        if self.kind not in ("mono", "parallel"):
            raise ShardError(f"{self.path}: schema metadata lacks deltalm.kind")
        if expect_kind is not None and self.kind != expect_kind:
            raise ShardError(f"{self.path}: is a {self.kind} shard, expected {expect_kind}")
        names = ["tokens"] if self.kind == "mono" else ["src", "tgt"]
        if self._reader.schema.names != names:
            raise ShardError(f"{self.path}: columns {self._reader.schema.names}, expected {names}")
        self.columns: dict[str, ListColumn] = {}
        batches = [self._reader.get_batch(i) for i in range(self._reader.num_record_batches)]
        for name in names:
            offsets_parts, values_parts, base = [], [], 0
            for batch in batches:
                offsets, values = _list_column_views(batch.column(name), self.path, name)
                offsets_parts.append(
                    offsets[:-1].astype(np.int64) - offsets[0] + base if len(batches) > 1 else offsets
                )
                values_parts.append(values[offsets[0] : offsets[-1]] if len(batches) > 1 else values)
                base += int(offsets[-1] - offsets[0])
            if len(batches) == 1:
                # Single record batch (what data_prep writes): pure zero-copy views.
                offsets = offsets_parts[0].astype(np.int64) - int(offsets_parts[0][0])
                values = values_parts[0][int(offsets_parts[0][0]) :]
            elif not batches:
                offsets, values = np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32)
            else:
                # Several batches: the offsets are rebuilt (small); values concatenate (copies) — avoid.
                offsets = np.concatenate(offsets_parts + [np.array([base], dtype=np.int64)])
                values = np.concatenate(values_parts)
            self.columns[name] = ListColumn(offsets, values)

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values())))

    def tokens(self) -> ListColumn:
        return self.columns["tokens"]

    def src(self) -> ListColumn:
        return self.columns["src"]

    def tgt(self) -> ListColumn:
        return self.columns["tgt"]

    def close(self) -> None:
        self.columns.clear()
        self._reader = None
        self._source.close()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
