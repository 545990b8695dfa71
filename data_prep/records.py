"""Block bytes → validated text records, in the worker processes.

Lines and blank lines follow :mod:`deltalm.text_lines` (a line ends at ``\\n``, one ``\\r`` before it is part of
the line end; a blank line holds only whitespace). Mono (CC100 layout): one paragraph a line, a blank line between
documents; a bad line (invalid UTF-8, NUL byte, longer than ``--max-line-bytes``) is dropped and counted, the rest
of its document is kept. A document is tokenized as one string, its paragraphs joined by a space (what
SentencePiece's normalization makes of a newline anyway), which is also ~2x faster than line by line. Parallel:
TSV ``src<TAB>tgt``, JSONL ``{"en": ..., "de": ...}``, or two aligned files. Skips come back as
``(reason, line)`` with absolute 1-based line numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from deltalm.text_lines import is_blank, strip_line_end

from .readers import TOO_LONG

Skip = tuple[str, int]


@dataclass
class MonoRecords:
    docs: list[str | bytes] = field(default_factory=list)  # kept documents, paragraphs joined by a space
    doc_first_line: list[int] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    first_line: int = 0  # fast path: line numbers come from byte offsets on demand
    doc_offsets: np.ndarray | None = None  # fast path: each document's byte offset in the block
    newlines: np.ndarray | None = None  # fast path: byte offsets of the block's newlines

    def line_of(self, i: int) -> int:
        """1-based line number of kept document ``i``."""
        if self.doc_offsets is None:
            return self.doc_first_line[i]
        return self.first_line + int(np.searchsorted(self.newlines, self.doc_offsets[i]))


@dataclass
class ParallelRecords:
    src: list[str] = field(default_factory=list)
    tgt: list[str] = field(default_factory=list)
    first_line: list[int] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)


def _text_lines(data: bytes, max_line_bytes: int) -> Iterator[tuple[str | None, str | None]]:
    """(line, None) for a good line, (None, reason) for a bad one; a trailing newline ends the last line."""
    try:
        text = data.decode("utf-8") if b"\x00" not in data else None
    except UnicodeDecodeError:
        text = None
    if text is not None:  # fast path: the whole block is valid UTF-8 without NUL bytes
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        quarter = max_line_bytes // 4
        for line in lines:
            if line.endswith("\r"):
                line = line[:-1]
            if len(line) > quarter and len(line.encode("utf-8")) > max_line_bytes:
                yield None, "line_too_long"
            else:
                yield line, None
        return
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    for line in raw:
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > max_line_bytes:
            yield None, "line_too_long"
        elif b"\x00" in line:
            yield None, "nul_byte"
        else:
            try:
                s = line.decode("utf-8")
            except UnicodeDecodeError:
                yield None, "invalid_utf8"
                continue
            yield s, None


# What can start a whitespace-only line (``str.isspace`` characters, as UTF-8): one ASCII byte, or the first two
# bytes of U+0085/U+00A0 (c2 85, c2 a0), U+1680 (e1 9a), U+2000-U+203F and U+205F (e2 80, e2 81), U+3000 (e3 80).
_SPACE_BYTE = np.zeros(256, dtype=bool)
_SPACE_BYTE[[0x09, 0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x1F, 0x20]] = True
_SPACE_PAIR = np.zeros(1 << 16, dtype=bool)
_SPACE_PAIR[[0xC285, 0xC2A0, 0xE19A, 0xE280, 0xE281, 0xE380]] = True


def valid_utf8(data: bytes) -> bool:
    """Whether ``data`` is strict UTF-8 (what ``bytes.decode("utf-8")`` accepts), without building a str: Arrow's
    validator, several times faster than decoding on non-ASCII text."""
    if data.isascii():
        return True
    offsets = np.array([0, len(data)], dtype=np.int64)
    array = pa.Array.from_buffers(pa.large_string(), 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _parse_mono_fast(
    data: bytes, first_line: int, max_line_bytes: int, max_doc_bytes: int
) -> MonoRecords | None:
    """CC100 parsing of a clean block with C and numpy operations only: valid UTF-8, no NUL byte, no ``\\r`` but
    in CRLF line ends, exactly one blank line between documents, no over-long line or document. ``None``
    otherwise (the exact line loop below then decides; both give the same records on clean blocks). CRLF line
    ends become LF and whitespace-only lines become empty first: the same lines, the same line numbers."""
    if b"\r" in data:
        if data.count(b"\r") != data.count(b"\r\n"):
            return None
        data = data.replace(b"\r\n", b"\n")
    if b"\x00" in data or data.startswith(b"\n") or not valid_utf8(data):
        return None
    body = data[:-2] if data.endswith(b"\n\n") else data[:-1] if data.endswith(b"\n") else data
    out = MonoRecords()
    if not body:
        return out
    if body.endswith(b"\n"):  # data ended with three newlines
        return None
    raw = np.frombuffer(body, dtype=np.uint8)
    newlines = np.flatnonzero(raw == 0x0A)
    step = np.diff(newlines)
    if np.any((step[:-1] == 1) & (step[1:] == 1)):  # two blank lines in a row
        return None
    line_starts = np.concatenate(([0], newlines + 1))
    line_ends = np.concatenate((newlines, [len(body)]))
    if int((line_ends - line_starts).max()) > max_line_bytes:
        return None
    # A blank line (two adjacent newlines) separates documents; lines never start at len(body) (no trailing "\n").
    lead = raw[line_starts].astype(np.int64)
    second = raw[np.minimum(line_starts + 1, len(body) - 1)]
    spaces = [
        i
        for i in np.flatnonzero(_SPACE_BYTE[lead] | _SPACE_PAIR[(lead << 8) | second]).tolist()
        if body[line_starts[i] : line_ends[i]].decode("utf-8").isspace()
    ]
    if spaces and spaces[-1] == len(line_starts) - 1 and len(body) == len(data):
        return None  # an unterminated whitespace-only last line: the exact path decides
    if spaces:  # whitespace-only lines are blank lines: empty them (same lines, same numbers) and parse again
        keep, pos = [], 0
        for i in spaces:
            keep.append(body[pos : line_starts[i]])
            pos = int(line_ends[i])
        return _parse_mono_fast(
            b"".join(keep) + body[pos:] + data[len(body) :], first_line, max_line_bytes, max_doc_bytes
        )
    separators = newlines[:-1][step == 1]
    doc_starts = np.concatenate(([0], separators + 2))
    doc_ends = np.concatenate((separators, [len(body)]))
    if int((doc_ends - doc_starts).max()) + 1 > max_doc_bytes:
        return None
    spaced = body.replace(b"\n", b" ")  # same length: document offsets still hold
    out.docs = [spaced[a:b] for a, b in zip(doc_starts.tolist(), doc_ends.tolist(), strict=True)]
    out.first_line, out.doc_offsets, out.newlines = (
        first_line,
        doc_starts,
        newlines,
    )  # lines only if a skip asks
    return out


def parse_mono(data: bytes, first_line: int, max_line_bytes: int, max_doc_bytes: int) -> MonoRecords:
    fast = _parse_mono_fast(data, first_line, max_line_bytes, max_doc_bytes)
    if fast is not None:
        return fast
    out = MonoRecords()
    cur: list[str] = []
    cur_start = 0
    in_document = False  # a bad line alone makes no document, but it does continue one
    previous_blank = False
    for lineno, (line, reason) in enumerate(_text_lines(data, max_line_bytes), start=first_line):
        if reason is not None:  # a bad line is dropped and counted; its document keeps its other lines
            out.skips.append((reason, lineno))
            in_document, previous_blank = True, False
            continue
        if is_blank(line):
            if cur:
                _end_document(out, cur, cur_start, max_doc_bytes)
                cur = []
            elif (previous_blank or lineno == first_line) and not in_document:
                out.skips.append(("empty_document", lineno))
            in_document, previous_blank = False, True
            continue
        if not cur:
            cur_start = lineno
        cur.append(line)
        in_document, previous_blank = True, False
    if cur:
        _end_document(out, cur, cur_start, max_doc_bytes)
    return out


def _end_document(out: MonoRecords, lines: list[str], start: int, max_doc_bytes: int) -> None:
    chars = sum(map(len, lines)) + len(lines)
    if chars > max_doc_bytes // 4 and sum(len(x.encode("utf-8")) + 1 for x in lines) > max_doc_bytes:
        out.skips.append(("document_too_long", start))
        return
    out.docs.append(" ".join(lines).encode("utf-8"))
    out.doc_first_line.append(start)


def parse_tsv(data: bytes, first_line: int, max_line_bytes: int) -> ParallelRecords:
    out = ParallelRecords()
    for lineno, (line, reason) in enumerate(_text_lines(data, max_line_bytes), start=first_line):
        if reason is None:
            fields = line.split("\t")
            if is_blank(line):
                reason = "empty_line"
            elif len(fields) == 1:
                reason = "tsv_no_tab"
            elif len(fields) > 2:
                reason = "tsv_extra_field"
            else:
                reason = _add_pair(out, fields[0], fields[1], lineno)
        if reason is not None:
            out.skips.append((reason, lineno))
    return out


def parse_jsonl(
    data: bytes, first_line: int, max_line_bytes: int, src_lang: str, tgt_lang: str
) -> ParallelRecords:
    out = ParallelRecords()
    for lineno, (line, reason) in enumerate(_text_lines(data, max_line_bytes), start=first_line):
        if reason is None:
            if is_blank(line):
                reason = "empty_line"
            else:
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None
                if not isinstance(obj, dict):
                    reason = "bad_json"
                elif src_lang not in obj or tgt_lang not in obj:
                    reason = "missing_lang_key"
                elif not isinstance(obj[src_lang], str) or not isinstance(obj[tgt_lang], str):
                    reason = "bad_json"
                else:
                    reason = _add_pair(out, obj[src_lang], obj[tgt_lang], lineno)
        if reason is not None:
            out.skips.append((reason, lineno))
    return out


def parse_aligned(src: list[bytes], tgt: list[bytes], first_line: int) -> ParallelRecords:
    out = ParallelRecords()
    for lineno, (a, b) in enumerate(zip(src, tgt, strict=True), start=first_line):
        reason = _check_raw(a) or _check_raw(b)
        if reason is None:
            sa, sb = a.decode("utf-8"), b.decode("utf-8")
            reason = _add_pair(out, strip_line_end(sa), strip_line_end(sb), lineno)
        if reason is not None:
            out.skips.append((reason, lineno))
    return out


def _check_raw(line: bytes) -> str | None:
    if line == TOO_LONG:
        return "line_too_long"
    if b"\x00" in line:
        return "nul_byte"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    return None


def _add_pair(out: ParallelRecords, src: str, tgt: str, lineno: int) -> str | None:
    if is_blank(src) or is_blank(tgt):
        return "empty_side"
    out.src.append(src)
    out.tgt.append(tgt)
    out.first_line.append(lineno)
    return None
