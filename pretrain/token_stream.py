"""One named token stream of a dataset (a language or a language pair) cut into fixed raw windows.

The stream is the endless concatenation of epochs; epoch e is every document (mono) or every pair in
each configured direction (parallel: ``src </s> tgt </s>``, and ``tgt </s> src </s>`` with ``both``) in a
deterministic permutation seeded by (seed, stream name, e), each piece followed by ``</s>``. Window g is
tokens ``[g·R, (g+1)·R)`` of that stream: documents longer than a window are split, windows cross document
and epoch boundaries, nothing is padded and nothing is dropped, so the windows of an epoch hold each of its
tokens exactly once. Gathering reads the memory-mapped shards through numpy views (never
``ChunkedArray.take``), vectorized over all windows of a batch.
"""

from __future__ import annotations

import ctypes
import mmap
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deltalm.file_io import file_sha256
from deltalm.shard_format import ShardError, ShardReader


def _libc_madvise():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_MADVISE = _libc_madvise()
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


def release_mapped_pages(array: np.ndarray) -> bool:
    """Drop this process's page-table entries for a read-only file-mapped array (``MADV_DONTNEED``).

    The file's pages stay in the kernel page cache and fault back in on the next read; what goes is their
    count in this process's RSS, which otherwise climbs towards the corpus size as random windows (and the
    kernel's fault-around) touch the mapping. Returns False where madvise is unavailable.
    """
    if _MADVISE is None or _MADV_DONTNEED is None or array.nbytes == 0:
        return False
    page = mmap.PAGESIZE
    # Only the whole pages inside the array, so a neighbouring buffer's pages are left alone.
    start = (array.ctypes.data + page - 1) // page * page
    end = (array.ctypes.data + array.nbytes) // page * page
    if end <= start:
        return False
    return _MADVISE(start, end - start, _MADV_DONTNEED) == 0


@dataclass
class ShardEntry:
    """A manifest's shard entry resolved against its dataset directory."""

    path: Path
    rows: int
    tokens: int
    bytes: int
    sha256: str


def open_shard(entry: ShardEntry, stream: dict, verify_sha256: bool) -> ShardReader:
    """Open one shard and check it against its manifest entry; a mismatch is a :class:`ShardError`."""
    path = entry.path
    if not path.is_file():
        raise ShardError(f"{path}: listed in the manifest but missing")
    size = path.stat().st_size
    if size != entry.bytes:
        raise ShardError(f"{path}: {size} bytes, the manifest says {entry.bytes} (corrupt or replaced shard)")
    if verify_sha256 and file_sha256(path) != entry.sha256:
        raise ShardError(f"{path}: sha256 differs from the manifest (corrupt shard)")
    reader = ShardReader(path, expect_kind=stream["kind"])
    meta = reader.metadata
    if stream["kind"] == "mono":
        expected = {"deltalm.lang": stream.get("lang")}
    else:
        expected = {"deltalm.src_lang": stream.get("src_lang"), "deltalm.tgt_lang": stream.get("tgt_lang")}
    for key, want in expected.items():
        if want is not None and meta.get(key) != want:
            reader.close()
            raise ShardError(f"{path}: schema {key}={meta.get(key)!r}, the manifest stream says {want!r}")
    rows = reader.num_rows
    if rows != entry.rows:
        reader.close()
        raise ShardError(f"{path}: {rows} rows, the manifest says {entry.rows}")
    tokens = sum(len(col.values) for col in reader.columns.values())
    if tokens != entry.tokens:
        reader.close()
        raise ShardError(f"{path}: {tokens} tokens, the manifest says {entry.tokens}")
    return reader


@dataclass
class _Epoch:
    piece_row: np.ndarray  # int64 [P] stream row of each piece, in epoch order
    piece_col: np.ndarray  # int8 [P] column (0 = tokens/src, 1 = tgt)
    ends: np.ndarray  # int64 [P] end of each piece (incl. its </s>) in epoch coordinates


