"""Accumulates tokenized rows and writes shards of ``shard_size`` bytes (temp file, fsync, rename).

A shard closes at the first row that brings its payload (4 bytes a token + 4 bytes a row and column) to
``shard_size`` or more, so shard boundaries depend only on the row sequence, not on blocks or workers.
Each shard is ONE record batch in an uncompressed Arrow IPC file (zero-copy when memory-mapped), written with
direct I/O where the filesystem allows it (:mod:`data_prep.direct_file`).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from deltalm.file_io import fsync_dir

from .direct_file import DirectFile
from .errors import describe_os_error
from .tokenize_pool import BlockResult


@dataclass
class ShardInfo:
    path: str  # relative to the dataset directory
    rows: int
    tokens: int
    bytes: int
    sha256: str
    column_tokens: dict[str, int]
    rows_into_block: int  # rows of the block being added that this shard (and earlier ones) consumed

    def manifest_entry(self) -> dict:
        return {
            "path": self.path,
            "rows": self.rows,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


def shard_file_name(index: int) -> str:
    return f"shard-{index:05d}.arrow"


class ShardWriter:
    def __init__(
        self,
        root: Path,
        stream: str,
        schema: pa.Schema,
        shard_size: int,
        next_index: int,
        direct_io: bool = True,
    ):
        self.root = Path(root)
        self.direct_io = direct_io  # O_DIRECT shard files (see data_prep.direct_file)
        self.stream = stream
        self.schema = schema
        self.names = list(schema.names)
        self.shard_size = shard_size
        self.next_index = next_index
        # One growable buffer per column, reused shard after shard: the pending shard is held once (no
        # concatenation copy at write time) and untouched capacity costs no memory, so peak RSS is about one
        # shard whatever the input size.
        self._columns = {name: _ColumnBuffer(shard_size // 4) for name in self.names}
        self._pending_rows = 0
        self._pending_bytes = 0
        self._written = 0

    @property
    def has_pending(self) -> bool:
        return self._pending_rows > 0

    def add(self, result: BlockResult, on_shard: Callable[[ShardInfo], None]) -> int:
        """Add a block's rows; ``on_shard`` is called with each shard as soon as it is durable on disk.

        Returns the number of shards completed."""
        cols = result.columns
        n = result.rows
        if n == 0:
            return 0
        row_bytes = 4 * len(self.names) + 4 * sum(cols[name][1] for name in self.names)
        shards = 0
        start = 0
        while start < n:
            cum = self._pending_bytes + np.cumsum(row_bytes[start:])
            hit = int(np.searchsorted(cum, self.shard_size, side="left"))
            if hit >= n - start:  # the rest of the block fits below the shard size
                self._append(cols, start, n)
                self._pending_bytes = int(cum[-1])
                break
            end = start + hit + 1
            self._append(cols, start, end)
            on_shard(self._write(rows_into_block=end))
            shards += 1
            start = end
        return shards

    def _append(self, cols: dict[str, tuple[np.ndarray, np.ndarray]], start: int, end: int) -> None:
        for name, (values, lengths) in _slice(cols, self.names, start, end).items():
            self._columns[name].append(values, lengths)
        self._pending_rows += end - start

    def flush(self, rows_into_block: int = 0) -> ShardInfo | None:
        return self._write(rows_into_block) if self._pending_rows else None

    def _write(self, rows_into_block: int) -> ShardInfo:
        arrays, column_tokens = [], {}
        for name in self.names:
            values, lengths = self._columns[name].view()
            offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
            np.cumsum(lengths, out=offsets[1:])
            arrays.append(pa.ListArray.from_arrays(_int32_array(offsets), _int32_array(values)))
            column_tokens[name] = int(len(values))
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        name = shard_file_name(self.next_index)
        rel = f"{self.stream}/{name}"
        final = self.root / rel
        tmp = final.with_name(f".{name}.tmp")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with DirectFile(tmp, direct=self.direct_io) as handle:
                hashed = _HashingWriter(handle)  # the digest of the bytes as written: no read-back pass
                with ipc.new_file(hashed, self.schema) as writer:
                    writer.write_batch(batch)
                handle.commit()
            digest, nbytes = hashed.hexdigest(), handle.tell()
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise describe_os_error(exc, f"cannot write shard {final}") from None
        del arrays, batch
        for column in self._columns.values():
            column.clear()
        self._pending_rows, self._pending_bytes = 0, 0
        self.next_index += 1
        self._written += 1
        return ShardInfo(
            path=rel,
            rows=len(offsets) - 1,
            tokens=sum(column_tokens.values()),
            bytes=nbytes,
            sha256=digest,
            column_tokens=column_tokens,
            rows_into_block=rows_into_block,
        )


MADV_POPULATE_WRITE = 23  # Linux >= 5.14: fault a range in with one call (not in Python's mmap module)
POPULATE_STEP = 8 << 20  # bytes faulted in ahead of the writes


class _ColumnBuffer:
    """Token values of the pending shard in one int32 buffer (doubling when a long row overflows it).

    The buffer is an anonymous mapping whose pages are faulted in ``POPULATE_STEP`` bytes at a time, ahead of
    the writes, with ``madvise(MADV_POPULATE_WRITE)``: one call instead of a page fault per 4 KiB, which on a
    virtual machine cut the first shard's copying from 0.2 s to 0.03 s per 64 MB. Kernels without it fault
    pages in on first touch as usual.
    """

    def __init__(self, capacity: int):
        self._map, self.values = _anonymous_int32(max(capacity, 1024))
        self._populated = 0
        self.size = 0
        self.lengths: list[np.ndarray] = []

    def append(self, values: np.ndarray, lengths: np.ndarray) -> None:
        end = self.size + len(values)
        if end > len(self.values):
            grown_map, grown = _anonymous_int32(max(end, 2 * len(self.values)))
            grown[: self.size] = self.values[: self.size]
            self._map, self.values, self._populated = grown_map, grown, 4 * self.size
        if 4 * end > self._populated:
            self._populate(4 * end)
        self.values[self.size : end] = values
        self.size = end
        # A copy, never a view: the caller's arrays may live in a result slot that is reused once this returns.
        self.lengths.append(np.array(lengths, dtype=np.int64, copy=True))

    def _populate(self, upto: int) -> None:
        start = self._populated
        stop = min(max(upto, start + POPULATE_STEP), len(self._map))
        page = mmap.PAGESIZE
        start_page = start // page * page
        with contextlib.suppress(OSError, ValueError):  # an older kernel: pages fault in on first touch
            self._map.madvise(MADV_POPULATE_WRITE, start_page, stop - start_page)
        self._populated = stop

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int64)
        return self.values[: self.size], lengths

    def clear(self) -> None:
        self.size = 0
        self.lengths = []


def _anonymous_int32(n: int) -> tuple[mmap.mmap, np.ndarray]:
    memory = mmap.mmap(-1, 4 * n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return memory, np.frombuffer(memory, dtype=np.int32, count=n)


def _int32_array(values: np.ndarray) -> pa.Array:
    """Zero-copy int32 Arrow array over a numpy buffer (``pa.array`` on numpy would import pandas: ~1 s)."""
    values = np.ascontiguousarray(values, dtype=np.int32)
    return pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(values)])


def _slice(cols: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str], start: int, end: int) -> dict:
    out = {}
    for name in names:
        values, lengths = cols[name]
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        out[name] = (values[offsets[start] : offsets[end]], lengths[start:end])
    return out


class _HashingWriter:
    """A write-only file wrapper that feeds every written byte to sha256 (what pyarrow's IPC writer needs)."""

    def __init__(self, handle) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()

    def write(self, data) -> int:
        self._digest.update(data)
        return self._handle.write(data)

    def tell(self) -> int:
        return self._handle.tell()

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:  # the caller closes the real file (after fsync)
        pass

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
