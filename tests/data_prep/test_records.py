"""The C-level CC100 parser agrees with the exact line-by-line one wherever it accepts a block."""

from __future__ import annotations

import random

from data_prep import records


def test_fast_and_loop_parsers_agree(monkeypatch):
    rng = random.Random(0)
    pieces = ["abc", "Grüße", "", "", " \t", "x y", "中文", "long " * 30]
    cases = []
    for _ in range(1000):
        n = rng.randint(0, 30)
        text = "\n".join(rng.choice(pieces) for _ in range(n)) + rng.choice(["", "\n", "\n\n"])
        cases.append(text.encode())
    fast = [records._parse_mono_fast(data, 5, 1 << 20, 1 << 20) for data in cases]
    assert 100 < sum(f is not None for f in fast) < 900  # both paths exercised
    monkeypatch.setattr(records, "_parse_mono_fast", lambda *a: None)
    for data, f in zip(cases, fast, strict=True):
        if f is not None:
            slow = records.parse_mono(data, 5, 1 << 20, 1 << 20)
            lines = [f.line_of(i) for i in range(len(f.docs))]
            assert (f.docs, lines, f.skips) == (slow.docs, slow.doc_first_line, slow.skips), data


def test_unclean_blocks_take_the_exact_path():
    for data in (b"a\r\nb\n", b"a\n \nb\n", b"a\xff\n", b"a\n\n\nb\n", b"\na\n", b" \na\n", b"a\x00\n"):
        assert records._parse_mono_fast(data, 1, 1 << 20, 1 << 20) is None, data
    out = records.parse_mono(b"a\nb\n \t\nc\n\n\n", 1, 1 << 20, 1 << 20)
    assert (
        out.docs == [b"a b", b"c"] and out.doc_first_line == [1, 4] and out.skips == [("empty_document", 6)]
    )
    fast = records.parse_mono(b"a\nb\n\nc\n\n", 7, 1 << 20, 1 << 20)
    assert fast.docs == [b"a b", b"c"] and [fast.line_of(0), fast.line_of(1)] == [7, 10] and fast.skips == []
