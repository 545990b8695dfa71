"""The on-disk contract between data_prep and the loaders.

A dataset directory holds ``manifest.json`` and one sub-directory per stream:
``LANG/shard-00000.arrow`` for monolingual text, ``SRC-TGT/shard-00000.arrow`` for parallel text.
Shards are uncompressed Arrow IPC *files*, memory-mapped and read through numpy views of the list
offsets and values buffers (zero copy). A shard exists for readers only once the manifest lists it.

Mono schema: ``tokens: list<int32>`` (one row a document, no EOS stored).
Parallel schema: ``src: list<int32>``, ``tgt: list<int32>`` (no EOS stored).
Schema metadata (bytes keys): ``deltalm.kind`` (``mono``/``parallel``), ``deltalm.format_version``,
``deltalm.lang`` or ``deltalm.src_lang``/``deltalm.tgt_lang``.

Manifest (``manifest.json``, written atomically; keys sorted)::

    {"format_version": 2,
     "tokenizer": {"spm_sha256", "spm_size", "vocab_size", "num_sentinels"},   # Vocabulary.fingerprint()
     "streams": {
       "de":    {"kind": "mono", "lang": "de", "rows", "tokens", "bytes",
                 "num_shards", "shards_sha256",                 # the stream's shard table, see below
                 "inputs": [{"path", "bytes", "sha256"}], "skipped": {reason: count},
                 "skip_samples": ["file:line: reason", ...]},
       "en-de": {"kind": "parallel", "src_lang": "en", "tgt_lang": "de", "rows",
                 "tokens" (src + tgt), "src_tokens", "tgt_tokens", "bytes", "num_shards", ...}},
     "languages": {"de": {"rows", "tokens"}, ...},     # totals over streams (parallel counts both sides)
     "commands": ["python -m data_prep mono ...", ...]}

Shard table (``STREAM/shards.jsonl``): one line per shard, in shard order, each a JSON object with sorted keys
and no spaces: ``{"bytes", "path": "de/shard-00000.arrow", "rows", "sha256", "tokens"}`` (parallel shards add
``src_tokens``/``tgt_tokens``). The table is append-only; the stream lists its first ``num_shards`` lines, and
``shards_sha256`` is the sha256 of exactly those bytes. Lines past ``num_shards`` belong to an unfinished
``data_prep`` command and are not part of the dataset. The manifest therefore costs O(streams) to read; a
stream's table is read only by whoever needs its shards (:func:`load_shard_table`).

Written by data_prep as well (readers may ignore them): per stream ``shard_size``; per input ``format``,
``done``, ``rows``, ``tokens``, ``shards``, ``bad_input`` ({counts, samples}), ``tgt_path``/``tgt_bytes``/
``tgt_sha256`` for two aligned files, and ``resume`` (null once done): the block (decompressed ``offset``,
``line``) where the last listed shard ended, ``skip_rows`` of that block already in shards, and the bad-input
counts as of that block.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
SHARD_TABLE_NAME = "shards.jsonl"
_SHARD_KEYS = frozenset(("path", "rows", "tokens", "bytes", "sha256"))


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


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text through temp file + fsync + rename (+ directory fsync); no temp file is left on failure."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes through temp file + fsync + rename (+ directory fsync); no temp file is left on failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: str | Path, obj: object) -> None:
    """Write JSON (sorted keys) atomically, see :func:`write_text_atomic`."""
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def fsync_dir(path: str | Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_manifest(directory: str | Path, shards: bool = True) -> dict:
    """Read ``DIR/manifest.json``; a missing or unreadable manifest is a :class:`ShardError`.

    With ``shards`` every stream gains ``"shards"``: its table as a list of dicts (:func:`load_shard_table`),
    which costs O(shards); without it only the manifest file is read (O(streams)).
    """
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ShardError(f"{path}: no manifest (not a data_prep dataset directory)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise ShardError(f"{path}: format_version {version!r}, expected {FORMAT_VERSION}")
    streams = manifest.get("streams")
    if not isinstance(streams, dict) or not all(isinstance(s, dict) for s in streams.values()):
        raise ShardError(f"{path}: 'streams' is not a mapping of stream records")
    for name, stream in streams.items():
        for key in ("num_shards", "shards_sha256", "kind"):
            if key not in stream:
                raise ShardError(f"{path}: stream {name} lacks {key!r}")
    if shards:
        for name, stream in streams.items():
            stream["shards"] = load_shard_table(directory, name, stream)
    return manifest


def shard_table_line(entry: dict) -> bytes:
    """The table line of one shard entry (sorted keys, no spaces, newline-terminated)."""
    return (json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def read_table_lines(path: Path, count: int) -> tuple[list[bytes], int]:
    """The first ``count`` complete lines of a shard table (each with its newline) and how many complete
    lines the file holds in all; raises OSError when unreadable."""
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    complete = len(lines) - 1  # the part after the last newline is empty or a torn line
    return [line + b"\n" for line in lines[: min(count, complete)]], complete


def _table_payload(directory: str | Path, name: str, stream: dict) -> tuple[Path, bytes, int]:
    """(table path, its first ``num_shards`` lines, num_shards), checked against ``shards_sha256``."""
    path = Path(directory) / name / SHARD_TABLE_NAME
    count = stream.get("num_shards")
    if not isinstance(count, int) or count < 0:
        raise ShardError(f"{Path(directory) / MANIFEST_NAME}: stream {name}: bad num_shards {count!r}")
    if count == 0:
        return path, b"", 0
    try:
        lines, _ = read_table_lines(path, count)
    except OSError as exc:
        raise ShardError(f"{path}: unreadable shard table ({exc.strerror or exc})") from None
    if len(lines) < count:
        raise ShardError(f"{path}: {len(lines)} entries, the manifest lists {count} (truncated table)")
    payload = b"".join(lines)
    if hashlib.sha256(payload).hexdigest() != stream.get("shards_sha256"):
        raise ShardError(
            f"{path}: sha256 of its first {count} entries differs from the manifest (corrupt table)"
        )
    return path, payload, count


def load_shard_table(directory: str | Path, name: str, stream: dict) -> list[dict]:
    """The ``num_shards`` entries of stream ``name``'s table as dicts, checked against ``shards_sha256``."""
    path, payload, count = _table_payload(directory, name, stream)
    if count == 0:
        return []
    try:
        entries = json.loads(b"[" + payload.replace(b"\n", b",")[:-1] + b"]")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: unreadable shard table ({exc})") from None
    for entry in entries:
        if type(entry) is not dict or not entry.keys() >= _SHARD_KEYS:
            raise ShardError(f"{path}: bad shard entry {entry!r}")
    return entries


