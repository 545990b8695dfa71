"""The vectorized CC100 parser agrees with the line-by-line one on random clean blocks."""

from __future__ import annotations

import random

from data_prep import records


def test_fast_and_loop_parsers_agree(monkeypatch):
    rng = random.Random(0)
    pieces = ["abc", "Grüße", "", "", " \t", "x y", "中文", "long " * 30]
    cases = []
    for _ in range(500):
        n = rng.randint(0, 30)
        text = "\n".join(rng.choice(pieces) for _ in range(n)) + rng.choice(["", "\n", "\n\n"])
        cases.append(text.encode())
    fast = [records._parse_mono_fast(data, 5, 1 << 20, 1 << 20) for data in cases]
    assert all(f is not None for f in fast)
    monkeypatch.setattr(records, "_parse_mono_fast", lambda *a: None)
    for data, f in zip(cases, fast, strict=True):
        slow = records.parse_mono(data, 5, 1 << 20, 1 << 20)
        assert (f.lines, f.doc_lines, f.doc_first_line, f.skips) == (
            slow.lines, slow.doc_lines, slow.doc_first_line, slow.skips
        ), data  # fmt: skip


def test_unclean_blocks_take_the_exact_path():
    assert records._parse_mono_fast(b"a\r\nb\n", 1, 1 << 20, 1 << 20) is None
    assert records._parse_mono_fast(b"a\xff\n", 1, 1 << 20, 1 << 20) is None
    out = records.parse_mono(b"a\n \t\nb\n", 1, 1 << 20, 1 << 20)
    assert out.lines == ["a", "b"] and out.doc_lines == [1, 1] and out.doc_first_line == [1, 3]
