"""Block bytes → validated text records, in the worker processes.

Mono (CC100 layout): one paragraph a line, a blank (or whitespace-only) line between documents; a document
with any bad line is skipped whole. Parallel: TSV ``src<TAB>tgt``, JSONL ``{"en": ..., "de": ...}``, or two
aligned files. Skips come back as ``(reason, line)`` with absolute 1-based line numbers.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .readers import TOO_LONG

Skip = tuple[str, int]


@dataclass
class MonoRecords:
    lines: list[str] = field(default_factory=list)  # the kept documents' lines, in order
    doc_lines: list[int] = field(default_factory=list)  # lines per kept document
    doc_first_line: list[int] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)


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
            if len(line) > quarter and len(line.encode("utf-8")) > max_line_bytes:
                yield None, "line_too_long"
            else:
                yield (line[:-1] if line.endswith("\r") else line), None
        return
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    for line in raw:
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
            yield (s[:-1] if s.endswith("\r") else s), None


def _parse_mono_fast(data: bytes, first_line: int, max_line_bytes: int, max_doc_bytes: int) -> MonoRecords | None:
    """Vectorized CC100 parsing of a clean block (valid UTF-8, no NUL/CR, no long lines or documents): numpy
    over line lengths instead of a Python loop. ``None`` when the block is not clean."""
    if b"\x00" in data or b"\r" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lens = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
    if len(lens) and int(lens.max()) > max_line_bytes // 4:
        return None  # maybe too long in bytes: let the exact loop decide
    blank = np.fromiter(map(str.isspace, lines), dtype=bool, count=len(lines)) | (lens == 0)
    prev_blank = np.empty_like(blank)
    if len(blank):
        prev_blank[0] = True
        prev_blank[1:] = blank[:-1]
    starts = ~blank & prev_blank
    kept = ~blank
    doc_of_line = np.cumsum(starts) - 1
    doc_lines = np.bincount(doc_of_line[kept], minlength=int(starts.sum()))
    doc_chars = np.bincount(doc_of_line[kept], weights=lens[kept] + 1, minlength=int(starts.sum()))
    if len(doc_chars) and doc_chars.max() > max_doc_bytes // 4:
        return None
    out = MonoRecords()
    out.lines = list(itertools.compress(lines, kept.tolist()))
    out.doc_lines = doc_lines.tolist()
    out.doc_first_line = (np.flatnonzero(starts) + first_line).tolist()
    out.skips = [("empty_document", int(i) + first_line) for i in np.flatnonzero(blank & prev_blank)]
    return out


def parse_mono(data: bytes, first_line: int, max_line_bytes: int, max_doc_bytes: int) -> MonoRecords:
    fast = _parse_mono_fast(data, first_line, max_line_bytes, max_doc_bytes)
    if fast is not None:
        return fast
    out = MonoRecords()
    cur: list[str] = []
    cur_start, cur_bad = 0, None
    previous_blank = False
    lineno = first_line - 1
    for lineno, (line, reason) in enumerate(_text_lines(data, max_line_bytes), start=first_line):
        if line is not None and not line.strip():
            if cur or cur_bad:
                _end_document(out, cur, cur_start, cur_bad, max_doc_bytes)
                cur, cur_bad = [], None
            elif previous_blank or lineno == first_line:
                out.skips.append(("empty_document", lineno))
            previous_blank = True
            continue
        previous_blank = False
        if not cur and cur_bad is None:
            cur_start = lineno
        if reason is not None:
            if cur_bad is None:
                cur_bad = (reason, lineno)
            cur.append("")
        else:
            cur.append(line)
    if cur or cur_bad:
        _end_document(out, cur, cur_start, cur_bad, max_doc_bytes)
    return out


def _end_document(
    out: MonoRecords, lines: list[str], start: int, bad: Skip | None, max_doc_bytes: int
) -> None:
    if bad is None:
        chars = sum(map(len, lines)) + len(lines)
        if chars > max_doc_bytes // 4 and sum(len(x.encode("utf-8")) + 1 for x in lines) > max_doc_bytes:
            bad = ("document_too_long", start)
    if bad is not None:
        out.skips.append(bad)
        return
    out.lines.extend(lines)
    out.doc_lines.append(len(lines))
    out.doc_first_line.append(start)


def parse_tsv(data: bytes, first_line: int, max_line_bytes: int) -> ParallelRecords:
    out = ParallelRecords()
    for lineno, (line, reason) in enumerate(_text_lines(data, max_line_bytes), start=first_line):
        if reason is None:
            fields = line.split("\t")
            if not line.strip():
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
            if not line.strip():
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
            reason = _add_pair(out, sa.rstrip("\r"), sb.rstrip("\r"), lineno)
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
    if not src.strip() or not tgt.strip():
        return "empty_side"
    out.src.append(src)
    out.tgt.append(tgt)
    out.first_line.append(lineno)
    return None
