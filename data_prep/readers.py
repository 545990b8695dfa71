"""Input files: decompression (.gz/.xz/.zst), and cutting the byte stream into record-aligned blocks.

The parent process only finds block boundaries (C-level ``bytes.find``); decoding, validation and
tokenization happen in the workers. A block ends at the first record boundary that ends at or after
``block_bytes`` from the block's start, so the cut depends only on the text from the block's start:
resuming at a recorded block offset reproduces the same rows.
"""

from __future__ import annotations

import gzip
import lzma
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import zstandard

from deltalm.text_lines import BLANK_LINE_BYTES, SPACE_RUN_BYTES, strip_bom_bytes

from .errors import DataPrepError, describe_os_error

COMPRESSION_SUFFIXES = (".gz", ".xz", ".zst")
READ_CHUNK = 1 << 20
# What a corrupt/truncated compressed stream raises while reading.
DECOMPRESSION_ERRORS = (EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, gzip.BadGzipFile)
LINE = b"\n"  # record boundary of TSV/JSONL inputs
DOCUMENT = b"\n\n"  # record boundary of CC100 text: a blank line (any whitespace, CRLF included)


def base_suffix(path: str | Path) -> str:
    """The format suffix under any compression suffix: ``a.en-de.jsonl.gz`` → ``.jsonl``."""
    name = Path(path).name
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path(name).suffix