class TokenStream:
    """The windows of one stream (see the module docstring). Not thread-safe: one user at a time."""

    def __init__(
        self,
        name: str,
        kind: str,
        readers: list[ShardReader],
        raw_length: int,
        seed: int,
        eos: int,
        both_directions: bool = True,
    ):
        if kind not in ("mono", "parallel"):
            raise ValueError(f"stream {name}: unknown kind {kind!r}")
        self.name, self.kind, self.raw_length, self.seed, self.eos = name, kind, raw_length, seed, eos
        self.readers = readers
        col_names = ["tokens"] if kind == "mono" else ["src", "tgt"]
        self.values = [[r.columns[c].values for c in col_names] for r in readers]  # [shard][col]
        row_shard, starts, lengths = [], [[] for _ in col_names], [[] for _ in col_names]
        for s, reader in enumerate(readers):
            row_shard.append(np.full(reader.num_rows, s, dtype=np.int32))
            for c, col in enumerate(col_names):
                offsets = reader.columns[col].offsets
                starts[c].append(offsets[:-1])
                lengths[c].append(np.diff(offsets))
        self.rows = sum(r.num_rows for r in readers)
        self.row_shard = np.concatenate(row_shard) if row_shard else np.zeros(0, dtype=np.int32)
        self.starts = [np.concatenate(x).astype(np.int64) if x else np.zeros(0, np.int64) for x in starts]
        self.lengths = [np.concatenate(x).astype(np.int64) if x else np.zeros(0, np.int64) for x in lengths]
        self.num_cols = len(col_names)
        self.directions = 2 if (kind == "parallel" and both_directions) else 1
        self.tokens = int(sum(int(x.sum()) for x in self.lengths))
        # Epoch length: every piece plus its </s>, once per direction.
        self.epoch_length = self.directions * (self.tokens + self.rows * self.num_cols)
        self._key = zlib.crc32(name.encode("utf-8"))
        self._epochs: OrderedDict[int, _Epoch] = OrderedDict()

    # ------------------------------------------------------------------ epochs
    def epoch(self, e: int) -> _Epoch:
        cached = self._epochs.get(e)
        if cached is not None:
            return cached
        rng = np.random.default_rng([self.seed, self._key, e])
        perm = rng.permutation(self.rows * self.directions)
        rows = perm % self.rows if self.rows else perm
        if self.kind == "mono":
            piece_row, piece_col = rows, np.zeros(len(rows), dtype=np.int8)
        else:
            forward = (perm < self.rows).astype(np.int8)  # direction 0: src then tgt
            piece_row = np.repeat(rows, 2)
            piece_col = np.empty(2 * len(rows), dtype=np.int8)
            piece_col[0::2] = 1 - forward
            piece_col[1::2] = forward
        lengths = np.where(piece_col == 0, self.lengths[0][piece_row], 0)
        if self.num_cols == 2:
            lengths = lengths + np.where(piece_col == 1, self.lengths[1][piece_row], 0)
        epoch = _Epoch(piece_row, piece_col, np.cumsum(lengths + 1))
        self._epochs[e] = epoch
        while len(self._epochs) > 3:
            self._epochs.popitem(last=False)
        return epoch

    # ------------------------------------------------------------------ windows
    def windows(self, indices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Windows ``indices`` (global window numbers) as an int32 array [len(indices), raw_length]."""
        indices = np.asarray(indices, dtype=np.int64)
        n, R, L = len(indices), self.raw_length, self.epoch_length
        if out is None:
            out = np.empty((n, R), dtype=np.int32)
        if n == 0:
            return out
        if L == 0:
            raise ShardError(f"stream {self.name} has no tokens")
        # Split every window into chunks that lie inside one epoch: (window, epoch, lo, hi, out position).
        lo = indices * R
        hi = lo + R
        e_lo, e_hi = lo // L, (hi - 1) // L
        simple = e_lo == e_hi
        chunk_win = [np.nonzero(simple)[0]]
        chunk_epoch = [e_lo[simple]]
        chunk_lo = [lo[simple] - e_lo[simple] * L]
        chunk_hi = [hi[simple] - e_lo[simple] * L]
        chunk_out = [np.zeros(int(simple.sum()), dtype=np.int64)]
        for w in np.nonzero(~simple)[0]:
            pos = int(lo[w])
            while pos < hi[w]:
                e = pos // L
                end = min(int(hi[w]), (e + 1) * L)
                chunk_win.append(np.array([w]))
                chunk_epoch.append(np.array([e]))
                chunk_lo.append(np.array([pos - e * L]))
                chunk_hi.append(np.array([end - e * L]))
                chunk_out.append(np.array([pos - int(lo[w])]))
                pos = end
        c_win = np.concatenate(chunk_win)
        c_epoch = np.concatenate(chunk_epoch)
        c_lo = np.concatenate(chunk_lo)
        c_hi = np.concatenate(chunk_hi)
        c_out = np.concatenate(chunk_out) + c_win * R  # flat index into out
        flat = out.reshape(-1)
        for e in np.unique(c_epoch):
            sel = c_epoch == e
            self._fill(self.epoch(int(e)), c_lo[sel], c_hi[sel], c_out[sel], flat)
        return out

    def _fill(
        self, epoch: _Epoch, lo: np.ndarray, hi: np.ndarray, dst0: np.ndarray, flat: np.ndarray
    ) -> None:
        """Copy epoch ranges [lo, hi) to ``flat[dst0 : dst0 + hi - lo]`` (vectorized over ranges)."""
        ends = epoch.ends
        first = np.searchsorted(ends, lo, side="right")
        last = np.searchsorted(ends, hi - 1, side="right")
        count = last - first + 1
        total = int(count.sum())
        seg_chunk = np.repeat(np.arange(len(lo)), count)
        seg_base = np.cumsum(count) - count
        seg_piece = np.repeat(first, count) + (np.arange(total) - np.repeat(seg_base, count))
        p_end = ends[seg_piece]
        rows = epoch.piece_row[seg_piece]
        cols = epoch.piece_col[seg_piece]
        if self.num_cols == 1:
            p_len = self.lengths[0][rows]
            p_start_abs = self.starts[0][rows]
        else:
            p_len = np.where(cols == 0, self.lengths[0][rows], self.lengths[1][rows])
            p_start_abs = np.where(cols == 0, self.starts[0][rows], self.starts[1][rows])
        p_begin = p_end - p_len - 1  # epoch position of the piece's first token
        a = np.maximum(lo[seg_chunk], p_begin) - p_begin  # piece-local range [a, b) within len + 1
        b = np.minimum(hi[seg_chunk], p_end) - p_begin
        dst = dst0[seg_chunk] + (p_begin + a - lo[seg_chunk])
        has_eos = b == p_len + 1
        flat[dst[has_eos] + (p_len[has_eos] - a[has_eos])] = self.eos
        n_tok = np.minimum(b, p_len) - a
        keep = n_tok > 0
        if not keep.any():
            return
        n_tok, dst, src = n_tok[keep], dst[keep], p_start_abs[keep] + a[keep]
        shard = self.row_shard[rows[keep]]
        values = self.values
        # A few segments per window: plain slice copies beat grouped fancy indexing here.
        if self.num_cols == 1:
            for d, s, a, n in zip(dst.tolist(), shard.tolist(), src.tolist(), n_tok.tolist(), strict=True):
                flat[d : d + n] = values[s][0][a : a + n]
        else:
            cols = cols[keep].tolist()
            for d, s, c, a, n in zip(
                dst.tolist(), shard.tolist(), cols, src.tolist(), n_tok.tolist(), strict=True
            ):
                flat[d : d + n] = values[s][c][a : a + n]

    def release_pages(self) -> None:
        """Drop the mapped shard pages from this process's RSS (see :func:`release_mapped_pages`)."""
        for shard in self.values:
            for values in shard:
                release_mapped_pages(values)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        self.readers = []
        self.values = []
        self._epochs.clear()
