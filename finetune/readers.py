"""Readers for the plain data files users have: JSONL, TSV, and aligned ``.src``/``.tgt`` files.

Every reader yields :class:`Record` objects (named text fields plus the ``file:line`` they came from). A line
that cannot be used is never fatal: it is counted by reason in a :class:`SkipReport`, which keeps a few
``file:line`` samples per reason so the user can find and fix them. Files may be gzip-compressed (``.gz``).
Lines follow :mod:`deltalm.text_lines`: only ``\\n`` ends a line (one ``\\r`` before it is dropped; U+2028, form
feeds and NEL are text), a leading byte-order mark is dropped, a blank line holds only whitespace.
Tasks (finetune/tasks.py) decide which fields they need and count their own skips in the same report.
"""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deltalm.text_lines import is_blank, iter_byte_lines

MAX_SAMPLES_PER_REASON = 5


class DataError(ValueError):
    """A data file that cannot be read at all (missing, wrong format); the message is one line."""


@dataclass
class Record:
    """One usable input line: named fields (strings, or lists for structured inputs) and its origin."""

    fields: dict[str, Any]
    origin: str  # "path:line"


@dataclass
class SkipReport:
    """Counts of skipped (or repaired) lines by reason, with ``file:line`` samples."""

    read: int = 0
    counts: Counter = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, origin: str, detail: str = "") -> None:
        self.counts[reason] += 1
        bucket = self.samples.setdefault(reason, [])
        if len(bucket) < MAX_SAMPLES_PER_REASON:
            bucket.append(f"{origin}: {detail}" if detail else origin)

    @property
    def skipped(self) -> int:
        return sum(n for reason, n in self.counts.items() if not reason.startswith("truncated"))

    def merge(self, other: SkipReport) -> None:
        self.read += other.read
        for reason, n in other.counts.items():
            self.counts[reason] += n
            bucket = self.samples.setdefault(reason, [])
            bucket.extend(other.samples.get(reason, [])[: MAX_SAMPLES_PER_REASON - len(bucket)])

    def to_dict(self) -> dict:
        return {"read": self.read, "counts": dict(sorted(self.counts.items())), "samples": self.samples}

    def summary(self) -> str:
        """A short human-readable report (one line per reason)."""
        if not self.counts:
            return f"read {self.read} lines, none skipped"
        lines = [f"read {self.read} lines, skipped {self.skipped}:"]
        for reason, n in sorted(self.counts.items()):
            sample = "; ".join(self.samples.get(reason, [])[:2])
            lines.append(f"  {reason}: {n} (e.g. {sample})")
        return "\n".join(lines)


def _open_binary(path: Path) -> io.BufferedIOBase:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    return raw


def _lines(path: Path, report: SkipReport) -> Iterator[tuple[str, str]]:
    """(origin, text) for every line, without the newline; undecodable lines counted as ``invalid_utf8``."""
    handle = _open_binary(path)
    try:
        for number, raw in enumerate(iter_byte_lines(handle), start=1):
            origin = f"{path}:{number}"
            report.read += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                report.add("invalid_utf8", origin, f"byte {exc.start}")
                continue
            yield origin, text
    except (OSError, EOFError) as exc:  # truncated gzip and the like
        raise DataError(f"{path}: cannot be read ({str(exc).splitlines()[0]})") from None
    finally:
        handle.close()


def read_jsonl(path: str | Path, report: SkipReport) -> Iterator[Record]:
    """Records from a JSON-lines file: one JSON object per line; blank lines are ignored."""
    for origin, text in _lines(Path(path), report):
        if is_blank(text):
            report.read -= 1
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            report.add("invalid_json", origin, exc.msg)
            continue
        if not isinstance(obj, dict):
            report.add("not_an_object", origin, type(obj).__name__)
            continue
        yield Record(obj, origin)


