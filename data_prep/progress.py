"""Progress reporting: a tqdm bar (bytes, documents, rate) on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


class Progress:
    def __init__(
        self,
        label: str,
        total_bytes: int | None,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval_s: float = 10.0,
    ):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.bytes = 0
        self.rows = 0
        self.start = time.perf_counter()
        self._last = self.start
        self.interval_s = interval_s
        self._bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_bytes, unit="B", unit_scale=True, desc=label, file=self.stream, dynamic_ncols=True
            )

    def update(self, nbytes: int, rows: int) -> None:
        self.bytes += nbytes
        self.rows += rows
        if self._bar is not None:
            self._bar.update(nbytes)
            self._bar.set_postfix_str(f"{self.rows:,} docs", refresh=False)
            return
        now = time.perf_counter()
        if self.enabled and now - self._last >= self.interval_s:
            self._last = now
            self._log()

    def _log(self, prefix: str = "") -> None:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        print(
            f"{prefix}{self.label}: {_mb(self.bytes)} {self.rows:,} rows in {elapsed:,.1f}s "
            f"({self.bytes / elapsed / 1e6:,.2f} MB/s, {self.rows / elapsed:,.0f} rows/s)",
            file=self.stream,
            flush=True,
        )

    def close(self, message: str = "") -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.enabled:
            self._log(prefix=message)