_TABLE_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("rows", pa.int64()),
        ("tokens", pa.int64()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
    ]
)


def load_shard_columns(directory: str | Path, name: str, stream: dict) -> pa.Table:
    """The same entries as columns (``path``, ``rows``, ``tokens``, ``bytes``, ``sha256``), parsed by
    Arrow's JSON reader: no Python object per shard (what the loader keeps for a stream)."""
    import pyarrow.json as pa_json

    path, payload, count = _table_payload(directory, name, stream)
    if count == 0:
        return _TABLE_SCHEMA.empty_table()
    try:
        table = pa_json.read_json(
            pa.BufferReader(payload),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=max(len(payload), 1 << 20)),
            parse_options=pa_json.ParseOptions(
                explicit_schema=_TABLE_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ShardError(f"{path}: unreadable shard table ({str(exc).splitlines()[0]})") from None
    if table.num_rows != count or any(column.null_count for column in table.columns):
        raise ShardError(f"{path}: bad shard entries (a key is missing)")
    return table


def write_dataset_manifest(directory: str | Path, manifest: dict) -> None:
    """Write a manifest whose streams carry inline ``"shards"`` lists: one table per stream, then
    ``manifest.json`` without the lists (``num_shards``/``shards_sha256`` filled in). For tools and tests
    that build a dataset at once; data_prep appends to the tables shard by shard instead."""
    root = Path(directory)
    out = dict(manifest, streams={})
    for name, stream in manifest.get("streams", {}).items():
        entries = stream.get("shards", [])
        payload = b"".join(shard_table_line(e) for e in entries)
        (root / name).mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(root / name / SHARD_TABLE_NAME, payload)
        summary = {k: v for k, v in stream.items() if k != "shards"}
        summary.update(num_shards=len(entries), shards_sha256=hashlib.sha256(payload).hexdigest())
        out["streams"][name] = summary
    out["format_version"] = FORMAT_VERSION
    write_json_atomic(root / MANIFEST_NAME, out)


def manifest_fingerprint(manifest: dict) -> str:
    """sha256 over what determines the token streams: the tokenizer and every stream's shard table digest
    (which covers each shard's path, rows, tokens and sha256). O(streams)."""
    tables = [
        (name, stream["num_shards"], stream["shards_sha256"])
        for name, stream in sorted(manifest.get("streams", {}).items())
    ]
    payload = json.dumps({"tokenizer": manifest.get("tokenizer"), "tables": tables}, sort_keys=True)
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


def _libc_mapping():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mmap_fn, munmap_fn = libc.mmap, libc.munmap
    except (OSError, AttributeError):
        return None
    mmap_fn.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int64,
    ]
    mmap_fn.restype = ctypes.c_void_p
    munmap_fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    munmap_fn.restype = ctypes.c_int
    return mmap_fn, munmap_fn


_LIBC_MAPPING = _libc_mapping()
_MAP_FAILED = ctypes.c_void_p(-1).value


class _Mapping:
    """Owner of one read-only file mapping; unmapped when the last buffer over it is gone."""

    def __init__(self, address: int, size: int):
        self.address, self.size = address, size

    def __del__(self) -> None:
        if _LIBC_MAPPING is not None and self.address:
            _LIBC_MAPPING[1](self.address, self.size)


def map_file(path: str | Path) -> pa.Buffer:
    """Map a whole file read-only and close its descriptor: the mapping holds no open file (Python's
    ``mmap`` keeps a duplicate descriptor per mapping). Falls back to ``pyarrow.memory_map`` where libc's
    ``mmap`` cannot be called. Raises OSError / ValueError (empty file)."""
    if _LIBC_MAPPING is None:
        return pa.memory_map(str(path), "r").read_buffer()
    fd = os.open(str(path), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise ValueError("empty file")
        address = _LIBC_MAPPING[0](None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, _MAP_FAILED):
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return pa.foreign_buffer(address, size, base=_Mapping(address, size))


class ShardReader:
    """Memory-mapped, zero-copy access to one shard. Opening it reads only the Arrow footer."""

    def __init__(self, path: str | Path, expect_kind: str | None = None):
        import pyarrow.ipc as ipc

        self.path = Path(path)
        try:
            self._source = map_file(self.path)
            self._reader = ipc.open_file(pa.BufferReader(self._source))
        except (OSError, ValueError, pa.ArrowInvalid) as exc:
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
        self.zero_copy = len(batches) == 1  # the column arrays are views on the mapping, not copies
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
        """Drop the views; the file is unmapped when no array taken from it is alive any more."""
        self.columns.clear()
        self._reader = None
        self._source = None

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
