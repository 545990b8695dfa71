"""Bad-input accounting: counts by reason plus a few ``file:line: reason`` samples, resumable."""

from __future__ import annotations

from .errors import DataPrepError

REASONS = {
    "invalid_utf8": "invalid UTF-8",
    "nul_byte": "NUL byte in text",
    "empty_document": "empty document",
    "empty_line": "empty line",
    "empty_side": "empty source or target",
    "line_too_long": "line longer than --max-line-bytes",
    "document_too_long": "document longer than --max-doc-bytes",
    "tsv_no_tab": "TSV line without a tab",
    "tsv_extra_field": "TSV line with more than two fields",
    "bad_json": "not a JSON object with string values",
    "missing_lang_key": "JSONL object without the language keys",
    "broken_compression": "corrupt or truncated compressed data (rest of file skipped)",
    "unaligned": "source and target files have different line counts",
}
MAX_SAMPLES = 10


def describe_counts(counts: dict[str, int]) -> str:
    """``"3 invalid_utf8, 1 empty_document"`` (most frequent first); ``""`` when nothing was skipped."""
    items = sorted(((n, r) for r, n in counts.items() if n), key=lambda x: (-x[0], x[1]))
    return ", ".join(f"{n:,} {reason}" for n, reason in items)


class BadInput:
    """Counts skipped records by reason; ``on_error='fail'`` turns the first one into a :class:`DataPrepError`."""

    def __init__(self, on_error: str = "skip", max_samples: int = MAX_SAMPLES):
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be skip or fail, got {on_error!r}")
        self.on_error = on_error
        self.max_samples = max_samples
        self.counts: dict[str, int] = {}
        self.samples: list[str] = []

    def add(self, reason: str, path: str, line: int) -> None:
        if reason not in REASONS:
            raise KeyError(f"unknown bad-input reason {reason!r}")
        where = f"{path}:{line}: {reason}"
        if self.on_error == "fail":
            raise DataPrepError(
                f"bad input at {where} ({REASONS[reason]}); use --on-error skip to skip and count"
            )
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.samples) < self.max_samples:
            self.samples.append(where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def state_dict(self) -> dict:
        return {"counts": dict(sorted(self.counts.items())), "samples": list(self.samples)}

    def load_state_dict(self, state: dict) -> None:
        self.counts = dict(state.get("counts", {}))
        self.samples = list(state.get("samples", []))
