"""One named token stream of a dataset (a language or a language pair) cut into fixed raw windows.

The stream is the endless concatenation of epochs; epoch e is every document (mono) or every pair in
each configured direction (parallel: ``src </s> tgt </s>``, and ``tgt </s> src </s>`` with ``both``) in a
deterministic permutation seeded by (seed, stream name, e), each piece followed by ``</s>``. Window g is
tokens ``[g·R, (g+1)·R)`` of that stream: documents longer than a window are split, windows cross document
and epoch boundaries, nothing is padded and nothing is dropped, so the windows of an epoch hold each of its
tokens exactly once. Gathering reads the memory-mapped shards through numpy views (never
``ChunkedArray.take``), vectorized over all windows of a batch.

The permutation is two-level so that nothing grows with the corpus but the manifest: epoch e visits the
stream's shards in a permutation seeded by (seed, stream name, e) and, inside each shard, its pieces in a
permutation seeded by (seed, stream name, e, shard). Where every shard starts in epoch e follows from the
manifest's per-shard row and token counts alone, so a window is located without opening any shard; only the
shards holding the requested windows are opened (lazily, through a bounded :class:`ShardCache`). Windows are
consecutive within a shard, so a stream reads one shard at a time and a rank keeps about one shard per stream
open, whatever the number of shards.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from deltalm.shard_format import ShardError, ShardReader
from deltalm.vocabulary import file_sha256


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

    path: str  # a string, not a Path: a stream's table becomes thousands of these at once
    rows: int
    tokens: int
    bytes: int
    sha256: str


class ShardTable:
    """A stream's shards as columns (what a window lookup needs); an entry is built only for a shard
    opened. Per shard it holds three int64 counts and its path and sha256 in Arrow string buffers."""

    def __init__(self, parts: list[tuple[str, pa.Table]], keep_sha256: bool = False):
        """``parts``: (dataset directory, its table columns) in data_dirs order; the sha256 column is kept
        only with ``keep_sha256`` (shards hashed when opened)."""
        self.dirs = [directory for directory, _ in parts]
        counts = [table.num_rows for _, table in parts]
        self.part_starts = np.cumsum([0, *counts])[:-1]
        tables = [table for _, table in parts]
        merged = pa.concat_tables(tables).combine_chunks() if tables else None
        n = int(sum(counts))

        def ints(name: str) -> np.ndarray:
            if merged is None or n == 0:
                return np.zeros(0, dtype=np.int64)
            return merged.column(name).to_numpy().astype(np.int64, copy=False)

        self.rows, self.tokens, self.bytes = ints("rows"), ints("tokens"), ints("bytes")
        self.paths = merged.column("path") if merged is not None else None
        self.sha256 = merged.column("sha256") if merged is not None and keep_sha256 else None
        self._len = n

    def __len__(self) -> int:
        return self._len

    def entry(self, i: int) -> ShardEntry:
        part = int(np.searchsorted(self.part_starts, i, side="right")) - 1
        path = os.path.join(self.dirs[part], self.paths[i].as_py())
        sha256 = self.sha256[i].as_py() if self.sha256 is not None else ""
        return ShardEntry(path, int(self.rows[i]), int(self.tokens[i]), int(self.bytes[i]), sha256)


def open_shard(entry: ShardEntry, stream: dict, verify_sha256: bool) -> ShardReader:
    """Open one shard and check it against its manifest entry; a mismatch is a :class:`ShardError`."""
    path = Path(entry.path)
    if not path.is_file():
        raise ShardError(f"{path}: listed in the manifest but missing")
    size = path.stat().st_size
    if size != entry.bytes:
        raise ShardError(f"{path}: {size} bytes, the manifest says {entry.bytes} (corrupt or replaced shard)")
    if verify_sha256 and file_sha256(path) != entry.sha256:
        raise ShardError(f"{path}: sha256 differs from the manifest (corrupt shard)")
    try:
        reader = ShardReader(path, expect_kind=stream["kind"])
    except ShardError as exc:
        raise ShardError(f"{exc} (listed in the manifest)") from None
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
    for name, col in reader.columns.items():
        offsets = col.offsets
        if len(offsets) and (
            offsets[0] != 0 or offsets[-1] != len(col.values) or np.any(np.diff(offsets) < 0)
        ):
            reader.close()
            raise ShardError(f"{path}: column {name} has corrupt offsets (rerun data_prep verify)")
    tokens = sum(len(col.values) for col in reader.columns.values())
    if tokens != entry.tokens:
        reader.close()
        raise ShardError(f"{path}: {tokens} tokens, the manifest says {entry.tokens}")
    return reader


@dataclass
class _Epoch:
    """Epoch-level layout: the shard order and where each shard's part of the epoch ends."""

    shard_order: np.ndarray  # int64 [S] stream shard index at each slot
    ends: np.ndarray  # int64 [S] end of each slot in epoch coordinates