def read_tsv(path: str | Path, columns: Sequence[str], report: SkipReport) -> Iterator[Record]:
    """Records from a tab-separated file whose lines have exactly ``len(columns)`` fields."""
    for origin, text in _lines(Path(path), report):
        if is_blank(text):
            report.read -= 1
            continue
        parts = text.split("\t")
        if len(parts) != len(columns):
            report.add("wrong_column_count", origin, f"{len(parts)} columns, expected {len(columns)}")
            continue
        yield Record(dict(zip(columns, parts, strict=True)), origin)


def aligned_paths(spec: str | Path) -> tuple[Path, Path]:
    """The (``.src``, ``.tgt``) pair named by ``x.src``, ``x.tgt`` or the prefix ``x``."""
    spec = Path(spec)
    if spec.suffix in (".src", ".tgt"):
        prefix = spec.with_suffix("")
    else:
        prefix = spec
    return prefix.with_name(prefix.name + ".src"), prefix.with_name(prefix.name + ".tgt")


def read_aligned(spec: str | Path, report: SkipReport) -> Iterator[Record]:
    """Records with fields ``source``/``target`` from line-aligned ``.src``/``.tgt`` files.

    Lines past the end of the shorter file are counted as ``unaligned_line``; a line undecodable on either
    side drops the pair.
    """
    src_path, tgt_path = aligned_paths(spec)
    for p in (src_path, tgt_path):
        if not p.is_file():
            raise DataError(f"aligned data needs both {src_path.name} and {tgt_path.name}; missing {p}")
    src_report, tgt_report = SkipReport(), SkipReport()
    src_iter = _numbered(src_path, src_report)
    tgt_iter = _numbered(tgt_path, tgt_report)
    while True:
        s = next(src_iter, None)
        t = next(tgt_iter, None)
        if s is None and t is None:
            break
        report.read += 1
        if s is None or t is None:
            side = tgt_path if s is None else src_path
            number = (t or s)[0]
            report.add("unaligned_line", f"{side}:{number}", "no matching line in the other file")
            continue
        (number, s_text), (_, t_text) = s, t
        origin = f"{src_path}:{number}"
        if s_text is None or t_text is None:
            report.add("invalid_utf8", origin)
            continue
        yield Record({"source": s_text, "target": t_text}, origin)


def _numbered(path: Path, report: SkipReport) -> Iterator[tuple[int, str | None]]:
    handle = _open_binary(path)
    try:
        for number, raw in enumerate(iter_byte_lines(handle), start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError:
                yield number, None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({str(exc).splitlines()[0]})") from None
    finally:
        handle.close()


def line_count(path: str | Path) -> int:
    """Number of lines of a (possibly gzipped) text file, per :mod:`deltalm.text_lines`."""
    path = Path(path)
    handle = _open_binary(path)
    try:
        return sum(1 for _ in iter_byte_lines(handle))
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({str(exc).splitlines()[0]})") from None
    finally:
        handle.close()


def detect_format(path: str | Path) -> str:
    """``jsonl``, ``tsv`` or ``aligned`` from the file name (``.gz`` ignored)."""
    p = Path(path)
    name = p.name[:-3] if p.name.endswith(".gz") else p.name
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    if name.endswith((".tsv", ".txt")):
        return "tsv"
    if name.endswith((".src", ".tgt")) or not p.exists():
        src, tgt = aligned_paths(p)
        if src.is_file() or tgt.is_file():
            return "aligned"
    raise DataError(f"cannot tell the format of {path} (use .jsonl, .tsv, or aligned .src/.tgt files)")


def read_records(
    path: str | Path,
    report: SkipReport,
    fmt: str = "auto",
    columns: Sequence[str] = ("source", "target"),
) -> list[Record]:
    """All usable records of one data file; bad lines are counted in ``report``."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "jsonl":
        return list(read_jsonl(path, report))
    if fmt == "tsv":
        return list(read_tsv(path, columns, report))
    if fmt == "aligned":
        return list(read_aligned(path, report))
    raise DataError(f"unknown data format {fmt!r} (known: auto, jsonl, tsv, aligned)")