def check_input(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataPrepError(f"input not found: {path}")
    if not path.is_file():
        raise DataPrepError(f"input is not a regular file: {path}")
    return path


def open_input(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading decompressed bytes (by suffix)."""
    path = check_input(path)
    try:
        if path.name.endswith(".gz"):
            return gzip.open(path, "rb")
        if path.name.endswith(".xz"):
            return lzma.open(path, "rb")
        if path.name.endswith(".zst"):
            return zstandard.ZstdDecompressor().stream_reader(
                open(path, "rb"), read_across_frames=True, closefd=True
            )
        return open(path, "rb")
    except OSError as exc:
        raise describe_os_error(exc, f"cannot open input {path}") from None


@dataclass
class Block:
    """A run of whole records: ``data`` (bytes, or (src lines, tgt lines) for aligned files)."""

    data: bytes | tuple[list[bytes], list[bytes]]
    offset: tuple[int, ...]  # decompressed byte offset(s) of the block's start
    line: int  # 1-based number of the block's first line
    lines: int  # lines in the block
    nbytes: int  # raw bytes in the block
    pre_skips: list[tuple[str, str, int]] = field(default_factory=list)  # reader-level skips before it
    source: str | None = None  # plain file: ``data`` is left empty and the worker reads it (no pickling)

    def payload(self) -> bytes | tuple[list[bytes], list[bytes]]:
        if self.source is None:
            return self.data
        fd = os.open(self.source, os.O_RDONLY)
        try:
            data = os.pread(fd, self.nbytes, self.offset[0])
        finally:
            os.close(fd)
        if len(data) != self.nbytes:
            raise DataPrepError(f"{self.source}: changed while being read")
        return data


class _Reader:
    """Reads decompressed chunks; a decompression error ends the stream and is remembered."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = open_input(path)
        self.broken = False

    def read(self, n: int = READ_CHUNK) -> bytes:
        if self.broken:
            return b""
        try:
            return self.handle.read1(n)
        except DECOMPRESSION_ERRORS:
            self.broken = True
            return b""
        except OSError as exc:  # gzip raises BadGzipFile (an OSError) and plain OSError for bad headers
            if (
                isinstance(exc, gzip.BadGzipFile)
                or "gzip" in str(exc).lower()
                or "compressed" in str(exc).lower()
            ):
                self.broken = True
                return b""
            raise describe_os_error(exc, f"cannot read input {self.path}") from None

    def skip(self, n: int) -> int:
        """Discard ``n`` bytes; return how many were actually there."""
        done = 0
        while done < n:
            chunk = self.read(min(READ_CHUNK, n - done))
            if not chunk:
                break
            done += len(chunk)
        return done

    def close(self) -> None:
        self.handle.close()


class _Boundary:
    """Where records end: ``b"\\n"`` (lines) or ``b"\\n\\n"`` (CC100 documents: a newline and then a blank line,
    i.e. one holding only whitespace, CRLF included; see :mod:`deltalm.text_lines`)."""

    def __init__(self, boundary: bytes):
        if boundary not in (LINE, DOCUMENT):
            raise ValueError(f"boundary must be {LINE!r} or {DOCUMENT!r}, got {boundary!r}")
        self.lines = boundary == LINE

    def find(self, buf: bytes | bytearray, pos: int) -> tuple[int, int]:
        """(start, end) of the first boundary starting at or after ``pos``; (-1, -1) when there is none."""
        if self.lines:
            i = buf.find(b"\n", pos)
            return (i, i + 1) if i >= 0 else (-1, -1)
        m = BLANK_LINE_BYTES.search(buf, pos)
        return (m.start(), m.end()) if m else (-1, -1)

    def last_end(self, buf: bytes | bytearray, before: int) -> int:
        """End of the last boundary that starts before ``before`` (0 when there is none)."""
        if self.lines:
            return buf.rfind(b"\n", 0, before) + 1
        end, pos = 0, 0
        while True:
            m = BLANK_LINE_BYTES.search(buf, pos)
            if m is None or m.start() >= before:
                return end
            end, pos = m.end(), m.end() - 1  # the closing newline may open the next boundary

    def resume(self, buf: bytes | bytearray) -> int:
        """Where to search again once more bytes arrive, after :meth:`find` found none in ``buf``."""
        if self.lines:
            return len(buf)
        i = buf.rfind(b"\n")  # only a boundary starting at the last newline can still be completed
        return i if i >= 0 else len(buf)

    def tail(self, buf: bytes | bytearray) -> int:
        """Where a boundary cut by the end of ``buf`` could start (``len(buf)`` when none can)."""
        i = buf.rfind(b"\n")
        if i < 0:
            return len(buf)
        if self.lines:
            return len(buf)
        rest = bytes(buf[i + 1 : i + 1 + 4096])
        return i if len(buf) - i - 1 <= 4096 and SPACE_RUN_BYTES.fullmatch(rest) else len(buf)


def iter_blocks(
    path: str | Path,
    boundary: bytes,
    block_bytes: int,
    max_record_bytes: int,
    skips: list,
    too_long_reason: str,
    start_offset: int = 0,
    start_line: int = 1,
) -> Iterator[Block]:
    """Blocks of whole records separated by ``boundary`` (:data:`LINE` lines, :data:`DOCUMENT` CC100 documents).

    A record longer than ``max_record_bytes`` is dropped without being held in memory (counted as
    ``too_long_reason``); a decompression error drops the unfinished tail and the rest of the file.
    """
    path = Path(path)
    cutter = _Boundary(boundary)
    reader = _Reader(path)
    plain = None if path.name.endswith(COMPRESSION_SUFFIXES) else str(path)
    try:
        if reader.skip(start_offset) != start_offset:
            raise DataPrepError(f"{path}: shorter than its recorded progress; the input changed")
        buf = bytearray()
        offset, line = start_offset, start_line
        search_from = max(block_bytes - len(boundary), 0)
        scan = search_from  # buf before it holds no boundary at or after search_from (no rescans of a long record)
        eof = False
        while True:
            if len(buf) < block_bytes and not eof:
                chunk = reader.read()
                buf += chunk
                eof = not chunk
                continue
            full = len(buf) >= block_bytes
            cut, cut_end = cutter.find(buf, scan) if full else (-1, -1)
            stop = cut if cut >= 0 else len(buf)
            start = 0
            if full and stop > max_record_bytes:
                # The record crossing the block_bytes mark starts after the last boundary before the mark.
                # (Records wholly before the mark are shorter than a block; the workers check those.)
                start = cutter.last_end(buf, search_from)
            if full and stop - start > max_record_bytes:
                # Too long: emit the records before it, then drop it without buffering it whole.
                if start:
                    block = _block(buf, start, offset, line, skips, plain)
                    yield block
                    offset, line = offset + start, line + block.lines
                    del buf[:start]
                skips.append((too_long_reason, str(path), line))
                dropped, newlines, buf = _drop_record(reader, buf, cutter)
                offset, line = offset + dropped, line + newlines
                eof = eof and not buf
                scan = search_from
                continue
            if cut >= 0:
                end = cut_end
            elif not eof:
                if full:
                    scan = max(search_from, cutter.resume(buf))
                chunk = reader.read()
                buf += chunk
                eof = not chunk
                continue
            else:
                end = len(buf)
            if end == 0:
                break
            if eof and reader.broken:  # (compressed input) keep the whole records before the damage
                data = bytes(buf[:end])
                last = cutter.last_end(data, len(data))
                data = data[:last]
                if data:
                    block = _block(data, len(data), offset, line, skips, plain)
                    yield block
                    line += block.lines
                break
            block = _block(buf, end, offset, line, skips, plain)
            yield block
            offset, line = offset + end, line + block.lines
            del buf[:end]
            scan = search_from
        if reader.broken:
            skips.append(("broken_compression", str(path), line))
    finally:
        reader.close()


def count_newlines(data: bytes | bytearray, end: int = -1) -> int:
    """``data.count(b"\\n", 0, end)``, vectorized (about 8x faster on a 1 MB block), without a copy."""
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8, count=end) == 0x0A))