@dataclass
class _ShardLayout:
    """One shard's pieces in their epoch order (shard-local rows)."""

    piece_row: np.ndarray  # int64 [P] shard row of each piece
    piece_col: np.ndarray  # int8 [P] column (0 = tokens/src, 1 = tgt)
    ends: np.ndarray  # int64 [P] end of each piece (incl. its </s>) in shard-local epoch coordinates


class OpenShard:
    """A mapped shard's arrays and the value ranges read since its pages were last released."""

    def __init__(self, reader: ShardReader, col_names: list[str]):
        self.reader = reader
        self.values = [reader.columns[c].values for c in col_names]
        self.starts = [reader.columns[c].offsets[:-1].astype(np.int64) for c in col_names]
        self.lengths = [np.diff(reader.columns[c].offsets).astype(np.int64) for c in col_names]
        self.rows = reader.num_rows
        self.mapped = reader.zero_copy  # views on the mapping (not copies): their pages may be released
        self.touched: list[list[int] | None] = [None] * len(col_names)  # [lo, hi) value indices read
        if self.mapped:
            for c in col_names:
                release_mapped_pages(reader.columns[c].offsets)  # copied above; never read again

    def mark(self, col: int, lo: int, hi: int) -> None:
        span = self.touched[col]
        if span is None:
            self.touched[col] = [lo, hi]
        else:
            span[0], span[1] = min(span[0], lo), max(span[1], hi)

    def release_pages(self) -> None:
        """Drop the pages of the value ranges read since the last call from this process's RSS."""
        for col, span in enumerate(self.touched):
            if span is not None and self.mapped:
                release_mapped_pages(self.values[col][span[0] : span[1]])
            self.touched[col] = None

    def close(self) -> None:
        self.values, self.starts, self.lengths = [], [], []
        self.reader.close()


class ShardCache:
    """The open shards of a loader: at most ``capacity`` mappings, least recently used closed first.

    Shared by every stream of a loader (one user at a time). An open shard costs one memory mapping and
    no file descriptor (:class:`deltalm.shard_format.ShardReader`). ``opened`` counts opens, ``peak`` the
    most shards open at once.
    """

    def __init__(self, capacity: int, verify_sha256: bool = False):
        if capacity < 1:
            raise ValueError(f"shard cache capacity must be >= 1, got {capacity}")
        self.capacity, self.verify_sha256 = capacity, verify_sha256
        self._open: OrderedDict[tuple, OpenShard] = OrderedDict()
        self._touched: dict[tuple, OpenShard] = {}
        self.opened = self.peak = 0

    def get(
        self, key: tuple, entry: Callable[[], ShardEntry], stream: dict, col_names: list[str]
    ) -> OpenShard:
        """The open shard ``key`` (any hashable naming it), opened from ``entry()`` on a miss."""
        shard = self._open.get(key)
        if shard is not None:
            self._open.move_to_end(key)
            return shard
        while len(self._open) >= self.capacity:
            old_key, old = self._open.popitem(last=False)
            self._touched.pop(old_key, None)
            old.close()
        resolved = entry()
        try:
            shard = OpenShard(open_shard(resolved, stream, self.verify_sha256), col_names)
        except OSError as exc:
            raise ShardError(f"{resolved.path}: unreadable shard ({exc.strerror or exc})") from None
        self._open[key] = shard
        self.opened += 1
        self.peak = max(self.peak, len(self._open))
        return shard

    def touched(self, key: tuple, shard: OpenShard) -> None:
        self._touched[key] = shard

    def release_pages(self) -> None:
        """Release the pages read since the last call, in the shards read since then (not every shard)."""
        for shard in self._touched.values():
            shard.release_pages()
        self._touched.clear()

    def __len__(self) -> int:
        return len(self._open)

    def close(self) -> None:
        for shard in self._open.values():
            shard.close()
        self._open.clear()
        self._touched.clear()


