"""Block bytes → validated text records, in the worker processes.

Mono (CC100 layout): one paragraph a line, a blank (or whitespace-only) line between documents; a document
with any bad line is skipped whole. A document is tokenized as one string, its paragraphs joined by a space
(what SentencePiece's normalization makes of a newline anyway), which is also ~2x faster than line by line. Parallel: TSV ``src<TAB>tgt``, JSONL ``{"en": ..., "de": ...}``, or two
aligned files. Skips come back as ``(reason, line)`` with absolute 1-based line numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .readers import TOO_LONG

Skip = tuple[str, int]


@dataclass
class MonoRecords:
    docs: list[str | bytes] = field(default_factory=list)  # kept documents, paragraphs joined by a space
    doc_first_line: list[int] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    first_line: int = 0  # fast path: line numbers are derived from raw_docs on demand
    raw_docs: list[bytes] | None = None

    def line_of(self, i: int) -> int:
        """1-based line number of kept document ``i``."""
        if self.raw_docs is None:
            return self.doc_first_line[i]
        if len(self.doc_first_line) != len(self.raw_docs):
            line, self.doc_first_line = self.first_line, []
            for doc in self.raw_docs:
                self.doc_first_line.append(line)
                line += doc.count(b"\n") + 2
        return self.doc_first_line[i]


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


_WHITESPACE_LINE = re.compile(r"\n[^\S\n]+(?:\n|\Z)")


def _parse_mono_fast(
    data: bytes, first_line: int, max_line_bytes: int, max_doc_bytes: int
) -> MonoRecords | None:
    """CC100 parsing of a clean block with C-level string operations only: valid UTF-8, no NUL/CR, exactly one
    blank line between documents, no whitespace-only line, no over-long line or document. ``None`` otherwise
    (the exact line loop below then decides; both give the same records on clean blocks)."""
    if b"\x00" in data or b"\r" in data or data.startswith(b"\n") or b"\n\n\n" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    first_end = text.find("\n")
    if _WHITESPACE_LINE.search(text) or text[: first_end if first_end >= 0 else len(text)].isspace():
        return None
    # Split and join on the bytes (cheaper than on str); SentencePiece encodes UTF-8 bytes directly.
    body = data[:-2] if data.endswith(b"\n\n") else data[:-1] if data.endswith(b"\n") else data
    out = MonoRecords()
    if not body:
        return out
    docs = body.split(b"\n\n")
    longest = max(map(len, docs))
    if longest + 1 > max_doc_bytes:
        return None
    if longest > max_line_bytes and any(
        len(doc) > max_line_bytes and max(map(len, doc.split(b"\n"))) > max_line_bytes for doc in docs
    ):
        return None
    out.first_line, out.raw_docs = first_line, docs  # line numbers only computed if a skip needs them
    out.docs = [doc.replace(b"\n", b" ") for doc in docs]
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
    out.docs.append(" ".join(lines).encode("utf-8"))
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