def _block(buf: bytes | bytearray, end: int, offset: int, line: int, skips: list, plain: str | None) -> Block:
    """The block of ``buf[:end]``. A plain file's block carries no bytes: the worker reads them itself, so the
    parent neither copies nor pickles them."""
    data = b"" if plain is not None else bytes(buf[:end])
    lines = count_newlines(buf, end)
    block = Block(data=data, offset=(offset,), line=line, lines=lines, nbytes=end, source=plain)
    block.pre_skips, skips[:] = list(skips), []
    return block


def _drop_record(reader: _Reader, buf: bytearray, cutter: _Boundary) -> tuple[int, int, bytearray]:
    """Discard bytes up to and including the next boundary: (bytes dropped, newlines dropped, rest)."""
    dropped, newlines = 0, 0
    while True:
        _, end = cutter.find(buf, 1)  # the dropped record is non-empty; never stop at its own start
        if end >= 0:
            return dropped + end, newlines + buf.count(b"\n", 0, end), bytearray(buf[end:])
        cut = cutter.tail(buf)
        if cut:
            newlines += buf.count(b"\n", 0, cut)
            dropped += cut
            del buf[:cut]
        chunk = reader.read()
        if not chunk:
            return dropped + len(buf), newlines + buf.count(b"\n"), bytearray()
        buf += chunk


def iter_aligned_blocks(
    src_path: str | Path,
    tgt_path: str | Path,
    block_lines: int,
    max_line_bytes: int,
    skips: list,
    start_offset: tuple[int, int] = (0, 0),
    start_line: int = 1,
) -> Iterator[Block]:
    """Blocks of ``block_lines`` line pairs from two line-aligned files. An over-long line is not kept in
    memory: it arrives as the ``TOO_LONG`` placeholder, which the worker counts with its line number."""
    readers = [_LineReader(Path(src_path), max_line_bytes), _LineReader(Path(tgt_path), max_line_bytes)]
    try:
        for r, off in zip(readers, start_offset, strict=True):
            if r.reader.skip(off) != off:
                raise DataPrepError(f"{r.path}: shorter than its recorded progress; the input changed")
            r.offset = off
        line = start_line
        while True:
            offsets = (readers[0].offset, readers[1].offset)
            src, tgt, nbytes = [], [], 0
            while len(src) < block_lines:
                a, b = readers[0].readline(), readers[1].readline()
                if a is None and b is None:
                    break
                if a is None or b is None:
                    skips.append(
                        ("unaligned", str(readers[0].path if a is None else readers[1].path), line + len(src))
                    )
                    break
                src.append(a)
                tgt.append(b)
                nbytes += len(a) + len(b)
            if src:
                block = Block(data=(src, tgt), offset=offsets, line=line, lines=len(src), nbytes=nbytes)
                block.pre_skips, skips[:] = list(skips), []
                yield block
                line += len(src)
            if len(src) < block_lines:
                for r in readers:
                    if r.reader.broken:
                        skips.append(("broken_compression", str(r.path), line))
                break
    finally:
        for r in readers:
            r.reader.close()


TOO_LONG = b"\x00\x00TOO_LONG"  # placeholder: NUL bytes never survive validation as text


class _LineReader:
    def __init__(self, path: Path, max_line_bytes: int):
        self.path = path
        self.reader = _Reader(path)
        self.max_line_bytes = max_line_bytes
        self.buf = bytearray()
        self.offset = 0
        self.eof = False

    def readline(self) -> bytes | None:
        """The next line without its newline, ``TOO_LONG`` for an over-long one, ``None`` at the end."""
        first = self.offset == 0
        line = self._readline()
        return strip_bom_bytes(line) if first and line is not None and line != TOO_LONG else line

    def _readline(self) -> bytes | None:
        too_long = False
        while True:
            idx = self.buf.find(b"\n")
            if idx >= 0:
                line = bytes(self.buf[:idx]) if not too_long else TOO_LONG
                self.offset += idx + 1
                del self.buf[: idx + 1]
                return TOO_LONG if idx > self.max_line_bytes else line
            if len(self.buf) > self.max_line_bytes:
                too_long = True
                self.offset += len(self.buf)
                self.buf.clear()
            chunk = b"" if self.eof else self.reader.read()
            if not chunk:
                self.eof = True
                if not self.buf and not too_long:
                    return None
                line = bytes(self.buf) if not too_long else TOO_LONG
                self.offset += len(self.buf)
                self.buf.clear()
                return line
            self.buf += chunk