class TokenStream:
    """The windows of one stream (see the module docstring). Not thread-safe: one user at a time.

    ``rows`` and ``tokens`` are the stream's totals from the manifest; ``shard_table()`` returns its shard
    entries (called once, at the first window read). Nothing is opened or read at construction.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        stream: dict,
        shard_table: Callable[[], ShardTable],
        rows: int,
        tokens: int,
        raw_length: int,
        seed: int,
        eos: int,
        cache: ShardCache,
        both_directions: bool = True,
    ):
        if kind not in ("mono", "parallel"):
            raise ValueError(f"stream {name}: unknown kind {kind!r}")
        self.name, self.kind, self.raw_length, self.seed, self.eos = name, kind, raw_length, seed, eos
        self.stream, self.cache = stream, cache
        self._shard_table = shard_table
        self.col_names = ["tokens"] if kind == "mono" else ["src", "tgt"]
        self.num_cols = len(self.col_names)
        self.rows, self.tokens = rows, tokens
        self.directions = 2 if (kind == "parallel" and both_directions) else 1
        # Epoch length: every piece plus its </s>, once per direction.
        self.epoch_length = self.directions * (self.tokens + self.rows * self.num_cols)
        self._key = zlib.crc32(name.encode("utf-8"))
        self._table: ShardTable | None = None
        self._shard_lengths: np.ndarray | None = None
        self._epochs: OrderedDict[int, _Epoch] = OrderedDict()
        self._layouts: OrderedDict[tuple[int, int], _ShardLayout] = OrderedDict()

    # ------------------------------------------------------------------ shards
    @property
    def table(self) -> ShardTable:
        if self._table is None:
            table = self._shard_table()
            rows, tokens = int(table.rows.sum()), int(table.tokens.sum())
            if (rows, tokens) != (self.rows, self.tokens):
                raise ShardError(
                    f"stream {self.name}: its shard tables sum to {rows} rows / {tokens} tokens, the manifest "
                    f"says {self.rows} / {self.tokens}"
                )
            self._shard_lengths = self.directions * (table.tokens + table.rows * self.num_cols)
            self._table = table
        return self._table

    def epoch(self, e: int) -> _Epoch:
        cached = self._epochs.get(e)
        if cached is not None:
            return cached
        order = np.random.default_rng([self.seed, self._key, e]).permutation(len(self.table))
        epoch = _Epoch(order, np.cumsum(self._shard_lengths[order]))
        self._epochs[e] = epoch
        while len(self._epochs) > 3:
            self._epochs.popitem(last=False)
        return epoch

    def layout(self, e: int, s: int, shard: OpenShard) -> _ShardLayout:
        """Pieces of shard ``s`` (stream shard index) in epoch ``e``."""
        cached = self._layouts.get((e, s))
        if cached is not None:
            self._layouts.move_to_end((e, s))
            return cached
        rows = shard.rows
        perm = np.random.default_rng([self.seed, self._key, e, s]).permutation(rows * self.directions)
        local = perm % rows if rows else perm
        if self.kind == "mono":
            piece_row, piece_col = local, np.zeros(len(local), dtype=np.int8)
        else:
            forward = (perm < rows).astype(np.int8)  # direction 0: src then tgt
            piece_row = np.repeat(local, 2)
            piece_col = np.empty(2 * len(local), dtype=np.int8)
            piece_col[0::2] = 1 - forward
            piece_col[1::2] = forward
        lengths = np.where(piece_col == 0, shard.lengths[0][piece_row], 0)
        if self.num_cols == 2:
            lengths = lengths + np.where(piece_col == 1, shard.lengths[1][piece_row], 0)
        layout = _ShardLayout(piece_row, piece_col, np.cumsum(lengths + 1))
        self._layouts[(e, s)] = layout
        while len(self._layouts) > 4:
            self._layouts.popitem(last=False)
        return layout

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
            self._fill_epoch(int(e), c_lo[sel], c_hi[sel], c_out[sel], flat)
        return out

    def _fill_epoch(self, e: int, lo: np.ndarray, hi: np.ndarray, dst0: np.ndarray, flat: np.ndarray) -> None:
        """Split epoch ranges [lo, hi) at shard boundaries and fill each shard's part."""
        epoch = self.epoch(e)
        ends = epoch.ends
        first = np.searchsorted(ends, lo, side="right")
        last = np.searchsorted(ends, hi - 1, side="right")
        if first[0] == last[0] and (len(lo) == 1 or (first == first[0]).all() and (last == first[0]).all()):
            # Every range inside one shard (the common case: a stream's windows are consecutive).
            slot = int(first[0])
            base = int(ends[slot] - self._shard_lengths[epoch.shard_order[slot]])
            self._fill_shard(e, int(epoch.shard_order[slot]), lo - base, hi - base, dst0, flat)
            return
        count = last - first + 1
        seg_chunk = np.repeat(np.arange(len(lo)), count)
        seg_base = np.cumsum(count) - count
        seg_slot = np.repeat(first, count) + (np.arange(int(count.sum())) - np.repeat(seg_base, count))
        slot_end = ends[seg_slot]
        slot_begin = slot_end - self._shard_lengths[epoch.shard_order[seg_slot]]
        s_lo = np.maximum(lo[seg_chunk], slot_begin)
        s_hi = np.minimum(hi[seg_chunk], slot_end)
        s_dst = dst0[seg_chunk] + (s_lo - lo[seg_chunk])
        keep = s_hi > s_lo
        seg_slot, s_lo, s_hi, s_dst, slot_begin = (
            seg_slot[keep],
            s_lo[keep],
            s_hi[keep],
            s_dst[keep],
            slot_begin[keep],
        )
        for slot in np.unique(seg_slot):
            sel = seg_slot == slot
            base = slot_begin[sel]
            self._fill_shard(
                e, int(epoch.shard_order[slot]), s_lo[sel] - base, s_hi[sel] - base, s_dst[sel], flat
            )

    def _fill_shard(
        self, e: int, s: int, lo: np.ndarray, hi: np.ndarray, dst0: np.ndarray, flat: np.ndarray
    ) -> None:
        """Fill shard-local ranges of stream shard ``s`` in epoch ``e`` (opening the shard if needed)."""
        key = (self.name, s)
        shard = self.cache.get(key, lambda: self.table.entry(s), self.stream, self.col_names)
        self._fill(self.layout(e, s, shard), shard, lo, hi, dst0, flat)
        self.cache.touched(key, shard)

    def _fill(
        self,
        epoch: _ShardLayout,
        shard: OpenShard,
        lo: np.ndarray,
        hi: np.ndarray,
        dst0: np.ndarray,
        flat: np.ndarray,
    ) -> None:
        """Copy shard-local epoch ranges [lo, hi) to ``flat[dst0 : dst0 + hi - lo]`` (vectorized)."""
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
            p_len = shard.lengths[0][rows]
            p_start_abs = shard.starts[0][rows]
        else:
            p_len = np.where(cols == 0, shard.lengths[0][rows], shard.lengths[1][rows])
            p_start_abs = np.where(cols == 0, shard.starts[0][rows], shard.starts[1][rows])
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
        values = shard.values
        # A few segments per window: plain slice copies beat grouped fancy indexing here.
        if self.num_cols == 1:
            col = values[0]
            for d, a, n in zip(dst.tolist(), src.tolist(), n_tok.tolist(), strict=True):
                flat[d : d + n] = col[a : a + n]
            shard.mark(0, int(src.min()), int((src + n_tok).max()))
        else:
            cols = cols[keep]
            for d, c, a, n in zip(dst.tolist(), cols.tolist(), src.tolist(), n_tok.tolist(), strict=True):
                flat[d : d + n] = values[c][a : a + n]
            for c in (0, 1):
                on = cols == c
                if on.any():
                    shard.mark(c, int(src[on].min()), int((src[on] + n_tok[on]).max()))

    def release_pages(self) -> None:
        """Drop the pages read since the last call from this process's RSS (see :func:`release_mapped_pages`)."""
        self.cache.release_pages()

    def close(self) -> None:
        self._epochs.clear()
        self._layouts.clear()
